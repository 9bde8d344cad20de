"""Contract: runs that grow (map, loop, subgraph, planned subagents). Same tests, every
backend."""

from __future__ import annotations

import asyncio
from typing import Any

from agentgraph.core.status import NodeStatus, RunStatus

from .conftest import Harness

S = NodeStatus


def graph(*nodes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "growing", "defaults": {"model": "echo"}, "nodes": list(nodes), **top}


def const(
    node_id: str, value: Any = None, after: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": node_id,
        "after": after or [],
        "tool": "const",
        "args": {"value": value, "key": node_id},
        **extra,
    }


# ---- map ------------------------------------------------------------------------------------


async def test_a_map_runs_once_per_item_and_outputs_the_list_in_input_order(
    harness: Harness,
) -> None:
    run = await harness.run(
        graph(
            const("files", ["a", "b", "c"]),
            {
                "id": "review",
                "after": ["files"],
                "map": "{{ nodes.files.output }}",
                "tool": "const",
                "args": {"value": "{{ index }}:{{ item }}", "key": "review"},
            },
            const("report", "{{ nodes.review.output | join(',') }}", ["review"]),
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"report": "0:a,1:b,2:c"}
    assert harness.calls["review"] == 3
    nodes = await harness.nodes(run.run_id)
    assert nodes["review"].output == ["0:a", "1:b", "2:c"]
    assert [nodes[f"review[{i}]"].status for i in range(3)] == [S.SUCCEEDED] * 3
    assert all(nodes[f"review[{i}]"].executions == 1 for i in range(3))
    assert run.node_count == 3 + 3 and sum(run.counts.values()) == run.node_count
    assert {k: v for k, v in run.counts.items() if v} == {"succeeded": 6}


async def test_a_map_over_an_empty_list_succeeds_with_an_empty_list(harness: Harness) -> None:
    run = await harness.run(
        graph(
            const("files", []),
            {
                "id": "review",
                "after": ["files"],
                "map": "nodes.files.output",
                "prompt": "review {{ item }}",
            },
        )
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"review": []}
    assert run.node_count == 2


async def test_a_map_over_something_not_a_list_fails_the_node_clearly(harness: Harness) -> None:
    run = await harness.run(
        graph(
            const("files", {"not": "a list"}),
            {"id": "review", "after": ["files"], "map": "nodes.files.output", "prompt": "x"},
        )
    )
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.FAILED
    error = nodes["review"].error
    assert error is not None and error.type == "ExpansionError" and "not a list" in error.message


async def test_item_failures_with_continue_put_the_error_in_the_list(harness: Harness) -> None:
    run = await harness.run(
        graph(
            const("things", ["ok", "bad", "ok"]),
            {
                "id": "each",
                "after": ["things"],
                "map": "nodes.things.output",
                "on_error": "continue",
                "tool": "boom",
                "args": {"key": "each", "message": "{{ item }}"},
            },
        )
    )
    # every item failed: the list holds three errors and the map succeeds
    assert run.status == RunStatus.SUCCEEDED
    output = run.outputs["each"]  # type: ignore[index]
    assert [o["error"]["message"] for o in output] == ["ok", "bad", "ok"]


async def test_an_item_failure_without_continue_fails_the_map(harness: Harness) -> None:
    run = await harness.run(
        graph(
            const("things", [1, 2]),
            {
                "id": "each",
                "after": ["things"],
                "map": "nodes.things.output",
                "on_error": "skip_downstream",
                "tool": "boom",
                "args": {"key": "each"},
            },
            const("after", 1, ["each"]),
            const("other", 2),
        )
    )
    nodes = await harness.nodes(run.run_id)
    assert nodes["each"].status == S.FAILED
    assert nodes["each"].error is not None and nodes["each"].error.type == "ItemFailed"
    assert nodes["after"].status == S.SKIPPED and run.status == RunStatus.SUCCEEDED


async def test_max_concurrency_bounds_how_many_items_run_at_once(harness: Harness) -> None:
    running = 0
    most = 0

    @harness.tools.tool
    async def counted(value: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)  # the tool's own work: gives other items a chance to start
        running -= 1
        return value

    run = await harness.run(
        graph(
            const("things", list(range(12))),
            {
                "id": "each",
                "after": ["things"],
                "map": "nodes.things.output",
                "max_concurrency": 3,
                "tool": "counted",
                "args": {"value": "{{ item * 2 }}"},
            },
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"each": [i * 2 for i in range(12)]}
    assert 1 <= most <= 3


async def test_duplicate_deliveries_create_each_item_once_and_run_it_once(
    harness: Harness,
) -> None:
    started = await harness.start(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "tool": "hold",
                "args": {"key": "each", "value": "{{ item }}"},
            },
        ),
        {"things": [1, 2, 3]},
    )
    await harness.until(started.run_id, lambda n: sum(1 for i in n if i.startswith("each[")) == 3)
    # the controller's node-ready, delivered again (and again, concurrently)
    await asyncio.gather(*(harness.engine.execute(started.run_id, "each", 1) for _ in range(3)))
    await harness.until(
        started.run_id,
        lambda n: all(n[f"each[{i}]"].status == S.RUNNING for i in range(3)),
    )
    harness.release("each")
    run = await harness.wait(started.run_id)
    for _ in range(2):  # every item's node-finished, delivered again
        for i in range(3):
            await harness.engine.complete(started.run_id, f"each[{i}]", S.SUCCEEDED)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"each": [1, 2, 3]}
    assert harness.calls["each"] == 3 and len(nodes) == 4
    assert all(nodes[f"each[{i}]"].executions == 1 for i in range(3))
    assert await harness.store.get_arrival_count(run.run_id, "each") == 3


