"""Contract: reads are bounded by what is asked. A run's nodes come in pages, a status
check or a listing never reads the graph or the input, and runs are listed by creation
time (their ids are random). Same tests, every backend."""

from __future__ import annotations

from typing import Any

from agentgraph.core.status import RunStatus

from .conftest import Harness


def _chain(width: int) -> dict[str, Any]:
    nodes = [
        {"id": f"n{i}", "tool": "const", "args": {"value": i, "key": f"n{i}"}} for i in range(width)
    ]
    return {"name": "reads", "input": {"type": "object"}, "nodes": nodes}


async def test_a_run_s_nodes_come_in_pages_in_order_and_the_last_page_says_it_is_last(
    harness: Harness,
) -> None:
    run = await harness.run(_chain(7), {"x": 1})
    everything = [n.node_id for n in await harness.store.list_nodes(run.run_id)]
    pages, after = [], None
    while True:
        page = await harness.store.list_nodes_page(run.run_id, limit=3, after=after)
        pages.append([n.node_id for n in page.nodes])
        if page.next_after is None:
            break
        after = page.next_after
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [n for p in pages for n in p] == everything
    exact = await harness.store.list_nodes_page(run.run_id, limit=7)
    assert len(exact.nodes) == 7 and exact.next_after is None


async def test_a_run_summary_has_status_counts_and_outputs_but_not_the_graph_or_input(
    harness: Harness,
) -> None:
    run = await harness.run(_chain(2), {"big": "x" * 1000})
    full = await harness.store.get_run(run.run_id)
    summary = await harness.store.get_run_summary(run.run_id)
    assert full is not None and summary is not None
    assert full.input == {"big": "x" * 1000} and full.graph
    assert summary.graph == {} and summary.input is None
    assert summary.status == RunStatus.SUCCEEDED
    assert (summary.outputs, summary.counts, summary.node_count, summary.usage) == (
        full.outputs,
        full.counts,
        full.node_count,
        full.usage,
    )
    assert await harness.store.get_run_summary("no-such-run") is None


async def test_runs_are_listed_newest_first_by_creation_time_not_by_id(
    harness: Harness,
) -> None:
    for run_id in ("zz-first", "aa-second", "mm-third"):
        started = await harness.start(_chain(1), {}, run_id=run_id)
        await harness.wait(started.run_id)
    listed = await harness.store.list_runs()
    assert [r.run_id for r in listed] == ["mm-third", "aa-second", "zz-first"]
    assert all(r.graph == {} and r.input is None for r in listed)
    assert [r.run_id for r in await harness.store.list_runs(limit=2)] == ["mm-third", "aa-second"]
