"""The Python client's own rules, against an in-process HTTP transport: what it retries,
how long it waits, what it sends, and how answers become typed models and view records.
Against the real api on the emulators: tests/system/test_client.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agentgraph.api import models
from agentgraph.client import ApiError, Client
from agentgraph.client.http import IdToken
from agentgraph.client.records import node_records, run_record
from agentgraph.client.retrying import retry_after_seconds
from agentgraph.core.status import NodeStatus, RunStatus

NOW = 1_700_000_000.0
USAGE = {"input_tokens": 3, "output_tokens": 4, "cost_usd": 0.5, "calls": 1}


def summary(status: str = "running", run_id: str = "r1") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "graph": "g",
        "status": status,
        "created_at": NOW,
        "usage": USAGE,
        "counts": {"running": 1},
    }


def node(node_id: str, status: str, parents: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": node_id,
        "status": status,
        "parents": parents or [],
        "attempts": 1,
        "executions": 1,
        "usage": USAGE,
        "output": node_id if status == "succeeded" else None,
    }


def full_run(status: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    return {**summary(status), "nodes": list(nodes)}


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "details": []}}
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    """The client's sleeps, recorded instead of slept."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], sleep: Recorder, **kwargs: Any
) -> Client:
    return Client(
        "http://api.test",
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        clock=lambda: NOW,
        listen=False,
        **kwargs,
    )


# ---- Retry-After ---------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("7", NOW) == 7.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:40 GMT", NOW) == 20.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:00:00 GMT", NOW) == 0.0  # in the past
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds(None, NOW) is None


# ---- retries ---------------------------------------------------------------------------------


async def test_a_429_is_retried_after_the_retry_after_it_names_with_the_same_idempotency_key() -> (
    None
):
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            return error(429, "limit_exceeded", {"Retry-After": "7"})
        return httpx.Response(201, json=summary())

    sleep = Recorder()
    async with client_for(handler, sleep) as client:
        run = await client.create({"name": "g", "nodes": []}, {"x": 1})
    assert isinstance(run, models.RunSummary) and run.run_id == "r1"
    assert sleep.waits == [7.0]
    assert len(keys) == 2 and keys[0] == keys[1]


async def test_each_create_call_gets_its_own_idempotency_key_unless_given_one() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(201, json=summary())

    async with client_for(handler, Recorder()) as client:
        await client.create({"name": "g"})
        await client.create({"name": "g"})
        await client.create({"name": "g"}, idempotency_key="mine")
    assert keys[0] != keys[1] and keys[2] == "mine"


async def test_a_retry_after_longer_than_the_longest_wait_ends_the_retries_at_once() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(429, "limit_exceeded", {"Retry-After": "3600"})

    sleep = Recorder()
    async with client_for(handler, sleep, max_wait_s=60) as client:
        with pytest.raises(ApiError) as caught:
            await client.create({"name": "g"})
    assert caught.value.status == 429 and caught.value.retry_after_s == 3600
    assert len(calls) == 1 and sleep.waits == []


async def test_a_503_without_retry_after_backs_off_within_bounds_and_gives_up() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(503, "unavailable")

    sleep = Recorder()
    async with client_for(handler, sleep, retries=3, max_wait_s=2) as client:
        with pytest.raises(ApiError) as caught:
            await client.get("r1")
    assert caught.value.code == "unavailable" and caught.value.exit_code == 1
    assert len(calls) == 4 and len(sleep.waits) == 3
    assert all(0 < wait <= 2 for wait in sleep.waits)


async def test_a_dropped_connection_is_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json=full_run("running"))

    async with client_for(handler, Recorder()) as client:
        run = await client.get("r1")
    assert run.run_id == "r1" and len(calls) == 2


async def test_the_callers_mistakes_are_not_retried_and_keep_the_apis_problems() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {
            "error": {
                "code": "invalid_graph",
                "message": "invalid graph: 1 problem",
                "details": [{"path": "graph.nodes[0].after", "message": "unknown node 'x'"}],
            }
        }
        return httpx.Response(400, json=body)

    async with client_for(handler, Recorder()) as client:
        with pytest.raises(ApiError) as caught:
            await client.create({"name": "g"})
    assert len(calls) == 1
    assert caught.value.code == "invalid_graph" and caught.value.exit_code == 2
    assert caught.value.problems[0].path == "graph.nodes[0].after"
    assert "graph.nodes[0].after: unknown node 'x'" in str(caught.value)


async def test_an_answer_that_is_not_the_apis_error_body_still_becomes_an_api_error() -> None:
    async with client_for(lambda r: httpx.Response(502, text="Bad Gateway"), Recorder()) as c:
        with pytest.raises(ApiError) as caught:
            await c.get("r1")
    assert caught.value.status == 502 and caught.value.code == "unexpected"
    assert caught.value.exit_code == 1


# ---- who calls -------------------------------------------------------------------------------


async def test_a_static_token_is_sent_as_a_bearer_token() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"runs": []})

    async with client_for(handler, Recorder(), token="t0k") as client:
        assert await client.list_runs() == []
    async with client_for(handler, Recorder()) as client:
        await client.list_runs()
    assert seen == ["Bearer t0k", None]


async def test_an_id_token_is_fetched_once_and_again_only_shortly_before_it_expires() -> None:
    now = [NOW]
    fetched: list[str] = []

    class Counting(IdToken):
        def _fetch(self) -> tuple[str, float]:
            fetched.append(self.audience)
            return f"token{len(fetched)}", now[0] + 3600

    token = Counting("https://api.example", clock=lambda: now[0])
    assert await token.get() == "token1"
    now[0] += 3000
    assert await token.get() == "token1"
    now[0] += 400  # within five minutes of the expiry
    assert await token.get() == "token2"
    assert fetched == ["https://api.example"] * 2


