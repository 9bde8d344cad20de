"""Contract: reads are bounded by what is asked. A run's nodes come in pages, a status
check or a listing never reads the graph or the input, and runs are listed by creation
time (their ids are random). Same tests, every backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from agentgraph.core.records import NodeRecord, NodeState
from agentgraph.core.status import NodeStatus, RunStatus

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


async def test_a_join_reads_its_parents_statuses_and_only_the_outputs_its_condition_names(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent's output may be megabytes (chunked across documents in Firestore): the
    decision of a join needs its parents' statuses, and a `when` the outputs it reads."""
    store = harness.engine.store
    outputs_read: list[str] = []
    get_outputs = store.get_outputs

    async def get_outputs_noted(run_id: str, node_ids: Sequence[str]) -> dict[str, NodeRecord]:
        outputs_read.extend(node_ids)
        return await get_outputs(run_id, node_ids)

    monkeypatch.setattr(store, "get_outputs", get_outputs_noted)
    after = ["big", "small"]
    document = {
        "name": "joins",
        "nodes": [
            {"id": "big", "tool": "blob", "args": {"size": 1_500_000}},
            {"id": "small", "tool": "hold", "args": {"key": "small", "value": 1}},
            {"id": "join", "tool": "const", "args": {"value": 2, "key": "join"}, "after": after},
            {
                "id": "gated",
                "tool": "const",
                "args": {"value": 3, "key": "gated"},
                "after": after,
                "when": "nodes.small.output == 1",
            },
            {
                "id": "never",
                "tool": "const",
                "args": {"key": "never"},
                "after": after,
                "when": "nodes.small.output == 2",
            },
        ],
    }
    started = await harness.start(document)
    # `small` finishes last: its arrival decides the joins, whose other parent is `big`.
    await harness.until(started.run_id, lambda n: n["big"].status == NodeStatus.SUCCEEDED)
    harness.release("small")
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    statuses = {n: nodes[n].status for n in ("join", "gated", "never")}
    assert statuses == {
        "join": NodeStatus.SUCCEEDED,
        "gated": NodeStatus.SUCCEEDED,
        "never": NodeStatus.SKIPPED,
    }
    assert "big" not in outputs_read

    states = await harness.store.get_statuses(run.run_id, ["big", "never", "no-such-node"])
    assert states == {
        "big": NodeState(NodeStatus.SUCCEEDED),
        "never": NodeState(NodeStatus.SKIPPED, nodes["never"].skip_reason),
    }
    assert nodes["never"].skip_reason
