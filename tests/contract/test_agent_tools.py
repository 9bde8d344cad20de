"""Contract: agents that call tools (Gemini function calling), every completed model turn
and tool call a durable step. Same tests, every backend; the model is the Gemini stub
through the real google-genai client, scripted by `@call TURN NAME {args}` lines in the
prompt (emulator/gemini_answers.py), and it counts the calls it answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentgraph.core.records import Step, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from emulator.gemini_stub import GeminiStub

from .conftest import Harness

MODEL = "gemini-2.5-flash"


pytestmark = pytest.mark.usefixtures("on_stub")  # every test talks to the stub


def call(turn: int | str, tool: str, **args: Any) -> str:
    return f"@call {turn} {tool} {json.dumps(args)}"


def agent(prompt_lines: list[str], tools: list[str], **extra: Any) -> dict[str, Any]:
    node = {"id": "agent", "model": MODEL, "tools": tools, "prompt": "\n".join(prompt_lines)}
    return {"name": "tools", "nodes": [{**node, **extra}]}


async def steps(harness: Harness, run_id: str) -> list[Step]:
    return await harness.store.list_steps(run_id, "agent")


def shape(found: list[Step]) -> list[tuple[int, str, str, int]]:
    return [(s.index, s.kind, s.name, s.turn) for s in found]


async def test_a_three_turn_tool_loop_answers_with_the_final_text(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = [
        "Count twice.",
        call(1, "const", value=3, key="c1"),
        call(2, "const", value=5, key="c2"),
    ]
    run = await harness.run(agent(prompt, ["const"]))
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"agent": f'[{MODEL}] const: {{"result": 5}}'}
    assert (harness.calls["c1"], harness.calls["c2"]) == (1, 1)
    assert stub.count(prompt="\n".join(prompt)) == 3
    recorded = await steps(harness, run.run_id)
    assert shape(recorded) == [
        (0, "model", MODEL, 1),
        (1, "tool", "const", 1),
        (2, "model", MODEL, 2),
        (3, "tool", "const", 2),
        (4, "model", MODEL, 3),
    ]
    assert (recorded[1].arguments, recorded[1].result) == ({"value": 3, "key": "c1"}, 3)
    node = (await harness.nodes(run.run_id))["agent"]
    total = sum((s.usage for s in recorded), Usage())
    assert node.usage == total and run.usage == total and total.calls == 3
    assert all(s.duration_ms >= 0 and s.at > 0 for s in recorded)


async def test_the_calls_of_one_turn_run_at_the_same_time(harness: Harness) -> None:
    barrier = asyncio.Barrier(3)

    @harness.tools.tool
    async def meet(who: str) -> str:
        """Returns only once all three callers are inside at once."""
        async with asyncio.timeout(20):
            await barrier.wait()
        return f"{who} met"

    prompt = ["Meet.", *(call(1, "meet", who=w) for w in ("x", "y", "z"))]
    run = await harness.run(agent(prompt, ["meet"]))
    assert run.status == RunStatus.SUCCEEDED
    expected = "; ".join(f'meet: {{"result": "{w} met"}}' for w in ("x", "y", "z"))
    assert run.outputs == {"agent": f"[{MODEL}] {expected}"}
    assert [s.index for s in await steps(harness, run.run_id)] == [0, 1, 2, 3, 4]


async def test_a_tool_error_goes_back_to_the_model_which_recovers(harness: Harness) -> None:
    prompt = ["Try.", call(1, "boom", key="b", message="disk full"), call(2, "const", value="ok")]
    run = await harness.run(agent(prompt, ["boom", "const"]))
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"agent": f'[{MODEL}] const: {{"result": "ok"}}'}
    failed = (await steps(harness, run.run_id))[1]
    assert (failed.name, failed.error, failed.result) == (
        "boom",
        {"type": "ValueError", "message": "disk full"},
        None,
    )


async def test_the_model_receives_a_tool_error_as_the_calls_error_response(
    harness: Harness,
) -> None:
    prompt = ["Try.", call(1, "boom", key="b", message="disk full")]
    run = await harness.run(agent(prompt, ["boom"]))
    assert run.outputs == {"agent": f'[{MODEL}] boom: {{"error": "ValueError: disk full"}}'}


async def test_reaching_max_turns_fails_the_node_clearly_without_making_the_last_calls(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = ["Loop forever.", call("*", "const", value=1, key="loop")]
    run = await harness.run(agent(prompt, ["const"], max_turns=2))
    assert run.status == RunStatus.FAILED
    node = (await harness.nodes(run.run_id))["agent"]
    assert node.status == NodeStatus.FAILED and node.error is not None
    assert node.error.type == "MaxTurnsExceeded" and not node.error.retryable
    assert "max_turns=2" in node.error.message and "on_max_turns: return_last" in node.error.message
    assert stub.count(prompt="\n".join(prompt)) == 2 and harness.calls["loop"] == 1


async def test_on_max_turns_return_last_answers_with_the_last_text(harness: Harness) -> None:
    prompt = [
        "Loop.",
        call("*", "const", value=1, key="loop"),
        "@say 1 first thoughts",
        "@say 2 best answer so far",
    ]
    run = await harness.run(agent(prompt, ["const"], max_turns=3, on_max_turns="return_last"))
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"agent": "best answer so far"}


async def test_a_retryable_tool_error_retries_the_node_which_resumes_after_its_steps(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = [
        "Flaky.",
        call(1, "const", value=1, key="first"),
        call(2, "flaky", key="flaky", failures=1, value="fine"),
    ]
    retry = {"initial_delay_s": 0.01, "jitter": False}
    run = await harness.run(agent(prompt, ["const", "flaky"], retry=retry))
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"agent": f'[{MODEL}] flaky: {{"result": "fine"}}'}
    assert (harness.calls["first"], harness.calls["flaky"]) == (1, 2)
    assert stub.count(prompt="\n".join(prompt)) == 3
    recorded = await steps(harness, run.run_id)
    assert [(s.index, s.attempt) for s in recorded] == [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2)]
    node = (await harness.nodes(run.run_id))["agent"]
    assert node.attempt == 2 and node.usage == sum((s.usage for s in recorded), Usage())


async def test_a_crash_after_turn_two_resumes_at_turn_three_without_repeating_a_step(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = [
        "Crash.",
        call(1, "const", value=1, key="first"),
        call(2, "hold", key="held", value="released"),
    ]
    started = await harness.start(agent(prompt, ["const", "hold"]))

    async def turn_two_recorded() -> bool:
        return len(await steps(harness, started.run_id)) == 3

    await harness.eventually(turn_two_recorded)
    await harness.crash()  # the held call of turn 2 dies with its worker
    harness.release("held")
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"agent": f'[{MODEL}] hold: {{"result": "released"}}'}
    assert stub.count(prompt="\n".join(prompt)) == 3  # turns 1 and 2 were not asked again
    assert harness.calls["first"] == 1  # turn 1's completed call was not made again
    recorded = await steps(harness, started.run_id)
    assert shape(recorded) == [
        (0, "model", MODEL, 1),
        (1, "tool", "const", 1),
        (2, "model", MODEL, 2),
        (3, "tool", "hold", 2),
        (4, "model", MODEL, 3),
    ]
    node = (await harness.nodes(started.run_id))["agent"]
    assert node.executions == 2
    assert node.usage == sum((s.usage for s in recorded), Usage())  # the dead attempt's too


async def test_duplicate_node_ready_deliveries_do_not_repeat_a_step(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = ["Once.", call(1, "const", value=1, key="once")]
    started = await harness.start(agent(prompt, ["const"]))
    await asyncio.gather(*(harness.engine.execute(started.run_id, "agent", 1) for _ in range(3)))
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and harness.calls["once"] == 1
    assert stub.count(prompt="\n".join(prompt)) == 2
    assert [s.index for s in await steps(harness, started.run_id)] == [0, 1, 2]


async def test_a_second_write_of_a_step_index_changes_nothing(harness: Harness) -> None:
    run = await harness.run(agent(["Plain."], ["const"]))
    first = Step(7, "tool", "const", 1, 1, 1.0, arguments={}, result="first")
    assert await harness.store.append_step(run.run_id, "agent", first)
    again = Step(7, "tool", "const", 1, 1, 2.0, arguments={}, result="second")
    assert not await harness.store.append_step(run.run_id, "agent", again)
    assert (await steps(harness, run.run_id))[-1] == first


async def test_a_large_tool_result_is_stored_and_read_back_whole(harness: Harness) -> None:
    prompt = ["Big.", call(1, "blob", size=1_200_000)]
    run = await harness.run(agent(prompt, ["blob"], output="text"))
    assert run.status == RunStatus.SUCCEEDED
    big = (await steps(harness, run.run_id))[1]
    assert big.result == "x" * 1_200_000