# ---- loop -----------------------------------------------------------------------------------


async def test_a_loop_runs_until_its_condition_holds(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "draft",
                "loop": {"until": "output >= 3", "max_iterations": 10},
                "tool": "const",
                "args": {"value": "{{ loop.iteration }}", "key": "draft"},
            },
            const("final", "{{ nodes.draft.output }}", ["draft"]),
        )
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"final": 3}
    nodes = await harness.nodes(run.run_id)
    assert [nodes[f"draft@{k}"].output for k in (1, 2, 3)] == [1, 2, 3]
    assert "draft@4" not in nodes and harness.calls["draft"] == 3


async def test_a_loop_reads_the_previous_iterations_output(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "grow",
                "loop": {"until": "output | length >= 4", "max_iterations": 10},
                "tool": "const",
                "args": {"value": "{{ (loop.previous or '') ~ 'x' }}", "key": "grow"},
            },
        )
    )
    assert run.outputs == {"grow": "xxxx"}


async def test_a_loop_out_of_iterations_fails_unless_told_to_succeed(harness: Harness) -> None:
    def looping(on_exhausted: str) -> dict[str, Any]:
        return graph(
            {
                "id": "try",
                "loop": {"until": "false", "max_iterations": 2, "on_exhausted": on_exhausted},
                "tool": "const",
                "args": {"value": "{{ loop.iteration }}", "key": "try"},
            },
        )

    failed = await harness.run(looping("fail"))
    nodes = await harness.nodes(failed.run_id)
    assert failed.status == RunStatus.FAILED
    assert nodes["try"].error is not None and nodes["try"].error.type == "LoopExhausted"
    succeeded = await harness.run(looping("succeed"))
    assert succeeded.status == RunStatus.SUCCEEDED and succeeded.outputs == {"try": 2}


# ---- subgraph -------------------------------------------------------------------------------


def _research(topic: str = "{{ input.topic }}", **extra: Any) -> dict[str, Any]:
    return {
        "id": "research",
        "nodes": [
            const("search", f"found {topic}"),
            {"id": "summarize", "after": ["search"], "prompt": "sum: {{ nodes.search.output }}"},
        ],
        **extra,
    }


