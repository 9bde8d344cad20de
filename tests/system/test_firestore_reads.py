"""FirestoreStore on the Firestore emulator: reads bounded by what is asked. A status
check or a listing reads one document per run and never the chunks of a large input or
graph; a page of nodes reads that page (and one more node, to know whether it is last)."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.backends.gcp.firestore_store import FirestoreStore
from agentgraph.core.status import NodeStatus

from .test_firestore_store import make_run

pytestmark = pytest.mark.emulator


@pytest.fixture
def store(isolated_firestore: Any) -> FirestoreStore:
    return FirestoreStore(isolated_firestore)


def _reads(store: FirestoreStore) -> int:
    return store.stats["reads"]


async def test_a_summary_of_a_run_with_a_2_mib_input_never_reads_the_input(
    store: FirestoreStore,
) -> None:
    big = {"text": "x" * (2 * 1024 * 1024)}  # chunked: far over the run document's budget
    run, nodes = make_run("big", {"a": (NodeStatus.READY, [])}, input=big)
    await store.create_run(run, nodes)

    before = _reads(store)
    full = await store.get_run("big")
    assert full is not None and full.input == big
    assert _reads(store) - before > 1  # the input's chunks

    before = _reads(store)
    summary = await store.get_run_summary("big")
    assert summary is not None and summary.input is None and summary.graph == {}
    assert summary.status == full.status and summary.node_count == 1
    assert summary.counts == full.counts == {"ready": 1}
    # the run, then a count() per node status and two sum()s of usage over its 1 node
    assert _reads(store) - before == 1 + len(NodeStatus) + 2

    before = _reads(store)
    status = await store.get_run_summary("big", counts=False)
    assert status is not None and status.status == full.status and status.counts == {}
    assert _reads(store) - before == 1

    before = _reads(store)
    assert [r.run_id for r in await store.list_runs()] == ["big"]
    assert _reads(store) - before == 1 + len(NodeStatus) + 2


async def test_a_page_of_10_nodes_of_a_run_of_300_reads_11_nodes(store: FirestoreStore) -> None:
    run, nodes = make_run("wide", {f"n{i:03d}": (NodeStatus.READY, []) for i in range(300)})
    await store.create_run(run, nodes)

    before = _reads(store)
    page = await store.list_nodes_page("wide", limit=10)
    assert [n.node_id for n in page.nodes] == [f"n{i:03d}" for i in range(10)]
    assert _reads(store) - before == 11

    seen = [n.node_id for n in page.nodes]
    while page.next_after is not None:
        page = await store.list_nodes_page("wide", limit=100, after=page.next_after)
        seen += [n.node_id for n in page.nodes]
    assert seen == [n.node_id for n in nodes]
