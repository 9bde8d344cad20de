"""docs/design.md, "Facts measured here", re-checked with the real clients on the emulators.

The gcp backend is built on these facts; if an emulator or client upgrade changes one,
this file names it before a contract test fails somewhere far away.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore

from agentgraph.backends.gcp import handlers
from agentgraph.backends.gcp.pubsub_envelope import pubsub_message
from agentgraph.backends.local import SqliteStore
from agentgraph.core import names
from agentgraph.core.status import NodeStatus
from agentgraph.engine import Engine
from agentgraph.llm import default_router
from agentgraph.tools import default_registry
from emulator import harness
from tests.waiting import eventually

pytestmark = pytest.mark.emulator

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Firestore: the fan-in is one atomic batch per parent, not a transaction on the child

PARENTS = 40
DUPLICATE_DELIVERIES = 10


def test_fan_in_of_40_parents_with_10_duplicates_completes_the_child_exactly_once(
    firestore_async_client: Any, clean_firestore: None, unique_name: Any
) -> None:
    client = firestore_async_client
    run_id = unique_name("run")
    child = (
        client.collection(names.COLLECTION_RUNS)
        .document(run_id)
        .collection(names.COLLECTION_NODES)
        .document("child")
    )
    parents = [f"parent-{i:02d}" for i in range(PARENTS)]
    deliveries = parents + parents[:DUPLICATE_DELIVERIES]
    random.Random(40).shuffle(deliveries)

    async def record_arrival(parent: str) -> int:
        """One commit: the arrival marker (create = precondition) and the count."""
        batch = client.batch()
        batch.create(child.collection(names.COLLECTION_ARRIVALS).document(parent), {"at": 1})
        batch.update(child, {"arrivals": firestore.Increment(1)})
        _arrival, count_result = await batch.commit()
        return int(count_result.transform_results[0].integer_value)

    async def scenario() -> tuple[list[Any], int, list[str], float]:
        await child.create({"arrivals": 0, "parents": parents})
        began = time.monotonic()
        outcomes = await asyncio.gather(
            *(record_arrival(p) for p in deliveries), return_exceptions=True
        )
        elapsed = time.monotonic() - began
        final = (await child.get()).get("arrivals")
        marked = [doc.id async for doc in child.collection(names.COLLECTION_ARRIVALS).stream()]
        return outcomes, final, marked, elapsed

    outcomes, final, marked, elapsed = asyncio.run(scenario())
    _log.info("fan-in of %d deliveries took %.2f s", len(deliveries), elapsed)

    counts = [o for o in outcomes if isinstance(o, int)]
    failures = [o for o in outcomes if not isinstance(o, int)]
    # Each successful commit saw its own count, so exactly one saw the set complete.
    assert sorted(counts) == list(range(1, PARENTS + 1))
    assert counts.count(PARENTS) == 1
    # The duplicates failed whole: no marker, no increment.
    assert len(failures) == DUPLICATE_DELIVERIES
    assert all(isinstance(f, AlreadyExists) for f in failures), failures
    assert final == PARENTS
    assert sorted(marked) == parents


def test_a_count_after_each_committed_arrival_sees_every_earlier_commit(
    firestore_async_client: Any, clean_firestore: None, unique_name: Any
) -> None:
    """What `FirestoreStore.record_arrival` is built on now: a `count()` aggregation
    issued after a `create()` returned sees that create and every one that returned
    before it, so the last of 40 concurrent arrivals to commit sees all 40, however many
    others see it too; duplicates fail with `AlreadyExists` and are not counted."""
    client = firestore_async_client
    arrivals = (
        client.collection(names.COLLECTION_RUNS)
        .document(unique_name("run"))
        .collection(names.COLLECTION_NODES)
        .document("child")
        .collection(names.COLLECTION_ARRIVALS)
    )
    parents = [f"parent-{i:02d}" for i in range(PARENTS)]
    deliveries = parents + parents[:DUPLICATE_DELIVERIES]
    random.Random(41).shuffle(deliveries)
    committed: list[str] = []  # in the order the commits returned

    async def arrive(parent: str) -> tuple[str, int]:
        await arrivals.document(parent).create({"at": 1})
        earlier = len(committed)
        committed.append(parent)
        result = await arrivals.count(alias="n").get()
        count = int(result[0][0].value)
        assert count >= earlier + 1  # itself and every commit that returned before it
        return parent, count

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(arrive(p) for p in deliveries), return_exceptions=True)

    outcomes = asyncio.run(scenario())
    counts = dict(o for o in outcomes if isinstance(o, tuple))
    failures = [o for o in outcomes if not isinstance(o, tuple)]
    assert all(isinstance(f, AlreadyExists) for f in failures), failures
    assert len(failures) == DUPLICATE_DELIVERIES and sorted(counts) == parents
    assert counts[committed[-1]] == PARENTS  # the last to commit saw them all


# --------------------------------------------------------------------------------------
# Pub/Sub push → functions-framework CloudEvent function

_RECEIVER_SOURCE = """
import json
import os

