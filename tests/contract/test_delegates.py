"""Contract: agent profiles with tools, agents as tools (`delegates`), and `memory: run`.
Same tests, every backend; the model is the Gemini stub scripted by `@call` lines
(emulator/gemini_answers.py), which counts and logs the calls it answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.records import RunRecord
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router
from agentgraph.tools import default_registry
from emulator.gemini_stub import GeminiStub

from .conftest import Harness
from .test_agent_tools import MODEL, call

pytestmark = pytest.mark.usefixtures("on_stub")  # every test talks to the stub


def profiled(prompt: list[str], agents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    node = {"id": "lead", "model": MODEL, "prompt": "\n".join(prompt), **extra}
    return {"name": "delegates", "agents": agents, "nodes": [node]}


async def test_a_node_using_a_profile_gets_the_profiles_tools(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = ["Count.", call(1, "const", value=7, key="c")]
    document = profiled(prompt, {"counter": {"model": MODEL, "tools": ["const"], "max_turns": 2}})
    document["nodes"][0]["agent"] = "counter"
    run = await harness.run(document)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"lead": f'[{MODEL}] const: {{"result": 7}}'}
    assert harness.calls["c"] == 1
    recorded = await harness.store.list_steps(run.run_id, "lead")
    assert [(s.kind, s.name) for s in recorded] == [
        ("model", MODEL),
        ("tool", "const"),
        ("model", MODEL),
    ]
    node = (await harness.nodes(run.run_id))["lead"]
    assert node.status == NodeStatus.SUCCEEDED


# ---- agents as tools ------------------------------------------------------------------------


def delegating(prompt: list[str], agents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return profiled(prompt, agents, delegates=sorted(agents), **extra)


RESEARCHER = {"researcher": {"model": MODEL, "description": "Finds things out."}}


def answered(name: str, output: str) -> str:
    return f"{name}: " + json.dumps({"result": output}, sort_keys=True)


async def test_a_delegate_call_runs_one_child_whose_output_is_the_function_response(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = ["Lead.", call(1, "researcher", task="find the capital of France")]
    run = await harness.run(delegating(prompt, RESEARCHER))
    assert run.status == RunStatus.SUCCEEDED
    child = "lead/researcher[1]"
    assert run.outputs == {
        "lead": f"[{MODEL}] " + answered("researcher", f"[{MODEL}] find the capital of France")
    }
    nodes = await harness.nodes(run.run_id)
    assert set(nodes) == {"lead", child} and run.node_count == 2
    assert nodes[child].status == NodeStatus.SUCCEEDED and nodes[child].executions == 1
    assert nodes[child].children == ["lead"]
    assert (nodes["lead"].attempt, nodes["lead"].executions) == (1, 1)
    assert stub.count(prompt="\n".join(prompt)) == 2  # turn 1 was not asked again
    assert stub.count(prompt="find the capital of France") == 1
    declared = next(e for e in stub.calls()["log"] if e["prompt"] == "\n".join(prompt))
    assert declared["tools"] == ["researcher"]
    steps = await harness.store.list_steps(run.run_id, "lead")
    assert [(s.index, s.kind, s.name) for s in steps] == [
        (0, "model", MODEL),
        (1, "tool", "researcher"),
        (2, "model", MODEL),
    ]
    assert steps[1].result == f"[{MODEL}] find the capital of France"
    assert run.usage.calls == 3 and nodes["lead"].usage.calls == 2


async def test_parallel_delegations_run_concurrently_and_resume_the_caller_once(
    harness: Harness, stub: GeminiStub
) -> None:
    barrier = asyncio.Barrier(3)

    @harness.tools.tool
    async def meet(who: str) -> str:
        """Returns only once all three callers are inside at once."""
        async with asyncio.timeout(30):
            await barrier.wait()
        return f"{who} met"

    agents = {"worker": {"model": MODEL, "tools": ["meet"]}}
    tasks = {w: f"Meet as {w}.\n" + call(1, "meet", who=w) for w in ("x", "y", "z")}
    prompt = ["Fan out.", *(call(1, "worker", task=t) for t in tasks.values())]
    run = await harness.run(delegating(prompt, agents))
    assert run.status == RunStatus.SUCCEEDED
    expected = "; ".join(
        answered("worker", f"[{MODEL}] " + answered("meet", f"{w} met")) for w in ("x", "y", "z")
    )
    assert run.outputs == {"lead": f"[{MODEL}] {expected}"}
    nodes = await harness.nodes(run.run_id)
    assert sorted(nodes) == ["lead", "lead/worker[1]", "lead/worker[2]", "lead/worker[3]"]
    assert nodes["lead"].executions == 1 and stub.count(prompt="\n".join(prompt)) == 2


HELD_TASK = "Hold.\n" + call(1, "hold", key="held", value="done")
HELD_PROMPT = ["Wait.", call(1, "worker", task=HELD_TASK)]
HELD_CHILD = "lead/worker[1]"


async def start_waiting_on_held_worker(harness: Harness) -> RunRecord:
    """A run whose lead asked one `worker` delegate (HELD_CHILD) to call `hold` on
    "held": returned once the lead waits for it and it is running."""
    agents = {"worker": {"model": MODEL, "tools": ["hold"]}}
    started = await harness.start(delegating(HELD_PROMPT, agents))
    await harness.until(
        started.run_id,
        lambda n: (
            n["lead"].status == NodeStatus.EXPANDED
            and HELD_CHILD in n
            and n[HELD_CHILD].status == NodeStatus.RUNNING
        ),
    )
    return started


async def test_duplicate_deliveries_create_each_delegate_once_and_run_it_once(
    harness: Harness, stub: GeminiStub
) -> None:
    task, prompt, child = HELD_TASK, HELD_PROMPT, HELD_CHILD
    started = await start_waiting_on_held_worker(harness)
    # the caller's node-ready, delivered again (and again, concurrently)
    await asyncio.gather(*(harness.engine.execute(started.run_id, "lead", 1) for _ in range(3)))
    harness.release("held")
    run = await harness.wait(started.run_id)
    for _ in range(2):  # the delegate's node-finished, delivered again
        await harness.engine.complete(started.run_id, child, NodeStatus.SUCCEEDED)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and len(nodes) == 2 and run.node_count == 2
    assert harness.calls["held"] == 1 and nodes[child].executions == 1
    assert stub.count(prompt="\n".join(prompt)) == 2 and stub.count(prompt=task) == 2
    assert nodes["lead"].executions == 1


async def test_a_crash_after_the_delegates_are_created_before_the_caller_suspends_recovers(
    harness: Harness, stub: GeminiStub
) -> None:
    class DiesOnSuspend:
        """The process dies after the delegates were written, before the caller moved
        to expanded: it is left running with its lease."""

        def __init__(self, inner: Any) -> None:
            self.inner, self.died = inner, False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def expand_node(self, *args: Any, **kwargs: Any) -> bool:
            if not self.died:
                self.died = True
                raise ConnectionResetError("the process died before suspending the caller")
            return bool(await self.inner.expand_node(*args, **kwargs))

    harness.engine.store = DiesOnSuspend(harness.engine.store)  # type: ignore[assignment]
    prompt = ["Lead.", call(1, "researcher", task="look it up")]
    started = await harness.start(delegating(prompt, RESEARCHER))
    await harness.until(started.run_id, lambda n: len(n) == 2)
    await harness.crash()
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and len(nodes) == 2 and run.node_count == 2
    assert nodes["lead/researcher[1]"].executions == 1
    assert stub.count(prompt="look it up") == 1
    assert stub.count(prompt="\n".join(prompt)) == 2  # turn 1 was recorded before the crash


async def test_delegation_deeper_than_the_cap_is_a_clear_node_error(
    harness: Harness, stub: GeminiStub
) -> None:
    task = "too deep"
    for level in (3, 2, 1):
        task = f"Level {level}.\n" + call(1, "deep", task=task)
    prompt = ["Go deep.", call(1, "deep", task=task)]
    run = await harness.run(delegating(prompt, {"deep": {"model": MODEL, "delegates": ["deep"]}}))
    nodes = await harness.nodes(run.run_id)
    bottom = nodes["lead/deep[1]/deep[1]/deep[1]"]
    assert bottom.status == NodeStatus.FAILED and bottom.error is not None
    assert bottom.error.type == "DelegationTooDeep" and not bottom.error.retryable
    assert "at most 3 deep" in bottom.error.message
    assert "lead/deep[1]/deep[1]/deep[1]/deep[1]" not in nodes
    # the error went back to its caller as the call's response; the run goes on
    assert run.status == RunStatus.SUCCEEDED
    assert "DelegationTooDeep" in nodes["lead/deep[1]/deep[1]"].output


async def test_a_suspended_caller_holds_no_worker_so_one_worker_runs_its_delegates(
    tmp_path: Path,
) -> None:
    """Local, one worker: were the caller holding it while it waits, its delegates would
    never run."""
    agents = {"researcher": {"model": "echo"}, "writer": {"model": "echo"}}
    prompt = ["Lead.", call(1, "researcher", task="research"), call(2, "writer", task="write")]
    document = {
        "name": "one-worker",
        "agents": agents,
        "nodes": [
            {
                "id": "lead",
                "model": "echo",
                "delegates": ["researcher", "writer"],
                "prompt": "\n".join(prompt),
            }
        ],
    }
    store = SqliteStore(tmp_path / "runs.db")
    try:
        async with LocalRuntime(store, default_router(), default_registry, workers=1) as runtime:
            started = await runtime.engine.start_run(document)
            run = await runtime.wait(started.run_id, timeout=30)
            nodes = {n.node_id: n for n in await store.list_nodes(run.run_id)}
    finally:
        store.close()
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"lead": answered("writer", "write")}
    assert sorted(nodes) == ["lead", "lead/researcher[1]", "lead/writer[3]"]
    assert nodes["lead"].executions == 1


# ---- memory: run ----------------------------------------------------------------------------


def looping_writer(memory: dict[str, Any], prompt: str) -> dict[str, Any]:
    return {
        "name": "memory",
        "agents": {"writer": {"model": MODEL, **memory}},
        "nodes": [
            {
                "id": "draft",
                "agent": "writer",
                "prompt": prompt,
                "loop": {"until": "loop.iteration == 3", "max_iterations": 3},
            }
        ],
    }


def requests_of(stub: GeminiStub) -> list[dict[str, Any]]:
    return sorted(stub.calls()["log"], key=lambda e: e["seq"])


async def test_memory_run_carries_a_profiles_conversation_across_loop_iterations(
    harness: Harness, stub: GeminiStub
) -> None:
    run = await harness.run(looping_writer({"memory": "run"}, "Draft {{ loop.iteration }}."))
    assert run.status == RunStatus.SUCCEEDED
    sent = requests_of(stub)
    assert [e["last_user_text"] for e in sent] == ["Draft 1.", "Draft 2.", "Draft 3."]
    # each iteration sees every earlier one: its prompt and the model's answer
    assert [e["model_turns"] for e in sent] == [0, 1, 2]
    assert [e["prompt"] for e in sent] == ["Draft 1.", "Draft 1.", "Draft 1."]
    entries = await harness.store.list_steps(run.run_id, "_memory@writer")
    assert [e.name for e in entries] == ["draft@1", "draft@2", "draft@3"]


async def test_without_memory_each_iteration_starts_afresh(
    harness: Harness, stub: GeminiStub
) -> None:
    run = await harness.run(looping_writer({}, "Draft {{ loop.iteration }}."))
    assert run.status == RunStatus.SUCCEEDED
    assert [e["model_turns"] for e in requests_of(stub)] == [0, 0, 0]


async def test_memory_is_trimmed_to_its_token_budget_keeping_the_newest_conversations(
    harness: Harness, stub: GeminiStub
) -> None:
    # one iteration is about 65 tokens (prompt and answer, 4 characters a token): two
    # do not fit in 100, so the third iteration sees only the second
    prompt = "Draft {{ loop.iteration }}. " + "x" * 110
    run = await harness.run(looping_writer({"memory": "run", "memory_tokens": 100}, prompt))
    assert run.status == RunStatus.SUCCEEDED
    sent = requests_of(stub)
    assert [e["model_turns"] for e in sent] == [0, 1, 1]
    assert sent[2]["prompt"].startswith("Draft 2.")