async def test_a_subgraph_runs_its_nodes_and_exposes_its_sink_output(harness: Harness) -> None:
    run = await harness.run(
        graph(_research(), const("after", "{{ nodes.research.output }}", ["research"])),
        {"topic": "bees"},
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"after": "sum: found bees"}
    nodes = await harness.nodes(run.run_id)
    assert nodes["research/search"].status == S.SUCCEEDED
    assert nodes["research/summarize"].parents == ["research/search"]


async def test_a_subgraph_output_template_reads_its_nodes(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "pair",
                "nodes": [const("a", 1), const("b", 2)],
                "output": "{{ [nodes.a.output, nodes.b.output] }}",
            }
        )
    )
    assert run.outputs == {"pair": [1, 2]}


async def test_a_mapped_subgraph_runs_its_body_once_per_item(harness: Harness) -> None:
    run = await harness.run(
        graph(_research("{{ item }}", map="input.topics", max_concurrency=2)),
        {"topics": ["ants", "bees", "cats"]},
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"research": [f"sum: found {t}" for t in ("ants", "bees", "cats")]}
    nodes = await harness.nodes(run.run_id)
    assert nodes["research[1]/search"].output == "found bees"
    assert harness.calls["search"] == 3


async def test_a_loop_of_a_subgraph_repeats_the_body(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "rounds",
                "loop": {"until": "output >= 2", "max_iterations": 5},
                "nodes": [
                    const("step", "{{ loop.iteration }}"),
                    const("check", "{{ nodes.step.output }}", ["step"]),
                ],
            }
        )
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"rounds": 2}
    nodes = await harness.nodes(run.run_id)
    assert nodes["rounds@2/check"].output == 2 and "rounds@3" not in nodes


# ---- planned subagents ----------------------------------------------------------------------

AGENTS = {
    "researcher": {"model": "echo", "system": "You research."},
    "writer": {"model": "echo", "system": "You write."},
}


async def test_planned_subagents_run_each_task_with_its_profile(harness: Harness) -> None:
    plan = {"tasks": [{"agent": "researcher", "task": "find"}, {"agent": "writer", "task": "w"}]}
    run = await harness.run(
        graph(
            const("plan", plan),
            {
                "id": "delegate",
                "after": ["plan"],
                "map": "{{ nodes.plan.output.tasks }}",
                "agent": "{{ item.agent }}",
                "prompt": "{{ item.task }}",
            },
            agents=AGENTS,
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"delegate": ["find", "w"]}


async def test_a_plan_naming_an_unknown_profile_is_a_clear_node_error(harness: Harness) -> None:
    run = await harness.run(
        graph(
            const("plan", {"tasks": [{"agent": "poet", "task": "x"}]}),
            {
                "id": "delegate",
                "after": ["plan"],
                "map": "nodes.plan.output.tasks",
                "agent": "{{ item.agent }}",
                "prompt": "{{ item.task }}",
            },
            agents=AGENTS,
        )
    )
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.FAILED
    error = nodes["delegate[0]"].error
    assert error is not None and error.type == "UnknownAgent" and "'poet'" in error.message


# ---- cancel and crashes ---------------------------------------------------------------------


async def test_cancelling_during_a_large_map_stops_it(harness: Harness) -> None:
    n = 1000
    started = await harness.start(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "max_concurrency": 4,
                "tool": "hold",
                "args": {"key": "each"},
            },
        ),
        {"things": list(range(n))},
    )
    await harness.until(
        started.run_id, lambda n: sum(1 for r in n.values() if r.status == S.RUNNING) == 4
    )
    assert await harness.engine.cancel(started.run_id)
    harness.release("each")
    run = await harness.wait(started.run_id, timeout=120)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.CANCELLED
    assert harness.calls["each"] == 4
    assert nodes["each"].status == S.CANCELLED
    assert sum(1 for r in nodes.values() if r.status == S.CANCELLED) == n - 4 + 1
    assert run.node_count == n + 1


