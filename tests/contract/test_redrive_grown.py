"""Contract: redriving runs that grew instances (Step Functions' Map redrive). Only the
items, iterations and inner nodes that did not succeed run again; those that succeeded
keep their outputs and are not run again; the map's output is then the whole list in
input order. Same tests, every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentgraph.core.errors import RedriveConflict
from agentgraph.core.status import NodeStatus, RunStatus

from .conftest import Harness
from .test_growing_runs import const, graph

S = NodeStatus


@pytest.fixture
def broken(harness: Harness) -> set[str]:
    """`brittle(value, key)` returns `value` and counts its calls per `key:value`; it fails
    (permanently) for the `key:value`s in the returned set, until the test removes them."""
    failing: set[str] = set()

    @harness.tools.tool
    def brittle(value: Any, key: str) -> Any:
        name = f"{key}:{value}"
        harness.calls[name] += 1
        if name in failing:
            raise ValueError(f"{name} is broken")
        return value

    return failing


def brittle_map(n: int, **extra: Any) -> dict[str, Any]:
    return graph(
        const("src", list(range(n))),
        {
            "id": "each",
            "after": ["src"],
            "map": "nodes.src.output",
            "tool": "brittle",
            "args": {"value": "{{ item }}", "key": "each"},
            **extra,
        },
        const("total", "{{ nodes.each.output | sum }}", ["each"]),
    )


async def test_a_map_redrive_reruns_only_the_failed_item_and_outputs_the_whole_list(
    harness: Harness, broken: set[str]
) -> None:
    broken.add("each:3")
    n = 8
    run = await harness.run(brittle_map(n, max_concurrency=2))
    assert run.status == RunStatus.FAILED
    before = await harness.nodes(run.run_id)
    assert before["each[3]"].status == S.FAILED
    succeeded = {i for i in range(n) if before[f"each[{i}]"].status == S.SUCCEEDED}
    assert 1 in succeeded, "item 1 runs before item 3 in their lane"

    broken.clear()
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven
    assert "each[3]" in again and "each" in again and "src" not in again
    assert not {f"each[{i}]" for i in succeeded} & set(again)
    run = await harness.wait(run.run_id)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs == {"total": sum(range(n))}
    nodes = await harness.nodes(run.run_id)
    assert nodes["each"].output == list(range(n))
    assert harness.calls["src"] == 1
    assert harness.calls["each:3"] == 2
    for i in succeeded:
        assert harness.calls[f"each:{i}"] == 1, f"item {i} succeeded: it is not run again"
    assert all(harness.calls[f"each:{i}"] >= 1 for i in range(n))
    assert all(nodes[f"each[{i}]"].status == S.SUCCEEDED for i in range(n))
    assert sum(run.counts.values()) == run.node_count == len(nodes) == run.counts["succeeded"]


async def test_a_map_whose_expression_failed_expands_when_redriven(
    harness: Harness, broken: set[str]
) -> None:
    broken.add("src:[1, 2]")
    document = graph(
        {
            "id": "src",
            "tool": "brittle",
            "args": {"value": [1, 2], "key": "src"},
            "on_error": "continue",
        },
        {
            "id": "each",
            "after": ["src"],
            "map": "nodes.src.output",
            "tool": "brittle",
            "args": {"value": "{{ item }}", "key": "each"},
        },
    )
    run = await harness.run(document)
    assert run.status == RunStatus.FAILED
    nodes = await harness.nodes(run.run_id)
    assert nodes["each"].error is not None and nodes["each"].error.type == "ExpansionError"

    broken.clear()
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and set(again) == {"src", "each"}
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"each": [1, 2]}
    assert (harness.calls["each:1"], harness.calls["each:2"]) == (1, 1)


async def test_a_loop_redrive_reruns_the_failed_iteration_and_goes_on(
    harness: Harness, broken: set[str]
) -> None:
    broken.add("count:2")
    run = await harness.run(
        graph(
            {
                "id": "count",
                "loop": {"until": "output >= 3", "max_iterations": 5},
                "tool": "brittle",
                "args": {"value": "{{ loop.iteration }}", "key": "count"},
            },
            const("final", "{{ nodes.count.output }}", ["count"]),
        )
    )
    assert run.status == RunStatus.FAILED

    broken.clear()
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and set(again) == {"count", "count@2", "final"}
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"final": 3}
    assert [harness.calls[f"count:{k}"] for k in (1, 2, 3)] == [1, 2, 1]
    nodes = await harness.nodes(run.run_id)
    assert [nodes[f"count@{k}"].output for k in (1, 2, 3)] == [1, 2, 3]
    assert "count@4" not in nodes


def brittle_research(**extra: Any) -> dict[str, Any]:
    return {
        "id": "research",
        "nodes": [
            {"id": "search", "tool": "brittle", "args": {"value": "{{ item }}", "key": "search"}},
            {
                "id": "summarize",
                "after": ["search"],
                "tool": "brittle",
                "args": {"value": "{{ nodes.search.output }}!", "key": "sum"},
            },
        ],
        **extra,
    }


async def test_a_subgraph_redrive_reruns_its_inner_nodes_that_did_not_succeed(
    harness: Harness, broken: set[str]
) -> None:
    broken.add("sum:a!")
    body = brittle_research()
    body["nodes"][0]["args"]["value"] = "a"
    run = await harness.run(
        graph(body, const("after", "{{ nodes.research.output }}", ["research"]))
    )
    assert run.status == RunStatus.FAILED

    broken.clear()
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and set(again) == {"research", "research/summarize", "after"}
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"after": "a!"}
    assert (harness.calls["search:a"], harness.calls["sum:a!"]) == (1, 2)


async def test_a_mapped_subgraph_redrive_reruns_inside_the_failed_item_only(
    harness: Harness, broken: set[str]
) -> None:
    broken.add("sum:b!")
    run = await harness.run(
        graph(brittle_research(map="input.topics", max_concurrency=2)),
        {"topics": ["a", "b", "c", "d"]},
    )
    assert run.status == RunStatus.FAILED
    before = await harness.nodes(run.run_id)
    kept = {i for i in before if before[i].status == S.SUCCEEDED}

    broken.clear()
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and not kept & set(again)
    assert {"research", "research[1]", "research[1]/summarize"} <= set(again)
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"research": ["a!", "b!", "c!", "d!"]}
    assert harness.calls["search:b"] == 1 and harness.calls["sum:b!"] == 2
    assert harness.calls["search:a"] == harness.calls["sum:a!"] == 1


async def test_a_1000_item_map_cancelled_mid_way_runs_only_its_unfinished_items_when_redriven(
    harness: Harness,
) -> None:
    n = 1000
    started = await harness.start(
        graph(
            {
                "id": "each",
                "map": "input.things",
                "max_concurrency": 4,
                "tool": "hold",
                "args": {"key": "each", "value": "{{ item }}"},
            },
        ),
        {"things": list(range(n))},
    )
    await harness.until(
        started.run_id, lambda nodes: sum(1 for r in nodes.values() if r.status == S.RUNNING) == 4
    )
    assert await harness.engine.cancel(started.run_id)
    harness.release("each")
    run = await harness.wait(started.run_id, timeout=120)
    assert run.status == RunStatus.CANCELLED
    await harness.until(
        run.run_id, lambda nodes: not any(r.status == S.RUNNING for r in nodes.values())
    )
    assert harness.calls["each"] == 4

    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and len(again) == n - 4 + 1  # the cancelled items and the map
    run = await harness.wait(run.run_id, timeout=300)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"each": list(range(n))}
    assert harness.calls["each"] == n, "every item ran exactly once over both drives"
    assert sum(run.counts.values()) == run.node_count == n + 1 == run.counts["succeeded"]


async def test_a_rejected_approval_asks_again_when_redriven(harness: Harness) -> None:
    document = graph(
        const("draft", "v1"),
        const("review", "{{ nodes.draft.output }}", ["draft"], approval={"message": "ok?"}),
        const("publish", "{{ nodes.review.output.payload }}", ["review"]),
    )
    started = await harness.start(document)
    await harness.until(started.run_id, lambda nodes: nodes["review"].status == S.WAITING_APPROVAL)
    await harness.engine.decide_approval(started.run_id, "review", "rejected", "alice", "no")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.FAILED

    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and set(again) == {"review", "publish"}
    await harness.until(run.run_id, lambda nodes: nodes["review"].status == S.WAITING_APPROVAL)
    await harness.engine.decide_approval(run.run_id, "review", "approved", "alice")
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"publish": "v1"}
    assert harness.calls["draft"] == 1 and harness.calls["review"] == 2


async def test_a_timed_out_approval_asks_again_when_redriven(harness: Harness) -> None:
    document = graph(
        const("review", "v1", approval={"message": "ok?", "timeout_s": 1}),
        const("publish", "{{ nodes.review.output.payload }}", ["review"]),
    )
    run = await harness.run(document)
    assert run.status == RunStatus.FAILED

    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and set(again) == {"review", "publish"}
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.FAILED, "nobody decided this time either"
    review = (await harness.nodes(run.run_id))["review"]
    assert review.error is not None and review.error.type == "ApprovalTimeout"
    assert harness.calls["review"] == 2, "it did its work and asked again"


async def test_a_repeated_redrive_of_a_grown_run_changes_nothing_more(
    harness: Harness, broken: set[str]
) -> None:
    broken.add("each:1")
    run = await harness.run(brittle_map(3))
    broken.clear()
    first, second = await asyncio.gather(
        harness.engine.redrive(run.run_id), harness.engine.redrive(run.run_id)
    )
    assert sorted([first[0], second[0]]) == [False, True]
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert harness.calls["each:1"] == 2
    with pytest.raises(RedriveConflict):
        await harness.engine.redrive(run.run_id)


async def test_a_grown_run_redrive_cut_short_is_finished_by_another(
    harness: Harness, broken: set[str]
) -> None:
    """A crash after the items and the map were reset but before the run was set running
    leaves a failed run with the map back in expanded: nothing moves, and the next redrive
    finishes the job on the same arrivals."""
    broken.add("each:1")
    run = await harness.run(brittle_map(3))
    store: Any = harness.store
    inner = getattr(store, "_inner", store)
    original = type(inner).redrive_run

    async def resets_only(self: Any, run_id: str, resets: Any, now: float) -> bool:
        await original(self, run_id, resets, now)
        await self.set_run_status(run_id, (RunStatus.RUNNING,), RunStatus.FAILED, now)
        raise ConnectionError("died before the run was written")

    type(inner).redrive_run = resets_only
    try:
        with pytest.raises(ConnectionError):
            await harness.engine.redrive(run.run_id)
    finally:
        type(inner).redrive_run = original
    cut_short = await harness.nodes(run.run_id)
    assert cut_short["each"].status == S.EXPANDED
    assert (cut_short["each[1]"].status, cut_short["each[1]"].attempt) == (S.READY, 1)
    broken.clear()
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and {"each", "each[1]"} <= set(again)
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"total": 3}
    assert harness.calls["each:1"] == 2 and harness.calls["each:0"] == 1


async def test_an_item_finishing_while_the_map_is_redriven_still_releases_its_lane(
    harness: Harness,
) -> None:
    """Item 0 is still running when the plan is made (its lane's next item, 2, waits for
    it) and finishes before the map is back in expanded, so its own arrival released
    nothing: the redrive sends its node-finished again once the run is running."""
    failing = {1}

    @harness.tools.tool
    async def mixed(value: int) -> int:
        harness.calls[f"mixed:{value}"] += 1
        if value == 0:
            await harness.gates["slow"].wait()
        if value in failing:
            raise ValueError(f"{value} is broken")
        return value

    document = graph(
        {
            "id": "each",
            "map": "input.numbers",
            "max_concurrency": 2,
            "tool": "mixed",
            "args": {"value": "{{ item }}"},
        }
    )
    started = await harness.start(document, {"numbers": [0, 1, 2, 3]})
    await harness.until_run(started.run_id, lambda r: r.status == RunStatus.FAILED)
    await harness.until(started.run_id, lambda n: n["each[3]"].status == S.CANCELLED)
    run = started
    nodes = await harness.nodes(run.run_id)
    assert nodes["each[0]"].status == S.RUNNING
    failing.clear()

    store: Any = harness.store
    inner = getattr(store, "_inner", store)
    original = type(inner).redrive_run

    async def after_the_straggler(self: Any, run_id: str, resets: Any, now: float) -> bool:
        harness.release("slow")

        async def arrived() -> bool:
            nodes = await harness.nodes(run_id)
            return nodes["each[0]"].status == S.SUCCEEDED and (
                await harness.store.get_arrival_count(run_id, "each") == 1
            )

        await harness.eventually(arrived)
        return bool(await original(self, run_id, resets, now))

    type(inner).redrive_run = after_the_straggler
    try:
        redriven, again = await harness.engine.redrive(run.run_id)
    finally:
        type(inner).redrive_run = original
    assert redriven and "each[0]" not in again and "each[2]" in again
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"each": [0, 1, 2, 3]}
    assert [harness.calls[f"mixed:{i}"] for i in range(4)] == [1, 2, 1, 1]
