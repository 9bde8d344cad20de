"""The Python client (`agentgraph.client`) and `agentgraph run/show/cancel --api` against
the api function on the emulator stack, as a caller of a deployed system uses them.

Failures of the network are made by a loopback proxy between the client and the api
(`FaultyProxy`): it can lose the api's answer after the api acted on the request (the
connection drops before the answer is relayed), or answer 429 itself before the api sees
the request. Callers without a token are the emulator stack's admin "local", whom
per-owner limits do not apply to; a signed-in emulator user (`identities.emulator_token`)
is held to the limits the stack sets, so one test meets a real 429.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgraph.api import models
from agentgraph.client import ApiError, Client
from agentgraph.client.watch import RunListener
from agentgraph.core import names
from emulator import harness
from emulator.stack import Stack
from tests.system.identities import emulator_token

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PROJECT = "client-agentgraph"
ROOT = Path(__file__).parents[2]
TOOLS = Path(__file__).with_name("e2e_tools.py")
TIMEOUT_S = 120.0
RUNS_PER_MINUTE = 2  # for signed-in users of this stack


# ---- a proxy that loses answers ------------------------------------------------------------


def _read_message(conn: socket.socket) -> bytes | None:
    """One HTTP/1.1 message (headers and a Content-Length body), or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data or None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _closing(message: bytes) -> bytes:
    """The message with `Connection: close`: one request per connection through the proxy."""
    head, _, body = message.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


def _header(message: bytes, name: str) -> str | None:
    for line in message.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    return None


_LIMITED = b'{"error": {"code": "limit_exceeded", "message": "slow down", "details": []}}'
TOO_MANY = _closing(
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_LIMITED), _LIMITED)
)