async def test_a_crash_after_the_instances_are_created_loses_and_doubles_nothing(
    harness: Harness,
) -> None:
    class DiesBeforeSendingItems:
        def __init__(self, inner: Any) -> None:
            self.inner, self.died = inner, False

        async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
            if node_id.startswith("each[") and not self.died:
                self.died = True
                raise ConnectionResetError("the process died before sending the items")
            await self.inner.node_ready(run_id, node_id, attempt, pool)

        async def node_finished(self, run_id: str, node_id: str, status: S) -> None:
            await self.inner.node_finished(run_id, node_id, status)

    harness.engine.dispatcher = DiesBeforeSendingItems(harness.engine.dispatcher)  # type: ignore[assignment]
    started = await harness.start(
        graph(
            {"id": "each", "map": "input.things", "tool": "const", "args": {"key": "each"}},
        ),
        {"things": [1, 2, 3]},
    )
    await harness.until(started.run_id, lambda n: n["each"].status == S.EXPANDED)
    await harness.crash()
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and harness.calls["each"] == 3
    assert len(nodes) == 4 and all(nodes[f"each[{i}]"].executions == 1 for i in range(3))


async def test_a_crash_before_the_controller_is_marked_expanded_re_expands_idempotently(
    harness: Harness,
) -> None:
    class DiesOnExpand:
        """The process dies after the instances were written, before the controller
        moved to expanded: it is left running with its lease."""

        def __init__(self, inner: Any) -> None:
            self.inner, self.died = inner, False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def expand_node(self, *args: Any, **kwargs: Any) -> bool:
            if not self.died:
                self.died = True
                raise ConnectionResetError("the process died before marking it expanded")
            return bool(await self.inner.expand_node(*args, **kwargs))

    harness.engine.store = DiesOnExpand(harness.engine.store)  # type: ignore[assignment]
    started = await harness.start(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "tool": "const",
                "args": {"key": "each", "value": "{{ item }}"},
            },
        ),
        {"things": [1, 2, 3]},
    )
    await harness.until(started.run_id, lambda n: len(n) == 4)
    await harness.crash()
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"each": [1, 2, 3]}
    assert harness.calls["each"] == 3 and len(nodes) == 4 and run.node_count == 4
    assert nodes["each"].executions == 2  # the takeover expanded it again, adding nothing