import functions_framework


@functions_framework.cloud_event
def receive(event):
    record = {"type": event["type"], "source": event["source"], "id": event["id"],
              "data": event.data}
    with open(os.environ["RECEIVED_EVENTS_FILE"], "a") as out:
        out.write(json.dumps(record) + "\\n")
"""


@dataclass
class _Receiver:
    server: harness.FunctionServer
    events_file: Path

    def events_for(self, run_id: str) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        events = [json.loads(line) for line in self.events_file.read_text().splitlines()]
        return [e for e in events if e["data"]["message"]["attributes"].get("run_id") == run_id]

    def wait_for(self, run_id: str, *pools: str) -> list[dict[str, Any]]:
        """The run's events once one of each pool has arrived."""

        def arrived(events: list[dict[str, Any]]) -> bool:
            seen = {e["data"]["message"]["attributes"].get("pool") for e in events}
            return set(pools) <= seen

        return eventually(lambda: self.events_for(run_id), arrived, timeout=10, interval=0.1)


@pytest.fixture(scope="module")
def cloudevent_receiver(
    emulator_stack: harness.EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Receiver]:
    """A CloudEvent function (functions-framework subprocess) that logs what it gets."""
    folder = tmp_path_factory.mktemp("receiver")
    source = folder / "main.py"
    source.write_text(_RECEIVER_SOURCE)
    events_file = folder / "events.jsonl"
    server = harness.FunctionServer(
        "receive",
        source,
        signature_type="cloudevent",
        env={"RECEIVED_EVENTS_FILE": str(events_file)},
        log_dir=folder,
    )
    server.start()
    try:
        yield _Receiver(server, events_file)
    finally:
        server.stop()


def _node_ready(run_id: str, pool: str) -> tuple[bytes, dict[str, str]]:
    payload = {"run_id": run_id, "node_id": "review", "attempt": 1}
    attributes = {
        "run_id": run_id,
        "node_id": "review",
        "attempt": "1",
        names.POOL_ATTRIBUTE: pool,
    }
    return json.dumps(payload).encode(), attributes


def test_push_subscription_delivers_node_ready_as_a_pubsub_cloudevent_with_attributes(
    emulator_stack: harness.EmulatorStack,
    cloudevent_receiver: _Receiver,
    push_subscription: Any,
    pubsub_publisher: Any,
    unique_name: Any,
) -> None:
    project, topic = emulator_stack.project, names.TOPIC_NODE_READY
    # The topic in the push URL path is what becomes the CloudEvent's source.
    push_subscription(
        topic,
        f"{cloudevent_receiver.server.url}/projects/{project}/topics/{topic}",
        names.pool_filter(names.DEFAULT_POOL),
    )
    run_id = unique_name("run")
    data, attributes = _node_ready(run_id, names.DEFAULT_POOL)

    message_id = pubsub_publisher.publish(
        pubsub_publisher.topic_path(project, topic), data, **attributes
    ).result(timeout=10)

    events = cloudevent_receiver.wait_for(run_id, names.DEFAULT_POOL)
    event = events[0]
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"] == f"//pubsub.googleapis.com/projects/{project}/topics/{topic}"
    assert event["id"] == message_id
    message = event["data"]["message"]
    assert message["attributes"] == attributes
    assert base64.b64decode(message["data"]) == data
    assert message["messageId"] == message_id


class _Dispatched:
    """The engine's outgoing messages, recorded: the test hands deliveries over itself."""

    def __init__(self) -> None:
        self.ready: list[tuple[str, str, int, str]] = []
        self.finished: list[tuple[str, str, str]] = []

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self.ready.append((run_id, node_id, attempt, pool))

    async def node_finished(self, run_id: str, node_id: str, status: Any) -> None:
        self.finished.append((run_id, node_id, str(status)))

    async def schedule(self, run_id: str, node_id: str, attempt: int, at: float) -> None:
        raise AssertionError("no retry expected")