class FaultyProxy(socketserver.ThreadingTCPServer):
    """Relays each request to `upstream`, unless the next of `faults` says otherwise:
    "drop" forwards the request, waits for the api's whole answer and closes the
    connection without relaying it; "429" answers 429 with Retry-After: 1 itself."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__((harness.LOOPBACK, 0), _Relay)
        self.upstream = upstream
        self.faults: list[str] = []
        self.forwarded: list[bytes] = []
        self.answers: list[int] = []  # statuses the api gave to forwarded requests
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def next_fault(self) -> str | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None


class _Relay(socketserver.BaseRequestHandler):
    server: FaultyProxy

    def handle(self) -> None:
        request = _read_message(self.request)
        if request is None:
            return
        fault = self.server.next_fault()
        if fault == "429":
            self.request.sendall(TOO_MANY)
            return
        with socket.create_connection(self.server.upstream, timeout=TIMEOUT_S) as upstream:
            upstream.sendall(_closing(request))
            answer = _read_message(upstream) or b""
        with self.server._lock:
            self.server.forwarded.append(request)
            self.server.answers.append(int(answer.split(b" ", 2)[1]))
        if fault != "drop":
            self.request.sendall(_closing(answer))


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    emulator_stack: harness.EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with Stack(
        emulators=emulator_stack,
        project=PROJECT,
        tools=[str(TOOLS)],
        log_dir=tmp_path_factory.mktemp("client-logs"),
        sweep_every_s=None,
        env={names.ENV_LIMIT_RUNS_PER_MINUTE: str(RUNS_PER_MINUTE)},
    ) as running:
        yield running


@pytest.fixture
def proxy(stack: Stack) -> Iterator[FaultyProxy]:
    host, _, port = stack.api_url.removeprefix("http://").rstrip("/").partition(":")
    server = FaultyProxy((host, int(port)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def value(node_id: str, after: list[str] | None = None) -> dict[str, Any]:
    return {"id": node_id, "after": after or [], "tool": "e2e_value", "args": {"value": node_id}}


def graph(name: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "nodes": list(nodes)}


def unique(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:8]}"


async def runs_of(client: Client, graph_name: str) -> list[models.RunSummary]:
    return [r for r in await client.list_runs(limit=200) if r.graph == graph_name]


# ---- the client ------------------------------------------------------------------------------


async def test_create_then_wait_returns_the_ended_run_as_the_apis_typed_model(
    stack: Stack,
) -> None:
    name = unique("typed")
    async with Client(stack.api_url, listen=False) as client:
        started = await client.create(graph(name, value("a"), value("b", ["a"])), {"k": 1})
        assert isinstance(started, models.RunSummary) and started.graph == name
        run = await client.wait(started.run_id, timeout_s=TIMEOUT_S)
        assert isinstance(run, models.Run) and run.status == "succeeded"
        assert {n.id: (n.status, n.output, n.parents) for n in run.nodes} == {
            "a": ("succeeded", "a", []),
            "b": ("succeeded", "b", ["a"]),
        }
        assert run.outputs == {"b": "b"}
        events = await client.events(run.run_id)
        assert events[-1].kind == "run_status" and events[-1].status == "succeeded"
        assert [r.run_id for r in await runs_of(client, name)] == [run.run_id]


async def test_an_unknown_run_is_an_api_error_404_and_a_bad_graph_a_400_with_its_problems(
    stack: Stack,
) -> None:
    async with Client(stack.api_url, listen=False) as client:
        with pytest.raises(ApiError) as missing:
            await client.get("no-such-run")
        assert missing.value.status == 404 and missing.value.exit_code == 2
        with pytest.raises(ApiError) as invalid:
            await client.create(graph(unique("bad"), value("a", ["ghost"])))
    assert invalid.value.code == "invalid_graph"
    assert any("ghost" in p.message for p in invalid.value.problems)


async def test_cancel_ends_a_run_whose_first_node_is_still_running(stack: Stack) -> None:
    slow = {"id": "slow", "tool": "e2e_sleep", "args": {"seconds": 30, "value": 1}}
    async with Client(stack.api_url, listen=False) as client:
        started = await client.create(graph(unique("cancel"), slow, value("after", ["slow"])))
        cancelled = await client.cancel(started.run_id)
        assert isinstance(cancelled, models.CancelledRun)
        assert cancelled.cancelled and cancelled.status == "cancelled"
        run = await client.wait(started.run_id, timeout_s=TIMEOUT_S)
        again = await client.cancel(started.run_id)
    assert run.status == "cancelled" and not again.cancelled
    assert {n.id: n.status for n in run.nodes}["after"] == "cancelled"


async def test_approve_continues_a_run_and_a_second_decision_is_a_conflict(stack: Stack) -> None:
    gate = {
        "id": "gate",
        "after": ["a"],
        "approval": {"message": "go on after {{ nodes.a.output }}?"},
    }
    async with Client(stack.api_url, listen=False) as client:
        started = await client.create(
            graph(unique("approve"), value("a"), gate, value("b", ["gate"]))
        )
        async for run in client.stream(started.run_id):  # until the gate waits
            if {n.id: n.status for n in run.nodes}["gate"] == "waiting_approval":
                break
        pending = next(n for n in run.nodes if n.id == "gate").output
        decided = await client.approve(started.run_id, "gate", "fine", payload=[1, 2])
        with pytest.raises(ApiError) as conflict:
            await client.reject(started.run_id, "gate")
        run = await client.wait(started.run_id, timeout_s=TIMEOUT_S)
    assert pending["decision"] == "pending" and pending["message"] == "go on after a?"
    assert decided.node.status == "succeeded" and decided.node.output["payload"] == [1, 2]
    assert (conflict.value.status, conflict.value.code) == (409, "approval_conflict")
    assert run.status == "succeeded" and run.outputs == {"b": "b"}


async def test_a_create_whose_answer_was_lost_is_retried_and_returns_the_same_single_run(
    stack: Stack, proxy: FaultyProxy
) -> None:
    name = unique("dropped")
    proxy.faults.append("drop")
    async with Client(proxy.url, listen=False) as client:
        started = await client.create(graph(name, value("a")))
        run = await client.wait(started.run_id, timeout_s=TIMEOUT_S)
        runs = await runs_of(client, name)
    assert run.status == "succeeded"
    assert [r.run_id for r in runs] == [started.run_id]
    creates = [r for r in proxy.forwarded if r.startswith(b"POST /runs ")]
    assert len(creates) == 2
    keys = {_header(r, "Idempotency-Key") for r in creates}
    assert len(keys) == 1 and None not in keys
    assert proxy.answers[:2] == [201, 200]  # created, then the same run again


async def test_a_429_is_retried_after_the_retry_after_it_names(
    stack: Stack, proxy: FaultyProxy
) -> None:
    name = unique("limited")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    proxy.faults.append("429")
    async with Client(proxy.url, listen=False, sleep=sleep) as client:
        started = await client.create(graph(name, value("a")))
        assert waits == [1.0]
        assert len(await runs_of(client, name)) == 1
    assert started.status in ("pending", "running", "succeeded")


async def test_a_real_per_owner_limit_is_met_with_its_retry_after_and_creates_nothing(
    stack: Stack,
) -> None:
    """The api's own runs-per-minute limit, not the proxy: the third run of a minute is
    refused with the seconds until the oldest run leaves the window. A client that allows
    long waits sleeps exactly what the api asked each time (the sleep here only records);
    one that allows less stops at once. Neither creates the run."""
    user = unique("limited-user")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    token = emulator_token(user, PROJECT)
    async with Client(stack.api_url, token=token, listen=False, retries=3) as client:
        for _ in range(RUNS_PER_MINUTE):
            await client.create(graph(unique("within-limit"), value("a")))
    patient = Client(
        stack.api_url, token=token, listen=False, retries=3, max_wait_s=120, sleep=sleep
    )
    hasty = Client(stack.api_url, token=token, listen=False, retries=3, max_wait_s=5)
    async with patient, hasty:
        with pytest.raises(ApiError) as waited:
            await patient.create(graph(unique("over-limit"), value("a")))
        with pytest.raises(ApiError) as stopped:
            await hasty.create(graph(unique("over-limit"), value("a")))
        mine = await patient.list_runs()
    assert waited.value.status == stopped.value.status == 429
    assert waited.value.code == "limit_exceeded"
    assert len(waits) == 3 and all(1 <= w <= 60 for w in waits)  # retries=3: three waits
    assert stopped.value.retry_after_s is not None and stopped.value.retry_after_s > 5
    assert len(mine) == RUNS_PER_MINUTE


async def test_stream_follows_a_run_through_a_firestore_listener(stack: Stack) -> None:
    """With a safety poll of an hour, only the listener can tell the stream that the
    run moved on; the wait would time out without it."""
    assert os.environ.get("FIRESTORE_EMULATOR_HOST")
    async with Client(
        stack.api_url, listen=True, firestore_project=PROJECT, listener_poll_s=3600
    ) as client:
        started = await client.create(
            graph(unique("listened"), value("a"), value("b", ["a"]), value("c", ["b"]))
        )
        seen = []
        async with asyncio.timeout(TIMEOUT_S):
            async for run in client.stream(started.run_id):
                seen.append(run)
    assert seen[-1].status == "succeeded"
    assert all(n.status == "succeeded" for n in seen[-1].nodes)


async def test_the_listener_reports_a_change_made_after_it_started(stack: Stack) -> None:
    slow = {"id": "slow", "tool": "e2e_sleep", "args": {"seconds": 30, "value": 1}}
    async with Client(stack.api_url, listen=False) as client:
        started = await client.create(graph(unique("woken"), slow))
        listener = await RunListener(PROJECT, started.run_id).start()
        try:
            listener.changed.clear()
            await client.cancel(started.run_id)
            assert await listener.wait(TIMEOUT_S)
        finally:
            await listener.close()
        assert (await client.get(started.run_id)).status == "cancelled"


# ---- the CLI against the api -----------------------------------------------------------------


def agentgraph(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentgraph", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def write(path: Path, document: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_cli_run_on_the_api_prints_the_run_and_exits_0_then_show_draws_its_tree(
    stack: Stack, tmp_path: Path
) -> None:
    file = write(tmp_path / "g.yaml", graph(unique("cli"), value("a"), value("b", ["a"])))
    result = agentgraph("run", file, "--backend", "gcp", "--api", stack.api_url, "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded" and run["outputs"] == {"b": "b"}
    assert "succeeded" in result.stderr  # the progress lines

    shown = agentgraph("show", run["run_id"], "--api", stack.api_url)
    assert shown.returncode == 0, shown.stderr
    assert run["run_id"] in shown.stdout and "✓ a succeeded" in shown.stdout
    assert "✓ b succeeded" in shown.stdout

    traced = agentgraph("trace", run["run_id"], "--api", stack.api_url)
    assert traced.returncode == 0, traced.stderr
    flow = traced.stdout.splitlines()
    assert flow[0].startswith(f"run {run['run_id']} | ") and "flowchart" in flow
    assert any(line.startswith("  (a) succeeded") for line in flow) and "   |--> b" in flow


def test_show_on_the_api_groups_a_map_and_expands_it_on_demand(
    stack: Stack, tmp_path: Path
) -> None:
    each = {
        "id": "each",
        "map": "{{ range(12) | list }}",
        "tool": "e2e_value",
        "args": {"value": "{{ item }}"},
    }
    file = write(tmp_path / "map.yaml", graph(unique("cli-map"), each))
    result = agentgraph("run", file, "--backend", "gcp", "--api", stack.api_url, "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]

    shown = agentgraph("show", run_id, "--api", stack.api_url)
    assert shown.returncode == 0, shown.stderr
    assert "12 items: 12 succeeded" in shown.stdout and "each[3]" not in shown.stdout
    for flag in (["--expand", "each"], ["--all"]):
        expanded = agentgraph("show", run_id, "--api", stack.api_url, *flag)
        assert "each[3] succeeded" in expanded.stdout, flag


def test_cli_run_on_the_api_exits_1_when_the_run_fails_and_2_for_an_invalid_graph(
    stack: Stack, tmp_path: Path
) -> None:
    failing = graph(unique("fails"), {"id": "boom", "tool": "e2e_fail", "args": {}})
    result = agentgraph("run", write(tmp_path / "f.yaml", failing), "--api", stack.api_url)
    assert result.returncode == 1, result.stderr
    assert "failed" in result.stdout and "failed on purpose" in result.stdout

    invalid = graph(unique("invalid"), value("a", ["ghost"]))
    result = agentgraph("run", write(tmp_path / "i.yaml", invalid), "--api", stack.api_url)
    assert result.returncode == 2
    assert "invalid_graph" in result.stderr and "ghost" in result.stderr

    missing = agentgraph("show", "no-such-run", "--api", stack.api_url)
    assert missing.returncode == 2 and "not_found" in missing.stderr


def test_cli_redrive_on_the_api_runs_what_a_cancel_stopped(stack: Stack) -> None:
    slow = {"id": "slow", "tool": "e2e_sleep", "args": {"seconds": 1, "value": 1}}

    async def cancelled_run() -> str:
        async with Client(stack.api_url, listen=False) as client:
            started = await client.create(graph(unique("redrive"), slow, value("after", ["slow"])))
            await client.cancel(started.run_id)
            await client.wait(started.run_id, timeout_s=TIMEOUT_S)
            return started.run_id

    run_id = asyncio.run(cancelled_run())
    redriven = agentgraph("redrive", run_id, "--api", stack.api_url)
    again = agentgraph("redrive", run_id, "--api", stack.api_url)

    async def ended() -> models.Run:
        async with Client(stack.api_url, listen=False) as client:
            return await client.wait(run_id, timeout_s=TIMEOUT_S)

    run = asyncio.run(ended())
    assert redriven.returncode == 0, redriven.stderr
    assert "after" in redriven.stderr
    assert run.status == "succeeded" and run.outputs == {"after": "after"}
    assert again.returncode == 2 and "redrive_conflict" in again.stderr


def test_cli_run_with_backend_gcp_but_no_api_says_what_is_missing(tmp_path: Path) -> None:
    file = write(tmp_path / "g.yaml", graph("g", value("a")))
    env_free = {k: v for k, v in os.environ.items() if k != "AGENTGRAPH_API_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "agentgraph", "run", file, "--backend", "gcp"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=ROOT,
        env=env_free,
    )
    assert result.returncode == 2 and "--api URL" in result.stderr