async def test_a_repeated_iteration_finish_adds_the_next_iteration_once(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "draft",
                "loop": {"until": "output >= 3", "max_iterations": 10},
                "tool": "const",
                "args": {"value": "{{ loop.iteration }}", "key": "draft"},
            },
        )
    )
    for _ in range(2):
        for k in (1, 2, 3):
            await harness.engine.complete(run.run_id, f"draft@{k}", S.SUCCEEDED)
    run = await harness.wait(run.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.outputs == {"draft": 3} and harness.calls["draft"] == 3
    assert sorted(nodes) == ["draft", "draft@1", "draft@2", "draft@3"]


async def test_the_orchestrator_pattern_plans_delegates_and_loops_until_the_critic_agrees(
    harness: Harness,
) -> None:
    """planner -> subagents in parallel -> synthesize -> critic, in a loop of rounds."""
    run = await harness.run(
        graph(
            {
                "id": "rounds",
                "loop": {"until": "output.approved", "max_iterations": 3},
                "nodes": [
                    const(
                        "plan",
                        {
                            "tasks": [
                                {"agent": "researcher", "task": "dig {{ loop.iteration }}"},
                                {"agent": "writer", "task": "draft {{ loop.iteration }}"},
                            ]
                        },
                    ),
                    {
                        "id": "delegate",
                        "after": ["plan"],
                        "map": "nodes.plan.output.tasks",
                        "max_concurrency": 2,
                        "agent": "{{ item.agent }}",
                        "prompt": "{{ item.task }}",
                    },
                    const("synthesize", "{{ nodes.delegate.output | join(' + ') }}", ["delegate"]),
                    const(
                        "critic",
                        {
                            "approved": "{{ loop.iteration >= 2 }}",
                            "text": "{{ nodes.synthesize.output }}",
                        },
                        ["synthesize"],
                    ),
                ],
            },
            agents=AGENTS,
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"rounds": {"approved": True, "text": "dig 2 + draft 2"}}
    nodes = await harness.nodes(run.run_id)
    assert nodes["rounds@1/delegate[1]"].output == "draft 1"


async def test_a_map_with_two_parents_waits_for_every_item(harness: Harness) -> None:
    """Its parents' arrivals are counted on the same record as its items'."""
    run = await harness.run(
        graph(
            const("left", [1, 2, 3]),
            const("right", 10),
            {
                "id": "sum",
                "after": ["left", "right"],
                "map": "nodes.left.output",
                "tool": "sleep",
                "args": {
                    "seconds": "{{ 0.01 * item }}",
                    "value": "{{ item + nodes.right.output }}",
                },
            },
        )
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"sum": [11, 12, 13]}


async def test_an_item_retries_like_any_node(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "retry": {"max_attempts": 3, "initial_delay_s": 0.01, "jitter": False},
                "tool": "flaky",
                "args": {"key": "each{{ index }}", "failures": 1, "value": "{{ item }}"},
            },
        ),
        {"things": ["a", "b"]},
    )
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"each": ["a", "b"]}
    assert nodes["each[0]"].attempt == 2 and harness.calls["each1"] == 2


async def test_a_map_over_1000_items_runs_exactly_1000_item_executions(harness: Harness) -> None:
    started = await harness.start(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "max_concurrency": 50,
                "tool": "const",
                "args": {"key": "item", "value": "{{ item }}"},
            },
        ),
        {"things": list(range(1000))},
    )
    run = await harness.wait(started.run_id, timeout=300)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"each": list(range(1000))}
    assert harness.calls["item"] == 1000
    assert sum(r.executions for r in nodes.values() if r.node_id != "each") == 1000
    assert run.node_count == 1001 == len(nodes)


async def test_a_map_expanding_while_its_run_is_cancelled_starts_no_item(harness: Harness) -> None:
    class CancelledDuringExpansion:
        """The run is cancelled (by another caller) just before the instances are added."""

        def __init__(self, inner: Any, cancel: Any) -> None:
            self.inner, self.cancel = inner, cancel

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def add_instances(self, run_id: str, *args: Any) -> int:
            await self.cancel(run_id)
            return int(await self.inner.add_instances(run_id, *args))

    engine = harness.engine
    engine.store = CancelledDuringExpansion(engine.store, engine.cancel)  # type: ignore[assignment]
    started = await harness.start(
        graph(
            const("first", [1, 2, 3]),
            {
                "id": "each",
                "after": ["first"],
                "map": "nodes.first.output",
                "tool": "const",
                "args": {"key": "each"},
            },
        )
    )
    run = await harness.wait(started.run_id)
    await harness.until(run.run_id, lambda n: all(r.status.terminal for r in n.values()))
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.CANCELLED and "each" not in harness.calls
    assert {nodes[f"each[{i}]"].status for i in range(3)} == {S.CANCELLED}
    assert nodes["each"].status == S.CANCELLED


async def test_a_map_whose_list_of_outputs_is_too_large_fails_clearly(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "tool": "blob",
                "args": {"size": 4 * 1024 * 1024},
            },
        ),
        {"things": [1, 2, 3]},
    )
    nodes = await harness.nodes(run.run_id)
    error = nodes["each"].error
    assert run.status == RunStatus.FAILED
    assert error is not None and error.type == "OutputTooLarge" and "the limit is" in error.message
