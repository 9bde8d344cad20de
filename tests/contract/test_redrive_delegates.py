"""Contract: redriving a run whose tool-loop agent waited for its delegates. The caller
resumes once all of its delegates are final; a delegate that finished is not run again,
and the caller's completed steps are not asked again. Same tests, every backend."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router
from emulator.gemini_stub import GeminiStub

from .conftest import Harness, scripted_tools, watched
from .test_agent_tools import MODEL, call
from .test_delegates import (
    HELD_CHILD,
    HELD_PROMPT,
    answered,
    start_waiting_on_held_worker,
)

pytestmark = pytest.mark.usefixtures("on_stub")  # every test talks to the stub

S = NodeStatus


async def test_a_run_cancelled_while_its_caller_waits_resumes_the_caller_when_redriven(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt, child = HELD_PROMPT, HELD_CHILD
    started = await start_waiting_on_held_worker(harness)
    assert await harness.engine.cancel(started.run_id)
    harness.release("held")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.CANCELLED
    await harness.until(run.run_id, lambda n: n[child].status.terminal)
    assert (await harness.nodes(run.run_id))["lead"].status == S.CANCELLED

    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and "lead" in again
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    held = f"[{MODEL}] " + answered("hold", "done")
    assert run.outputs == {"lead": f"[{MODEL}] " + answered("worker", held)}
    assert harness.calls["held"] == 1, "the delegate's tool call is not made again"
    assert stub.count(prompt="\n".join(prompt)) == 2, "the caller's turn 1 is not asked again"
    nodes = await harness.nodes(run.run_id)
    assert {n.status for n in nodes.values()} == {S.SUCCEEDED}


async def test_a_delegate_cancelled_before_it_started_runs_when_redriven(tmp_path: Path) -> None:
    """Local, one worker: the first delegate holds it, so the second has not started when
    the run is cancelled. The redrive runs the second only; the caller waits for it."""
    calls: Counter[str] = Counter()
    gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
    tools = scripted_tools(calls, gates)
    changed = asyncio.Event()
    agents = {"worker": {"model": "echo", "tools": ["hold"]}}
    tasks = [f"Hold {k}.\n" + call(1, "hold", key=k, value=k) for k in ("a", "b")]
    prompt = ["Lead.", *(call(1, "worker", task=t) for t in tasks)]
    document = {
        "name": "one-worker",
        "agents": agents,
        "nodes": [
            {"id": "lead", "model": "echo", "delegates": ["worker"], "prompt": "\n".join(prompt)}
        ],
    }
    store = SqliteStore(tmp_path / "runs.db")
    runtime = LocalRuntime(watched(store, changed), default_router(), tools, workers=1)
    async with runtime:
        h = Harness("local-1-worker", runtime.engine, runtime.store, tools, calls, gates, changed)
        started = await runtime.start(document)
        first, second = "lead/worker[1]", "lead/worker[2]"
        await h.until(started.run_id, lambda n: first in n and n[first].status == S.RUNNING)
        assert await runtime.engine.cancel(started.run_id)
        h.release("a")
        await h.until(started.run_id, lambda n: n[first].status == S.SUCCEEDED)
        before = await h.nodes(started.run_id)
        assert before[second].status == S.CANCELLED and before["lead"].status == S.CANCELLED

        h.release("b")
        redriven, again = await runtime.engine.redrive(started.run_id)
        assert redriven and again == ["lead", second]
        run = await runtime.wait(started.run_id, timeout=30)
        nodes = await h.nodes(run.run_id)
    store.close()
    assert run.status == RunStatus.SUCCEEDED
    assert calls == {"a": 1, "b": 1}
    assert nodes[first].executions == 1 and nodes[second].executions == 1
    assert {n.status for n in nodes.values()} == {S.SUCCEEDED}