def test_a_static_token_and_an_audience_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        Client("http://api.test", token="t", audience="https://api.example")


# ---- following a run ---------------------------------------------------------------------


async def test_stream_polls_the_events_and_reads_the_run_only_when_something_happened() -> None:
    runs = [
        full_run("running", node("a", "running")),
        full_run("succeeded", node("a", "succeeded")),
    ]
    events_after: list[str | None] = []
    reads = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            events_after.append(request.url.params.get("after"))
            if len(events_after) < 3:
                return httpx.Response(200, json={"events": []})
            event = {"seq": 42, "at": NOW, "kind": "run_status", "status": "succeeded"}
            return httpx.Response(200, json={"events": [event]})
        reads.append(request)
        return httpx.Response(200, json=runs[min(len(reads), 2) - 1])

    sleep = Recorder()
    async with client_for(handler, sleep, poll_s=0.25) as client:
        seen = [run.status async for run in client.stream("r1")]
        assert seen == ["running", "succeeded"]
        assert len(reads) == 2 and events_after == [None, None, None]
        assert sleep.waits == [0.25, 0.25, 0.25]
        final = await client.wait("r1", timeout_s=5)
    assert final.status == "succeeded" and final.nodes[0].output == "a"


async def test_wait_gives_up_after_its_timeout_and_leaves_the_run_alone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"events": []})
        return httpx.Response(200, json=full_run("running", node("a", "running")))

    async def real_sleep(seconds: float) -> None:
        await asyncio.sleep(0)  # yield only: the timeout below is what ends the wait

    async with Client(
        "http://api.test",
        transport=httpx.MockTransport(handler),
        sleep=real_sleep,
        listen=False,
    ) as client:
        with pytest.raises(TimeoutError):
            await client.wait("r1", timeout_s=0.05)


# ---- records for the view ------------------------------------------------------------------


def test_the_apis_run_becomes_the_records_the_terminal_view_draws() -> None:
    run = models.Run.model_validate(
        full_run(
            "failed",
            node("a", "succeeded"),
            {**node("b", "failed", ["a"]), "error": {"type": "ToolError", "message": "boom"}},
            node("c", "skipped", ["a", "b"]),
        )
    )
    record = run_record(run)
    assert record.status == RunStatus.FAILED and record.node_count == 3
    assert record.usage.cost_usd == 0.5 and record.graph_name == "g"
    nodes = node_records(run)
    assert [n.parents for n in nodes] == [[], ["a"], ["a", "b"]]
    assert nodes[1].status == NodeStatus.FAILED and nodes[1].error is not None
    assert nodes[1].error.message == "boom"


def test_importing_the_client_loads_no_server_code() -> None:
    code = (
        "import sys, json, agentgraph.client, agentgraph.client.records; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith("
        "('starlette', 'functions_framework', 'agentgraph.engine', 'agentgraph.backends', "
        "'agentgraph.api.routes')))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


async def test_the_cli_follows_an_api_run_with_the_live_view_and_prints_its_outputs() -> None:
    from io import StringIO

    from rich.console import Console

    from agentgraph import cli_api

    states = iter(
        [
            full_run("running", node("a", "running")),
            full_run("running", node("a", "succeeded"), node("b", "running", ["a"])),
            {
                **full_run("succeeded", node("a", "succeeded"), node("b", "succeeded", ["a"])),
                "outputs": {"b": "b"},
            },
        ]
    )
    last: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            event = {"seq": len(last) + 1, "at": NOW, "kind": "node_status", "node_id": "a"}
            return httpx.Response(200, json={"events": [event]})
        last[:] = [next(states, last[0] if last else {})]
        return httpx.Response(200, json=last[0])

    screen, printed = StringIO(), StringIO()
    err = Console(file=screen, force_terminal=True, width=120)
    out = Console(file=printed, width=120)
    async with client_for(handler, Recorder()) as client:
        final = await cli_api.follow(client, "r1", err, out, as_json=False)
    assert final.status == "succeeded"
    assert "g · r1 · running" in screen.getvalue()  # the live table (it throttles frames)
    assert "succeeded" in printed.getvalue() and '"b": "b"' in printed.getvalue()


async def test_approve_reject_and_redrive_send_what_the_api_takes_and_type_its_answers() -> None:
    sent: list[tuple[str, str, Any]] = []
    decided = {"run_id": "r1", "node": node("review", "succeeded")}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.path, body))
        if request.url.path.endswith("/redrive"):
            return httpx.Response(200, json={**summary(), "redriven": True, "nodes_to_run": ["b"]})
        if len(sent) == 3:
            return error(409, "approval_conflict")
        return httpx.Response(200, json=decided)

    async with client_for(handler, Recorder()) as client:
        approved = await client.approve("r1", "review", "ok", payload={"v": 2})
        plain = await client.approve("r1", "review")
        with pytest.raises(ApiError) as conflict:
            await client.reject("r1", "review", "no")
        redriven = await client.redrive("r1")

    assert sent[0] == (
        "POST",
        "/runs/r1/nodes/review/approve",
        {"comment": "ok", "payload": {"v": 2}},
    )
    assert sent[1][2] == {"comment": None}, "no payload: the computed value stands"
    assert sent[2] == ("POST", "/runs/r1/nodes/review/reject", {"comment": "no"})
    assert isinstance(approved, models.DecidedNode) and plain.node.id == "review"
    assert (conflict.value.status, conflict.value.code, conflict.value.exit_code) == (
        409,
        "approval_conflict",
        2,
    )
    assert redriven.redriven and redriven.nodes_to_run == ["b"]
