"""End to end through the deployed shape: every function under functions-framework, fed by
Pub/Sub push subscriptions and Cloud Tasks on the emulators, driven through the HTTP API.

The functions run in their own processes exactly as `python -m emulator.stack` runs them
(emulator/stack.py), in a project of their own on the session's emulators so nothing else
the session publishes reaches them. Executions are counted twice: by the store
(`executions`, the events) and by the tools themselves (a marker file per test).

No test sleeps to wait: each polls what it waits for (`until`, with a deadline). To know
that every message published so far has been delivered, a test publishes a barrier (a
message for a run that does not exist, which the function logs and drops) and waits for
it in the function's log: the emulator pushes a subscription's messages in the order they
were published, and a message answered with an error is pushed again at once (the stack's
subscriptions have no retry policy), ahead of later ones.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from test_utils.retry import BackoffFailed, RetryResult
from test_utils.system import EmulatorCreds

from agentgraph.core import names
from emulator import harness
from emulator.stack import Stack

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PROJECT = "e2e-agentgraph"
TOOLS = Path(__file__).with_name("e2e_tools.py")
TERMINAL = ("succeeded", "failed", "cancelled")
NODE_FINAL = ("succeeded", "failed", "skipped", "cancelled")
POLL_S = 0.1
T = TypeVar("T")
_log = logging.getLogger("agentgraph.tests.e2e")


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    emulator_stack: harness.EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Every function, the Gemini stub and the subscriptions, once for this module."""
    with Stack(
        emulators=emulator_stack,
        project=PROJECT,
        pools=("default", "gpu"),
        tools=[str(TOOLS)],
        log_dir=tmp_path_factory.mktemp("e2e-logs"),
        sweep_every_s=None,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as client:
        yield client


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "executions.txt"


@pytest.fixture(scope="module")
def firestore_e2e(stack: Stack) -> Iterator[Any]:
    from google.cloud import firestore

    client = firestore.Client(project=PROJECT, credentials=EmulatorCreds())
    yield client
    client.close()


# ---- helpers ------------------------------------------------------------------------------


def executions(marker: Path) -> Counter[str]:
    return Counter(marker.read_text().split()) if marker.exists() else Counter()


def value_node(node_id: str, marker: Path, after: list[str] | None = None, **extra: Any) -> dict:
    return {
        "id": node_id,
        "after": after or [],
        "tool": "e2e_value",
        "args": {"value": node_id, "marker": str(marker), "key": node_id},
        **extra,
    }


def start(api: httpx.Client, graph: dict, input: Any = None, **headers: str) -> dict:
    response = api.post("/runs", json={"graph": graph, "input": input}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


class _QuietLog:
    """RetryResult reports every try as a warning; waiting is expected here."""

    warning = staticmethod(_log.debug)


def until(read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """`read()` again every POLL_S until `done` says yes; fail saying `what` after `timeout`."""
    tries = max(1, round(timeout / POLL_S))
    wait = RetryResult(done, max_tries=tries, delay=POLL_S, backoff=1, logger=_QuietLog())
    try:
        return wait(read)()
    except BackoffFailed:
        pytest.fail(f"{what} within {timeout} s (last: {read()!r:.500})")


def wait_run(api: httpx.Client, run_id: str, timeout: float = 60) -> dict:
    """GET /runs/{id} until the run has ended (and its nodes settled)."""
    run = until(
        lambda: api.get(f"/runs/{run_id}").json(),
        lambda run: run["status"] in TERMINAL,
        timeout,
        f"run {run_id} has not ended",
    )
    return dict(run)


def events(api: httpx.Client, run_id: str) -> list[dict]:
    return list(api.get(f"/runs/{run_id}/events").json()["events"])


def nodes_of(run: dict) -> dict[str, dict]:
    return {n["id"]: n for n in run["nodes"]}


def envelope(data: bytes, message_id: str, **attributes: str) -> dict:
    """A Pub/Sub push request body, as the push subscription sends it."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/test",
    }


def log_of(stack: Stack, function: str) -> str:
    path = stack.servers[function].log_path
    assert path is not None
    return path.read_text(errors="replace")


def publish(stack: Stack, topic: str, data: bytes, **attributes: str) -> str:
    """Publish one message to the stack's topic; its message id."""
    publisher = harness.publisher_client(stack.emulators.pubsub.host)
    try:
        path = publisher.topic_path(PROJECT, topic)
        return str(publisher.publish(path, data, **attributes).result(timeout=30))
    finally:
        publisher.stop()


def barrier(stack: Stack, topic: str, function: str, deliveries: int = 1) -> None:
    """Wait until every message published to `topic` so far has been handled by `function`
    (`deliveries` times when more subscriptions push the topic to it): see the module
    docstring."""
    run_id = f"barrier-{uuid.uuid4().hex[:12]}"
    if topic == names.TOPIC_NODE_READY:
        data = {"run_id": run_id, "node_id": "barrier", "attempt": 1}
    else:
        data = {"run_id": run_id, "node_id": "barrier", "status": "succeeded"}
    publish(stack, topic, json.dumps(data).encode(), pool="default")
    until(
        lambda: log_of(stack, function).count(f"{run_id}/barrier"),
        lambda seen: seen >= deliveries,
        30,
        f"the barrier on {topic} was not handled {deliveries} times by {function}",
    )


# ---- runs ---------------------------------------------------------------------------------


def test_a_diamond_runs_every_node_once_and_ends_with_the_sinks_output(
    api: httpx.Client, marker: Path
) -> None:
    graph = {
        "name": "diamond",
        "nodes": [
            value_node("top", marker),
            value_node("left", marker, ["top"]),
            value_node("right", marker, ["top"]),
            {
                "id": "bottom",
                "after": ["left", "right"],
                "tool": "e2e_value",
                "args": {
                    "value": "{{ [nodes.left.output, nodes.right.output] }}",
                    "marker": str(marker),
                    "key": "bottom",
                },
            },
        ],
    }
    run = wait_run(api, start(api, graph)["run_id"])

    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"bottom": ["left", "right"]}
    assert {n["id"]: n["executions"] for n in run["nodes"]} == dict.fromkeys(
        ["top", "left", "right", "bottom"], 1
    )
    assert executions(marker) == Counter(top=1, left=1, right=1, bottom=1)


def test_a_child_of_50_parents_finishing_together_is_executed_exactly_once(
    api: httpx.Client, marker: Path, firestore_e2e: Any
) -> None:
    parents = [value_node(f"p{i:02d}", marker) for i in range(50)]
    child = value_node("child", marker, [p["id"] for p in parents])
    run = wait_run(api, start(api, {"name": "fan-in", "nodes": [*parents, child]})["run_id"])

    assert run["status"] == "succeeded", run["counts"]
    assert executions(marker)["child"] == 1
    assert nodes_of(run)["child"]["executions"] == 1
    child_ref = (
        firestore_e2e.collection(names.COLLECTION_RUNS)
        .document(run["run_id"])
        .collection(names.COLLECTION_NODES)
        .document("child")
    )
    # the count is derived from the arrival documents; the child document holds none
    assert len(list(child_ref.collection(names.COLLECTION_ARRIVALS).stream())) == 50
    child_events = [e for e in events(api, run["run_id"]) if e["node_id"] == "child"]
    assert [e["status"] for e in child_events] == ["ready", "running", "succeeded"]


def test_each_pool_runs_only_its_own_nodes(api: httpx.Client, marker: Path) -> None:
    """The emulator does not filter subscriptions, so both executors get every message:
    each must run its own pool's nodes and ack the others unrun."""
    graph = {
        "name": "pools",
        "nodes": [
            {"id": "cpu", "tool": "e2e_pool", "args": {"marker": str(marker), "key": "cpu"}},
            {
                "id": "gpu",
                "pool": "gpu",
                "after": ["cpu"],
                "tool": "e2e_pool",
                "args": {"marker": str(marker), "key": "gpu"},
            },
        ],
    }
    run = wait_run(api, start(api, graph)["run_id"])

    assert run["status"] == "succeeded"
    assert {n["id"]: n["output"] for n in run["nodes"]} == {"cpu": "default", "gpu": "gpu"}
    assert executions(marker) == Counter(cpu=1, gpu=1)


def test_every_message_delivered_twice_still_executes_each_attempt_once(
    api: httpx.Client, stack: Stack, marker: Path
) -> None:
    """A second push subscription on each topic: every node-ready and node-finished
    message reaches its function twice, concurrently."""
    stack.add_push_subscription("e2e-dup-ready", names.TOPIC_NODE_READY, "exec-default")
    stack.add_push_subscription("e2e-dup-finished", names.TOPIC_NODE_FINISHED, "complete")
    try:
        graph = {
            "name": "twice",
            "nodes": [
                value_node("a", marker),
                value_node("b", marker),
                value_node("c", marker, ["a", "b"]),
                value_node("d", marker, ["c"]),
                value_node("e", marker, ["c"]),
                value_node("f", marker, ["d", "e"]),
            ],
        }
        run = wait_run(api, start(api, graph)["run_id"])
        # Every duplicate has been delivered (and turned away) once the barriers have been,
        # through both subscriptions.
        barrier(stack, names.TOPIC_NODE_READY, "exec-default", deliveries=2)
        barrier(stack, names.TOPIC_NODE_FINISHED, "complete", deliveries=2)
        run = api.get(f"/runs/{run['run_id']}").json()
    finally:
        stack.remove_push_subscription("e2e-dup-ready")
        stack.remove_push_subscription("e2e-dup-finished")

    assert run["status"] == "succeeded"
    assert executions(marker) == Counter(dict.fromkeys("abcdef", 1))
    assert all(n["executions"] == 1 for n in run["nodes"]), run["nodes"]
    timeline = events(api, run["run_id"])
    finished = Counter(
        e["node_id"] for e in timeline if e["kind"] == "node_status" and e["status"] == "succeeded"
    )
    assert finished == Counter(dict.fromkeys("abcdef", 1)), "each output recorded once"
    assert [e["status"] for e in timeline if e["kind"] == "run_status"] == [
        "running",
        "succeeded",
    ]


def test_a_retryable_failure_comes_back_through_cloud_tasks_with_growing_delays(
    api: httpx.Client, stack: Stack
) -> None:
    graph = {
        "name": "flaky-model",
        "nodes": [
            {
                "id": "ask",
                # The stub answers 503 to the first two calls of this conversation.
                "model": "gemini-2.5-flash~fail=2x503",
                "prompt": "hello {{ input.nonce }}",
                "retry": {
                    "max_attempts": 3,
                    "initial_delay_s": 1,
                    "multiplier": 2,
                    "max_delay_s": 10,
                    "jitter": False,
                },
            }
        ],
    }
    nonce = uuid.uuid4().hex
    run = wait_run(api, start(api, graph, {"nonce": nonce})["run_id"])

    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"ask": f"[gemini-2.5-flash] hello {nonce}"}
    assert nodes_of(run)["ask"]["attempts"] == 3
    timeline = events(api, run["run_id"])
    retries = [e for e in timeline if e["kind"] == "retry"]
    failed_at = {e["attempt"]: e["at"] for e in retries}
    ready_at = {
        e["attempt"]: e["at"] for e in timeline if e["status"] == "ready" and e["attempt"] > 1
    }
    assert sorted(failed_at) == [1, 2] and sorted(ready_at) == [2, 3]
    # The backoff grows (1 s, then 2 s: no jitter), and no task came before its schedule_time.
    # (How late the emulator delivers varies with load, so the observed waits are not compared.)
    scheduled = [float(re.search(r"in ([0-9.]+)s$", e["message"])[1]) for e in retries]
    assert scheduled == [1.0, 2.0], retries
    assert ready_at[2] - failed_at[1] >= 1.0, "the task was delivered before its schedule_time"
    assert ready_at[3] - failed_at[2] >= 2.0, "the task was delivered before its schedule_time"

    # A task delivered again (Cloud Tasks is at-least-once) finds its work done.
    repeat = {"run_id": run["run_id"], "node_id": "ask", "attempt": 2}
    assert httpx.post(stack.url("retry") + "/", json=repeat).status_code == 200
    assert events(api, run["run_id"]) == timeline


def test_cancelling_mid_run_stops_what_has_not_started(
    api: httpx.Client, stack: Stack, marker: Path
) -> None:
    graph = {
        "name": "cancel-me",
        "nodes": [
            {
                "id": "slow",
                "tool": "e2e_sleep",
                "args": {"seconds": 2.5, "marker": str(marker), "key": "slow"},
            },
            value_node("after", marker, ["slow"]),
        ],
    }
    run_id = start(api, graph)["run_id"]

    def slow_node() -> str:
        return str(nodes_of(api.get(f"/runs/{run_id}").json())["slow"]["status"])

    until(slow_node, lambda status: status == "running", 20, "the slow node did not start")

    cancelled = api.post(f"/runs/{run_id}/cancel")
    again = api.post(f"/runs/{run_id}/cancel")
    # The running node finishes its call; its node-finished must start nothing after it.
    until(slow_node, lambda status: status in NODE_FINAL, 20, "the slow node did not finish")
    barrier(stack, names.TOPIC_NODE_FINISHED, "complete")
    barrier(stack, names.TOPIC_NODE_READY, "exec-default")
    run = api.get(f"/runs/{run_id}").json()

    assert (cancelled.status_code, cancelled.json()["cancelled"]) == (200, True)
    assert (again.status_code, again.json()["cancelled"]) == (200, False)
    assert run["status"] == "cancelled"
    assert nodes_of(run)["after"]["status"] == "cancelled"
    assert nodes_of(run)["after"]["executions"] == 0
    assert executions(marker) == Counter(slow=1)


def test_start_from_event_makes_one_run_per_message_even_when_redelivered(
    api: httpx.Client, stack: Stack, marker: Path
) -> None:
    owner = f"event-{uuid.uuid4().hex[:8]}"
    body = json.dumps(
        {"graph": {"name": "evented", "nodes": [value_node("only", marker)]}, "owner": owner}
    ).encode()
    message_id = publish(stack, names.TOPIC_RUN_REQUESTS, body)
    runs = until(
        lambda: api.get("/runs", params={"owner": owner}).json()["runs"],
        bool,
        30,
        "no run from the run-requests message",
    )
    # The same message pushed again (a redelivery) finds its run.
    push = stack.push_endpoint("start_from_event", names.TOPIC_RUN_REQUESTS)
    assert httpx.post(push, json=envelope(body, message_id)).status_code == 200
    run = wait_run(api, runs[0]["run_id"])

    assert run["status"] == "succeeded"
    assert [r["run_id"] for r in api.get("/runs", params={"owner": owner}).json()["runs"]] == [
        run["run_id"]
    ]
    assert executions(marker) == Counter(only=1)


def test_sweep_answers_how_many_messages_it_sent(stack: Stack) -> None:
    response = httpx.post(stack.url("sweep") + "/")

    assert response.status_code == 200
    assert isinstance(response.json()["dispatched"], int)


# ---- the API's answers ---------------------------------------------------------------------


def test_post_runs_with_an_idempotency_key_is_safe_to_repeat(
    api: httpx.Client, marker: Path
) -> None:
    body = {"graph": {"name": "once", "nodes": [value_node("x", marker)]}}
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = api.post("/runs", json=body, headers=key)
    second = api.post("/runs", json=body, headers=key)
    other = api.post("/runs", json={**body, "input": {"changed": True}}, headers=key)
    wait_run(api, first.json()["run_id"])

    assert (first.status_code, second.status_code, other.status_code) == (201, 200, 409)
    assert second.json()["run_id"] == first.json()["run_id"]
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert executions(marker) == Counter(x=1)


def test_an_invalid_request_is_a_400_listing_every_problem(api: httpx.Client) -> None:
    graph = {
        "name": "broken",
        "input": {"type": "object", "required": ["code"]},
        "nodes": [
            {"id": "a", "tool": "no_such_tool"},
            {"id": "b", "after": ["a", "ghost"], "prompt": "{{ nodes.c.output }}", "model": "echo"},
            {"id": "c", "after": ["d"], "prompt": "x", "model": "echo"},
            {"id": "d", "after": ["c"], "prompt": "y", "model": "echo", "timeout_s": 0},
        ],
    }
    response = api.post("/runs", json={"graph": graph, "input": {}})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_graph"
    found = {(p["path"], p["node_id"]) for p in error["details"]}
    assert found == {
        ("graph.nodes[0].tool", "a"),  # unknown tool
        ("graph.nodes[1].after[1]", "b"),  # unknown parent
        ("graph.nodes[1].prompt", "b"),  # reads a node that is not an ancestor
        ("graph.nodes[2].after", "c"),  # waits for a node that did not validate
        ("graph.nodes[3].timeout_s", "d"),  # out of range
    }
    assert error["message"] == "invalid graph: 5 problems"


def test_a_timeout_longer_than_the_exec_function_and_ack_deadline_allow_is_a_400(
    api: httpx.Client,
) -> None:
    """The emulator stack deploys the default pool with infra's default function timeout
    (540 s): a node may ask for 510 s, not 511 (core/timeouts.py)."""
    node = {"id": "slow", "prompt": "x", "model": "echo", "timeout_s": 511}
    refused = api.post("/runs", json={"graph": {"name": "slow", "nodes": [node]}})
    fits = api.post(
        "/runs", json={"graph": {"name": "slow", "nodes": [{**node, "timeout_s": 510}]}}
    )

    assert refused.status_code == 400, refused.text
    [problem] = refused.json()["error"]["details"]
    assert (problem["path"], problem["node_id"]) == ("graph.nodes[0].timeout_s", "slow")
    assert "at most 510 s" in problem["message"]
    assert fits.status_code == 201, fits.text
    wait_run(api, fits.json()["run_id"])


def test_unknown_runs_and_routes_are_404_wrong_methods_405_and_big_bodies_413(
    api: httpx.Client,
) -> None:
    unknown_run = api.get("/runs/20990101-000000-deadbeef")
    unknown_route = api.get("/nope")
    wrong_method = api.delete("/runs")
    too_big = api.post(
        "/runs", content=b" " * (11 * 1024 * 1024 + 1), headers={"Content-Type": "application/json"}
    )

    assert unknown_run.status_code == 404 and unknown_run.json()["error"]["code"] == "not_found"
    assert unknown_route.status_code == 404
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, POST"
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "payload_too_large"


def test_health_and_openapi(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/runs", "/runs/{run_id}", "/runs/{run_id}/cancel", "/graphs"} <= set(spec["paths"])


# ---- messages no redelivery can fix --------------------------------------------------------


def test_malformed_push_messages_are_refused_and_logged_with_their_message_id(
    stack: Stack,
) -> None:
    push = stack.push_endpoint("exec-default", names.TOPIC_NODE_READY)
    cases = {
        "bad-json": b"not json",
        "bad-fields": json.dumps({"run_id": "r", "node_id": "n"}).encode(),
        "bad-types": json.dumps({"run_id": "r", "node_id": "n", "attempt": "x"}).encode(),
        "bad-empty": b"",
        # Firestore reserves ids like __x__; nesting 100,000 deep exhausts every walker.
        "bad-reserved-id": json.dumps({"run_id": "__x__", "node_id": "n", "attempt": 1}).encode(),
        "bad-deep": b"[" * 100_000 + b"]" * 100_000,
    }
    answers = {
        mid: httpx.post(push, json=envelope(data, mid, pool="default")).status_code
        for mid, data in cases.items()
    }
    not_base64 = envelope(b"", "bad-base64")
    not_base64["message"]["data"] = "%%% not base64 %%%"
    answers["bad-base64"] = httpx.post(push, json=not_base64).status_code
    complete = stack.push_endpoint("complete", names.TOPIC_NODE_FINISHED)
    answers["bad-status"] = httpx.post(
        complete,
        json=envelope(
            json.dumps({"run_id": "r", "node_id": "n", "status": "??"}).encode(), "bad-status"
        ),
    ).status_code
    answers["bad-finished-id"] = httpx.post(
        complete,
        json=envelope(
            json.dumps({"run_id": "__poison__", "node_id": "n", "status": "failed"}).encode(),
            "bad-finished-id",
        ),
    ).status_code
    answers["bad-finished-deep"] = httpx.post(
        complete, json=envelope(b"[" * 100_000 + b"]" * 100_000, "bad-finished-deep")
    ).status_code

    retry = httpx.post(stack.url("retry") + "/", content=b"{not json")
    answers["retry"] = 200 if retry.status_code == 202 else retry.status_code

    # Pub/Sub messages: 400, a nack that no retry can fix, so they reach the dead-letter
    # topic (test_dead_letters.py); the retry task: 202 (Cloud Tasks has no dead letters).
    assert {v for k, v in answers.items() if k != "retry"} == {400}, answers
    assert answers["retry"] == 200 and "dropped" in retry.json()
    logs = log_of(stack, "exec-default") + log_of(stack, "complete")
    for message_id in [*cases, "bad-base64", "bad-status", "bad-finished-id", "bad-finished-deep"]:
        assert f"malformed message {message_id} refused for the dead-letter topic" in logs, (
            message_id
        )


def _pull(subscriber: Any, subscription: str) -> list[Any]:
    from google.api_core.exceptions import DeadlineExceeded

    try:
        reply = subscriber.pull(
            request={"subscription": subscription, "max_messages": 10}, timeout=5
        )
    except DeadlineExceeded:
        return []
    return list(reply.received_messages)


def test_a_malformed_message_through_pubsub_reaches_the_dead_letter_topic(stack: Stack) -> None:
    """A poison message is nacked (400) on every delivery, so Pub/Sub moves it to the
    dead-letter topic after the subscription's max_delivery_attempts, as infra/'s
    dead_letter_policy says. The Pub/Sub emulator honours dead-letter policies of push
    subscriptions (it does not put `deliveryAttempt` in the envelope). A topic and
    subscriptions of this test's own, so the stack's subscriptions never see the poison."""
    suffix = uuid.uuid4().hex[:8]
    poison, dead = f"poison-{suffix}", f"dead-{suffix}"
    host = stack.emulators.pubsub.host
    harness.create_topics(PROJECT, [poison, dead], host=host)
    subscriber = harness.subscriber_client(host)
    dead_sub = subscriber.subscription_path(PROJECT, f"dead-{suffix}")
    subscriber.create_subscription(
        request={"name": dead_sub, "topic": f"projects/{PROJECT}/topics/{dead}"}
    )
    push_name = f"poison-exec-{suffix}"
    harness.create_push_subscription(
        PROJECT,
        push_name,
        poison,
        stack.push_endpoint("exec-default", poison),
        host=host,
        min_backoff_s=0.1,
        max_backoff_s=0.5,
        dead_letter_topic=dead,
        max_delivery_attempts=5,
    )
    try:
        message_id = publish(stack, poison, b"{garbage", pool="default")
        [received] = until(
            lambda: _pull(subscriber, dead_sub),
            bool,
            60,
            "the poison message never reached the dead-letter topic",
        )
        refused = f"malformed message {message_id} refused for the dead-letter topic"
        until(
            lambda: log_of(stack, "exec-default").count(refused),
            lambda seen: seen >= 5,
            10,
            "exec did not log each of the 5 deliveries",
        )
    finally:
        harness.delete_subscription(PROJECT, push_name, host=host)
        subscriber.close()

    assert received.message.data == b"{garbage"
    assert received.message.attributes["pool"] == "default"
    assert received.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert log_of(stack, "exec-default").count(refused) == 5


def test_the_research_example_runs_on_the_stack_and_finishes_once_approved_through_the_api(
    api: httpx.Client,
) -> None:
    """examples/research.yaml as it runs offline, here through the api and the functions."""
    import yaml

    graph = yaml.safe_load((harness.REPO_ROOT / "examples" / "research.yaml").read_text())
    run_id = start(api, graph, {"topic": "durable agent runtimes"})["run_id"]
    until(
        lambda: nodes_of(api.get(f"/runs/{run_id}").json()).get("answer", {}).get("status"),
        lambda status: status == "waiting_approval",
        120,
        "the answer has not started waiting for approval",
    )
    approved = api.post(f"/runs/{run_id}/nodes/answer/approve", json={"comment": "ship it"})
    assert approved.status_code == 200, approved.text
    run = wait_run(api, run_id, timeout=60)
    nodes = nodes_of(run)
    assert run["status"] == "succeeded"
    assert run["outputs"]["answer"]["decision"] == "approved"
    assert run["outputs"]["answer"]["payload"].startswith("Round 2 answer on durable agent")
    assert nodes["rounds@2/critic"]["output"]["approved"] is True and "rounds@3" not in nodes
    assert len(nodes["rounds@2/research"]["output"]) == 4
    assert all(n["executions"] == 1 for n in nodes.values() if n["status"] == "succeeded")
