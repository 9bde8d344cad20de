"""The Pub/Sub dispatcher and the Cloud Tasks retry scheduler against the real emulators:
what they publish and post is exactly what the functions decode."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from test_utils.retry import RetryResult

from agentgraph.backends.gcp.cloud_tasks_retries import CloudTasksRetries, task_id
from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher
from agentgraph.core import names
from agentgraph.core.messages import NodeFinished, NodeReady
from agentgraph.core.status import NodeStatus
from emulator import harness


def run_in_order(*calls: Coroutine[Any, Any, Any], timeout: float = 30) -> None:
    """Await the calls one after the other on one new event loop (the async clients bind
    to the loop of their first call)."""

    async def each() -> None:
        for call in calls:
            await call

    asyncio.run(asyncio.wait_for(each(), timeout))


@pytest.fixture
def pull(
    emulator_stack: harness.EmulatorStack,
    pubsub_subscriber: Any,
    unique_name: Callable[[str], str],
) -> Iterator[Callable[[str], Callable[[], list[Any]]]]:
    """`pull(topic)` → a new pull subscription on the topic; call again to read it."""
    made: list[str] = []

    def subscribe(topic: str) -> Callable[[], list[Any]]:
        path = pubsub_subscriber.subscription_path(emulator_stack.project, unique_name("pull"))
        pubsub_subscriber.create_subscription(
            request={"name": path, "topic": f"projects/{emulator_stack.project}/topics/{topic}"}
        )
        made.append(path)

        def read() -> list[Any]:
            response = pubsub_subscriber.pull(
                request={"subscription": path, "max_messages": 10}, timeout=5
            )
            if response.received_messages:
                pubsub_subscriber.acknowledge(
                    request={
                        "subscription": path,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    }
                )
            return [m.message for m in response.received_messages]

        return read

    yield subscribe
    for path in made:
        pubsub_subscriber.delete_subscription(request={"subscription": path})


def test_node_ready_carries_ids_as_data_and_attributes_with_the_pool(
    emulator_stack: harness.EmulatorStack, pull: Any
) -> None:
    read = pull(names.TOPIC_NODE_READY)
    dispatcher = PubSubDispatcher(emulator_stack.project)
    try:
        run_in_order(
            dispatcher.node_ready("run-1", "node_a", 3, "gpu"),
            dispatcher.node_finished("run-1", "node_a", NodeStatus.SUCCEEDED),
        )
    finally:
        dispatcher.close()

    messages = RetryResult(bool, max_tries=8)(read)()
    assert len(messages) == 1
    message = messages[0]
    assert NodeReady.model_validate_json(message.data) == NodeReady(
        run_id="run-1", node_id="node_a", attempt=3
    )
    assert dict(message.attributes) == {
        "run_id": "run-1",
        "node_id": "node_a",
        "attempt": "3",
        names.POOL_ATTRIBUTE: "gpu",
    }


def test_node_finished_carries_the_status(emulator_stack: harness.EmulatorStack, pull: Any) -> None:
    read = pull(names.TOPIC_NODE_FINISHED)
    dispatcher = PubSubDispatcher(emulator_stack.project)
    try:
        run_in_order(dispatcher.node_finished("run-2", "b", NodeStatus.SKIPPED))
    finally:
        dispatcher.close()

    messages = RetryResult(bool, max_tries=8)(read)()
    assert NodeFinished.model_validate_json(messages[0].data) == NodeFinished(
        run_id="run-2", node_id="b", status=NodeStatus.SKIPPED
    )


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[float, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def retry_endpoint() -> Iterator[tuple[str, list[tuple[float, dict[str, str], bytes]]]]:
    received: list[tuple[float, dict[str, str], bytes]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer((harness.LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://{harness.LOOPBACK}:{server.server_address[1]}/", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_retry_is_posted_as_json_no_earlier_than_its_time(
    emulator_stack: harness.EmulatorStack, retry_queue: str, retry_endpoint: Any
) -> None:
    url, received = retry_endpoint
    retries = CloudTasksRetries(
        emulator_stack.project,
        emulator_stack.location,
        url,
        emulator_host=emulator_stack.tasks.host,
    )
    due = time.time() + 1.5
    run_in_order(retries.schedule("run-3", "node_b", 2, due))

    got = RetryResult(bool, max_tries=10, delay=0.5)(lambda: list(received))()
    at, headers, body = got[0]
    assert at >= due - 0.05, "the emulator honours schedule_time"
    assert json.loads(body) == {"run_id": "run-3", "node_id": "node_b", "attempt": 2}
    assert headers["content-type"] == "application/json"
    assert headers["x-cloudtasks-taskname"] == task_id("run-3", "node_b", 2, due)
    assert "authorization" not in headers, "no OIDC token on the emulator"


def test_task_names_are_deterministic_and_distinct_per_attempt() -> None:
    assert task_id("r", "n", 2) == task_id("r", "n", 2)
    assert len({task_id("r", "n", 2), task_id("r", "n", 3), task_id("r", "m", 2)}) == 3
    # One attempt delivered for two reasons (a retry, then its approval's timeout; or again
    # after a redrive) at two due times: two tasks, not one name refused as used.
    assert task_id("r", "n", 2, 10.0) == task_id("r", "n", 2, 10.0)
    assert task_id("r", "n", 2, 10.0) != task_id("r", "n", 2, 99.5)
    # A hashed prefix, as Cloud Tasks advises for throughput; only legal characters.
    assert all(c.isalnum() or c == "-" for c in task_id("20260101-000000-ab", "x_y", 7))


def test_a_tagged_delivery_of_an_attempt_is_a_task_apart_from_its_retry() -> None:
    """A node delayed by its model's gate is delivered again for the same attempt; Cloud
    Tasks would refuse the retry's name (used within the hour) and the delay would be lost."""
    retry = task_id("r", "n", 2)
    delayed = task_id("r", "n", 2, "gate-1764000000123")
    assert delayed != retry and delayed == task_id("r", "n", 2, "gate-1764000000123")
    assert delayed != task_id("r", "n", 2, "gate-1764000000999")
    assert all(c.isalnum() or c == "-" for c in delayed) and len(delayed) <= 500


def test_production_tasks_carry_an_oidc_token_for_the_retry_url() -> None:
    retries = CloudTasksRetries(
        "p", "europe-west1", "https://retry.example/", service_account="invoker@p.iam"
    )
    task = retries.task("r", "n", 2, 1_800_000_000.0)

    assert task["name"] == (
        f"projects/p/locations/europe-west1/queues/{names.RETRY_QUEUE}/tasks/{task_id('r', 'n', 2, 1_800_000_000.0)}"
    )
    assert task["http_request"]["oidc_token"] == {
        "service_account_email": "invoker@p.iam",
        "audience": "https://retry.example/",
    }
    assert task["schedule_time"].seconds == 1_800_000_000