def test_the_emulator_ignores_push_filters_so_exec_acks_another_pools_message_unrun(
    emulator_stack: harness.EmulatorStack,
    cloudevent_receiver: _Receiver,
    push_subscription: Any,
    pubsub_publisher: Any,
    unique_name: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Pub/Sub emulator of gcloud 528 (cloud-pubsub-emulator 0.8.20) stores a
    subscription's filter but delivers every message, push and pull (filtering came with
    gcloud 555; if an upgrade makes the first assertion fail, the emulator filters now and
    this fact is gone). So exec-<pool> must check the pool attribute itself: a message of
    another pool is returned from (acked) without running anything."""
    project, topic = emulator_stack.project, names.TOPIC_NODE_READY
    push_subscription(
        topic,
        f"{cloudevent_receiver.server.url}/projects/{project}/topics/{topic}",
        names.pool_filter(names.DEFAULT_POOL),
    )
    run_id = unique_name("run")
    topic_path = pubsub_publisher.topic_path(project, topic)
    for pool in ("gpu", names.DEFAULT_POOL):
        data, attributes = _node_ready(run_id, pool)
        pubsub_publisher.publish(topic_path, data, **attributes).result(timeout=10)

    # The emulator fact: the message the filter would have dropped is pushed as well.
    events = cloudevent_receiver.wait_for(run_id, "gpu", names.DEFAULT_POOL)
    by_pool = {e["data"]["message"]["attributes"]["pool"]: e["data"] for e in events}

    # What exec-default does with each push (the run exists; its node "review" is ready).
    calls: list[str] = []
    tools = default_registry.child()

    @tools.tool
    def review() -> str:
        calls.append("review")
        return "reviewed"

    monkeypatch.setenv(names.ENV_POOL, names.DEFAULT_POOL)
    graph = {"name": "pools", "nodes": [{"id": "review", "tool": "review"}]}

    async def deliver() -> tuple[NodeStatus | None, NodeStatus | None, _Dispatched]:
        sent = _Dispatched()
        store = SqliteStore(tmp_path / "runs.db")
        try:
            engine = Engine(store, sent, sent, default_router(), tools)
            await engine.start_run(graph, run_id=run_id)
            await handlers.execute(engine, pubsub_message(by_pool["gpu"]))
            after_gpu = await store.get_node(run_id, "review")
            await handlers.execute(engine, pubsub_message(by_pool[names.DEFAULT_POOL]))
            after_default = await store.get_node(run_id, "review")
        finally:
            store.close()
        return (
            after_gpu.status if after_gpu else None,
            after_default.status if after_default else None,
            sent,
        )

    after_gpu, after_default, sent = asyncio.run(deliver())
    assert after_gpu == NodeStatus.READY  # returned (acked) with nothing run
    assert after_default == NodeStatus.SUCCEEDED and calls == ["review"]
    assert sent.finished == [(run_id, "review", "succeeded")]


# --------------------------------------------------------------------------------------
# Cloud Tasks: a delayed task is POSTed to a local URL no earlier than its schedule_time


@dataclass
class _Request:
    received_at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _HttpRecorder:
    """A local HTTP server that answers 200 and remembers each request."""

    def __init__(self) -> None:
        self.requests: list[_Request] = []
        self._arrived = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append(
                    _Request(time.time(), "POST", self.path, dict(self.headers), body)
                )
                recorder._arrived.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((harness.LOOPBACK, 0), Handler)
        self.url = f"http://{harness.LOOPBACK}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait(self, timeout: float) -> _Request:
        assert self._arrived.wait(timeout), f"no request within {timeout} s"
        return self.requests[0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def http_recorder() -> Iterator[_HttpRecorder]:
    recorder = _HttpRecorder()
    yield recorder
    recorder.close()


def test_cloud_task_scheduled_2s_ahead_is_posted_no_earlier_with_its_body_and_headers(
    tasks_client: Any, retry_queue: str, http_recorder: _HttpRecorder
) -> None:
    body = json.dumps({"run_id": "r", "node_id": "n", "attempt": 2}).encode()
    scheduled = datetime.now(UTC) + timedelta(seconds=2)

    task = tasks_client.create_task(
        parent=retry_queue,
        task={
            "http_request": {
                "url": f"{http_recorder.url}/retry",
                "body": body,
                # The emulator adds no Content-Type of its own: always send one.
                "headers": {"Content-Type": "application/json", "X-Agentgraph-Attempt": "2"},
            },
            "schedule_time": scheduled,
        },
    )

    request = http_recorder.wait(timeout=10)
    assert request.received_at >= scheduled.timestamp()
    assert request.received_at < scheduled.timestamp() + 3
    assert (request.method, request.path, request.body) == ("POST", "/retry", body)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-agentgraph-attempt"] == "2"
    assert headers["x-cloudtasks-taskname"] == task.name.rsplit("/", 1)[-1]
    # Production sends the short queue name; the emulator sends the full path.
    assert headers["x-cloudtasks-queuename"].rsplit("/", 1)[-1] == names.RETRY_QUEUE
    assert headers["x-cloudtasks-taskretrycount"] == "0"
    assert len(http_recorder.requests) == 1
