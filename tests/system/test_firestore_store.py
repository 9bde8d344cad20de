"""FirestoreStore on the Firestore emulator: each transition's conditions, the fan-in,
large values, big runs, the sweeper's queries, and the operations a node costs.

Every test gets its own emulator project (a clean database) and its own AsyncClient.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from agentgraph.backends.gcp.firestore_docs import node_doc
from agentgraph.backends.gcp.firestore_store import FirestoreStore
from agentgraph.core import names
from agentgraph.core.errors import ChunkCorrupt, IdempotencyConflict
from agentgraph.core.records import NodeError, NodeRecord, NodeState, Outcome, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus

pytestmark = pytest.mark.emulator

S = NodeStatus
_log = logging.getLogger(__name__)


@pytest.fixture
def store(isolated_firestore: Any) -> FirestoreStore:
    return FirestoreStore(isolated_firestore)


def make_run(
    run_id: str,
    nodes: dict[str, tuple[NodeStatus, Sequence[str]]],
    *,
    now: float | None = None,
    **run_fields: Any,
) -> tuple[RunRecord, list[NodeRecord]]:
    """A run whose nodes start in the given statuses, `{id: (status, parents)}`."""
    now = time.time() if now is None else now
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for node_id, (_, parents) in nodes.items():
        for parent in parents:
            children[parent].append(node_id)
    records = [
        NodeRecord(run_id, node_id, status, list(parents), children[node_id])
        for node_id, (status, parents) in nodes.items()
    ]
    counts = Counter(status.value for status, _ in nodes.values())
    run = RunRecord(
        run_id=run_id,
        graph_name="test",
        graph=run_fields.pop("graph", {"name": "test", "nodes": [{"id": n} for n in nodes]}),
        input=run_fields.pop("input", None),
        status=RunStatus.RUNNING,
        created_at=now,
        started_at=now,
        node_count=len(nodes),
        counts=dict(counts),
        **run_fields,
    )
    return run, records


async def assert_counts_match_nodes(store: FirestoreStore, run_id: str) -> None:
    run = await store.get_run(run_id)
    assert run is not None
    actual = Counter(n.status.value for n in await store.list_nodes(run_id))
    assert {k: v for k, v in run.counts.items() if v} == dict(actual)


# ---- claim, finish, retry, requeue -------------------------------------------------------


async def test_a_second_claim_of_the_same_attempt_gets_nothing_until_the_lease_expires(
    store: FirestoreStore,
) -> None:
    run, nodes = make_run("r1", {"a": (S.READY, [])})
    await store.create_run(run, nodes)
    now = time.time()
    first = await store.claim_node("r1", "a", 1, now, now + 30)
    assert first is not None and first.status == S.RUNNING and first.executions == 1
    assert await store.claim_node("r1", "a", 1, now + 1, now + 31) is None
    assert await store.claim_node("r1", "a", 2, now + 1, now + 31) is None
    taken = await store.claim_node("r1", "a", 1, now + 60, now + 90)
    assert taken is not None and taken.executions == 2 and taken.lease_until == now + 90
    events = [e for e in await store.list_events("r1") if e.node_id == "a"]
    assert [e.message for e in events] == [None, "lease expired; taken over"]
    await assert_counts_match_nodes(store, "r1")


async def test_finish_applies_only_to_the_running_attempt_and_adds_usage_once(
    store: FirestoreStore,
) -> None:
    run, nodes = make_run("r1", {"a": (S.READY, [])})
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.claim_node("r1", "a", 1, now, now + 30)
    done = Outcome(S.SUCCEEDED, output={"b": [1, [2]], "a": None}, usage=Usage(3, 4, calls=1))
    assert not await store.finish_node("r1", "a", 2, done, now + 1)
    assert await store.finish_node("r1", "a", 1, done, now + 1)
    assert not await store.finish_node("r1", "a", 1, done, now + 2)
    node = await store.get_node("r1", "a")
    assert node is not None and node.status == S.SUCCEEDED and node.duration_ms == 1000
    assert node.output == {"b": [1, [2]], "a": None}  # arrays of arrays, key order kept
    assert list(node.output) == ["b", "a"]
    run_after = await store.get_run("r1")
    assert run_after is not None and run_after.usage.input_tokens == 3
    assert run_after.usage.calls == 1
    await assert_counts_match_nodes(store, "r1")


async def test_finish_from_another_process_reads_the_node_instead_of_the_claims_memory(
    store: FirestoreStore,
) -> None:
    run, nodes = make_run("r1", {"a": (S.READY, [])})
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.claim_node("r1", "a", 1, now, now + 30)
    await store.set_partial("r1", "a", 1, "so far")
    other = FirestoreStore(store.client)
    assert await other.finish_node("r1", "a", 1, Outcome(S.SUCCEEDED, output="x"), now + 1)
    # The claimer's remembered state is stale now: its precondition fails, it re-reads.
    assert not await store.finish_node("r1", "a", 1, Outcome(S.FAILED), now + 2)
    node = await store.get_node("r1", "a")
    assert node is not None and node.output == "x" and node.partial is None


async def test_a_retry_moves_to_the_next_attempt_exactly_once(store: FirestoreStore) -> None:
    run, nodes = make_run("r1", {"a": (S.READY, [])})
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.claim_node("r1", "a", 1, now, now + 30)
    error = NodeError("Timeout", "slow", True, None, 1)
    assert await store.schedule_retry("r1", "a", 1, error, now + 5, now, Usage(1, 1))
    assert not await store.schedule_retry("r1", "a", 1, error, now + 5, now, Usage(1, 1))
    assert not await store.requeue_node("r1", "a", 3, now + 5)
    assert await store.requeue_node("r1", "a", 2, now + 5)
    assert not await store.requeue_node("r1", "a", 2, now + 5)
    assert await store.claim_node("r1", "a", 1, now + 6, now + 36) is None
    claimed = await store.claim_node("r1", "a", 2, now + 6, now + 36)
    assert claimed is not None and claimed.attempt == 2 and claimed.error is not None
    kinds = [(e.kind, e.status, e.attempt) for e in await store.list_events("r1") if e.node_id]
    assert kinds == [
        ("node_status", "running", 1),
        ("retry", "retrying", 1),
        ("node_status", "ready", 2),
        ("node_status", "running", 2),
    ]
    assert (await store.get_run("r1")).usage.input_tokens == 1  # type: ignore[union-attr]
    await assert_counts_match_nodes(store, "r1")


async def test_resolve_happens_only_from_an_expected_state(store: FirestoreStore) -> None:
    run, nodes = make_run(
        "r1", {"p": (S.SUCCEEDED, []), "w": (S.WAITING, ["p"]), "x": (S.WAITING, ["p"])}
    )
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.resolve_node("r1", "w", S.READY, now)
    assert not await store.resolve_node("r1", "w", S.READY, now)
    assert not await store.resolve_node("r1", "w", S.SKIPPED, now, reason="nope")
    assert await store.resolve_node(
        "r1", "w", S.FAILED, now, reason="when: bad", expected=(S.READY,)
    )
    assert await store.resolve_node("r1", "x", S.SKIPPED, now, reason="condition_false")
    w, x = await store.get_node("r1", "w"), await store.get_node("r1", "x")
    assert w is not None and w.error is not None and w.error.type == "ConditionError"
    assert w.error.message == "when: bad" and w.finished_at == now
    assert x is not None and x.skip_reason == "condition_false"
    await assert_counts_match_nodes(store, "r1")


async def test_cancel_not_started_cancels_waiting_ready_and_retrying_nodes_only(
    store: FirestoreStore,
) -> None:
    statuses = [S.WAITING, S.RUNNING, S.READY, S.SUCCEEDED, S.RETRYING, S.WAITING]
    run, nodes = make_run("r1", {f"n{i}": (s, []) for i, s in enumerate(statuses)})
    await store.create_run(run, nodes)
    cancelled = await store.cancel_not_started("r1", time.time())
    assert cancelled == ["n0", "n2", "n4", "n5"]
    assert await store.cancel_not_started("r1", time.time()) == []
    nodes_after = {n.node_id: n for n in await store.list_nodes("r1")}
    assert nodes_after["n0"].skip_reason == "run_ended"
    assert nodes_after["n1"].status == S.RUNNING
    await assert_counts_match_nodes(store, "r1")


async def test_cancelling_300_nodes_spans_batches_and_keeps_counts(store: FirestoreStore) -> None:
    run, nodes = make_run("r1", {f"n{i:03d}": (S.WAITING, []) for i in range(300)})
    await store.create_run(run, nodes)
    assert len(await store.cancel_not_started("r1", time.time())) == 300
    await assert_counts_match_nodes(store, "r1")


async def test_run_status_changes_only_from_an_expected_status(store: FirestoreStore) -> None:
    run, nodes = make_run("r1", {"a": (S.SUCCEEDED, [])})
    await store.create_run(run, nodes)
    assert not await store.set_run_status("r1", (RunStatus.PENDING,), RunStatus.FAILED, 1.0)
    done = await store.set_run_status(
        "r1", (RunStatus.RUNNING,), RunStatus.SUCCEEDED, 2.0, outputs={"a": [[1]]}
    )
    assert done
    assert not await store.set_run_status(
        "r1", (RunStatus.RUNNING,), RunStatus.CANCELLED, 3.0, error={"message": "late"}
    )
    after = await store.get_run("r1")
    assert after is not None and after.status == RunStatus.SUCCEEDED
    assert after.outputs == {"a": [[1]]} and after.finished_at == 2.0 and after.error is None
    assert not await store.set_run_status("missing", (RunStatus.RUNNING,), RunStatus.FAILED, 1.0)


async def test_a_run_status_change_wins_against_a_stream_of_counter_updates(
    store: FirestoreStore,
) -> None:
    """The run document's update time moves with every node transition; the status
    change retries on its precondition instead of locking the document."""
    run, nodes = make_run("r1", {f"n{i}": (S.READY, []) for i in range(40)})
    await store.create_run(run, nodes)
    now = time.time()
    claims = [store.claim_node("r1", f"n{i}", 1, now, now + 30) for i in range(40)]
    change = store.set_run_status(
        "r1", (RunStatus.RUNNING,), RunStatus.CANCELLED, now, error={"message": "stop"}
    )
    results = await asyncio.gather(change, *claims)
    assert results[0] is True and all(results[1:])
    after = await store.get_run("r1")
    assert after is not None and after.status == RunStatus.CANCELLED
    assert after.counts["running"] == 40 and after.counts.get("ready", 0) == 0


# ---- creating runs -----------------------------------------------------------------------


async def test_the_same_idempotency_key_returns_the_first_run(store: FirestoreStore) -> None:
    first, nodes = make_run("r1", {"a": (S.READY, [])}, owner="alice", idempotency_key="k")
    assert (await store.create_run(first, nodes)).run_id == "r1"
    again, again_nodes = make_run("r2", {"a": (S.READY, [])}, owner="alice", idempotency_key="k")
    assert (await store.create_run(again, again_nodes)).run_id == "r1"
    bobs, bobs_nodes = make_run("r3", {"a": (S.READY, [])}, owner="bob", idempotency_key="k")
    assert (await store.create_run(bobs, bobs_nodes)).run_id == "r3"
    assert await store.get_run("r2") is None
    assert {r.run_id for r in await store.list_runs()} == {"r1", "r3"}
    assert [r.run_id for r in await store.list_runs(owner="alice")] == ["r1"]
    assert len([e for e in await store.list_events("r1") if e.kind == "run_status"]) == 1


class _DiesAfterHalfTheNodes(FirestoreStore):
    """A creator that dies after writing the key and half of the node documents."""

    async def _write_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> None:
        half = nodes[: len(nodes) // 2]
        await self._create_nodes(
            [
                (self._node_ref(run.run_id, n.node_id), node_doc(n, run, i))
                for i, n in enumerate(half)
            ]
        )
        raise ConnectionError("function instance died")


async def test_a_run_its_creator_left_half_written_is_finished_by_the_same_request(
    store: FirestoreStore,
) -> None:
    spec = {f"n{i}": (S.READY, []) for i in range(6)}
    run, nodes = make_run("r1", spec, owner="alice", idempotency_key="k", request_hash="h")
    with pytest.raises(ConnectionError):
        await _DiesAfterHalfTheNodes(store.client).create_run(run, nodes)
    assert await store.get_run("r1") is None
    # A node already written is never overwritten by the writer that finishes the run.
    await store.client.document("runs/r1/nodes/n0").update({"executions": 7})
    retry, retry_nodes = make_run("r2", spec, owner="alice", idempotency_key="k", request_hash="h")
    finished = await store.create_run(retry, retry_nodes)
    assert finished.run_id == "r1" and finished.node_count == 6
    written = await store.list_nodes("r1")
    assert [n.node_id for n in written] == [f"n{i}" for i in range(6)]
    assert [n.executions for n in written] == [7, 0, 0, 0, 0, 0]
    assert finished.counts == {"ready": 6}
    other, other_nodes = make_run("r3", spec, owner="bob", idempotency_key="j", request_hash="x")
    with pytest.raises(ConnectionError):
        await _DiesAfterHalfTheNodes(store.client).create_run(other, other_nodes)
    different, different_nodes = make_run(
        "r4", spec, owner="bob", idempotency_key="j", request_hash="y"
    )
    with pytest.raises(IdempotencyConflict):
        await store.create_run(different, different_nodes)


async def test_a_2000_node_run_is_created_with_its_run_document_last(
    store: FirestoreStore,
) -> None:
    spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {"root": (S.READY, [])}
    spec |= {f"n{i:04d}": (S.WAITING, ["root"]) for i in range(1999)}
    graph = {"name": "big", "nodes": [{"id": n, "prompt": "x" * 500} for n in spec]}
    run, nodes = make_run("big", spec, graph=graph)
    began = time.monotonic()
    await store.create_run(run, nodes)
    elapsed = time.monotonic() - began
    _log.warning("2000-node create_run: %.2f s, %s", elapsed, dict(store.stats))
    stored = await store.get_run("big")
    assert stored is not None and stored.graph == graph and stored.node_count == 2000
    assert len(await store.list_nodes("big")) == 2000
    assert stored.counts == {"ready": 1, "waiting": 1999}
    assert elapsed < 30


# ---- fan-in ------------------------------------------------------------------------------


async def test_fifty_parents_and_ten_duplicate_deliveries_complete_the_child_once(
    store: FirestoreStore,
) -> None:
    parents = [f"p{i:02d}" for i in range(50)]
    spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {p: (S.SUCCEEDED, []) for p in parents}
    spec["child"] = (S.WAITING, parents)
    run, nodes = make_run("r1", spec)
    await store.create_run(run, nodes)
    deliveries = parents + parents[:10]
    counts = await asyncio.gather(*(store.record_arrival("r1", "child", p) for p in deliveries))
    seen = [c for c in counts if c is not None]
    # Each count includes its own arrival and every one committed before it; arrivals
    # racing may see the same count, and the last to commit sees all 50.
    assert len(seen) == 50 and counts.count(None) == 10
    assert min(seen) >= 1 and max(seen) == 50
    assert await store.get_arrival_count("r1", "child") == 50
    child = await store.get_node("r1", "child")
    assert child is not None and child.status == S.WAITING  # no arrival writes the child


async def test_arrivals_that_succeeded_are_counted_apart_from_the_others(
    store: FirestoreStore,
) -> None:
    spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {
        "a": (S.SUCCEEDED, []),
        "b": (S.FAILED, []),
        "c": (S.SUCCEEDED, []),
        "child": (S.WAITING, ["a", "b", "c"]),
    }
    run, nodes = make_run("r1", spec)
    await store.create_run(run, nodes)
    await store.record_arrival("r1", "child", "a", 0, 3, succeeded=True)
    await store.record_arrival("r1", "child", "b", 1, 3)
    assert await store.count_succeeded_arrivals("r1", "child") == 1
    assert await store.record_arrival("r1", "child", "a", 0, 3, succeeded=True) is None
    await store.record_arrival("r1", "child", "c", 2, 3, succeeded=True)
    assert await store.count_succeeded_arrivals("r1", "child") == 2
    assert await store.get_arrival_count("r1", "child") == 3


async def test_of_arrivals_seeing_a_full_count_one_claims_the_decision(
    store: FirestoreStore,
) -> None:
    run, nodes = make_run("r1", {"a": (S.SUCCEEDED, []), "child": (S.WAITING, ["a"])})
    await store.create_run(run, nodes)
    # eight processes (a process's own callers wait for its claim in flight)
    others = [FirestoreStore(store.client) for _ in range(8)]
    claims = await asyncio.gather(*(s.claim_decision("r1", "child") for s in others))
    assert claims.count(True) == 1
    racing = await asyncio.gather(*(store.claim_decision("r1", "child") for _ in range(4)))
    assert not any(racing)  # the state is claimed already
    assert not await store.claim_decision("r1", "child")  # read after the winner's claim


async def test_arrivals_at_one_child_in_one_process_share_their_counts(
    store: FirestoreStore,
) -> None:
    """A burst of 200 arrivals needs far fewer than 200 counts, and each still sees
    itself and every arrival committed before it: the last sees all 200."""
    parents = [f"p{i:03d}" for i in range(200)]
    spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {p: (S.SUCCEEDED, []) for p in parents}
    spec["child"] = (S.WAITING, parents)
    run, nodes = make_run("r1", spec)
    await store.create_run(run, nodes)
    before = store.stats["reads"]
    counts = await asyncio.gather(*(store.record_arrival("r1", "child", p) for p in parents))
    assert max(c or 0 for c in counts) == 200 and all(c and c >= 1 for c in counts)
    assert store.stats["reads"] - before < 100
    assert await store.resolve_node("r1", "child", S.CANCELLED, time.time())
    assert not await store.claim_decision("r1", "child")  # decided: nothing to claim
    assert not await store.claim_decision("r1", "absent")
    # redriven back to waiting, the child is claimed afresh
    assert await store.set_run_status("r1", (RunStatus.RUNNING,), RunStatus.CANCELLED, 1.0)
    assert await store.redrive_run("r1", {"child": S.WAITING}, time.time())
    assert await store.claim_decision("r1", "child")


async def test_a_wide_childs_arrivals_are_counted_once_a_group_and_the_last_sees_all(
    store: FirestoreStore,
) -> None:
    """Told their positions, 30 arrivals (8 groups of at most 4) count only when they
    complete their group: no tally document gets more than 4 writes, the last of all
    sees 30, and duplicates are still None, with or without positions."""
    parents = [f"p{i:02d}" for i in range(30)]
    spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {p: (S.SUCCEEDED, []) for p in parents}
    spec["child"] = (S.WAITING, parents)
    run, nodes = make_run("r1", spec)
    await store.create_run(run, nodes)
    seen = []
    for i, p in enumerate(parents):  # one at a time: each count is what had committed
        seen.append(await store.record_arrival("r1", "child", p, i, len(parents)))
    assert seen[-1] == 30
    assert all(c is not None and c < 30 for c in seen[:-1])
    completes = [i for i in range(30) if i % 4 == 3 or i == 29]
    assert [seen[i] for i in completes] == [i + 1 for i in completes]  # counted: all so far
    tallies = store._node_ref("r1", "child").collection("tallies")
    sizes = {d.id: d.to_dict()["n"] async for d in tallies.stream()}
    assert sizes == {str(g): (4 if g < 7 else 2) for g in range(8)}
    assert await store.record_arrival("r1", "child", "p05", 5, 30) is None
    assert await store.record_arrival("r1", "child", "p05") is None
    assert await store.get_arrival_count("r1", "child") == 30


async def test_a_wide_childs_arrivals_racing_still_let_the_full_count_be_seen(
    store: FirestoreStore,
) -> None:
    parents = [f"p{i:03d}" for i in range(101)]
    spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {p: (S.SUCCEEDED, []) for p in parents}
    spec["child"] = (S.WAITING, parents)
    run, nodes = make_run("r1", spec)
    await store.create_run(run, nodes)
    counts = await asyncio.gather(
        *(store.record_arrival("r1", "child", p, i, 101) for i, p in enumerate(parents))
    )
    assert max(c or 0 for c in counts) == 101 and None not in counts


# ---- large values ------------------------------------------------------------------------


async def test_a_10_mb_output_round_trips_through_verified_chunks(store: FirestoreStore) -> None:
    run, nodes = make_run("r1", {"a": (S.READY, []), "b": (S.WAITING, ["a"])})
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.claim_node("r1", "a", 1, now, now + 30)
    # Multi-byte characters land on chunk boundaries; the JSON text is ~10 MB.
    output = {"text": "ä€𝄞x" * 1_000_000, "tail": list(range(10))}
    began = time.monotonic()
    assert await store.finish_node("r1", "a", 1, Outcome(S.SUCCEEDED, output=output), now + 1)
    written = time.monotonic() - began
    node = await store.get_node("r1", "a")
    elapsed = time.monotonic() - began
    _log.warning("10 MB output: write %.2f s, write+read %.2f s", written, elapsed)
    assert node is not None and node.output == output
    assert (await store.get_outputs("r1", ["a"]))["a"].output == output
    assert [n.output == output for n in await store.list_nodes("r1")] == [True, False]
    raw = (await store.client.document("runs/r1/nodes/a").get()).to_dict()
    assert raw["output_json"] is None and raw["output_ref"]["chunks"] >= 11
    chunk = store.client.document(f"runs/r1/nodes/a/chunks/{raw['output_ref']['prefix']}-0003")
    await chunk.update({"data": "tampered"})
    with pytest.raises(ChunkCorrupt):
        await store.get_node("r1", "a")


async def test_a_status_is_one_read_whatever_the_size_of_the_output(store: FirestoreStore) -> None:
    """What a join decides on: no chunk of the parent's output is read."""
    run, nodes = make_run("r1", {"a": (S.READY, []), "b": (S.WAITING, ["a"])})
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.claim_node("r1", "a", 1, now, now + 30)
    output = "x" * 3_000_000  # chunked across documents
    assert await store.finish_node("r1", "a", 1, Outcome(S.SUCCEEDED, output=output), now + 1)
    before = store.stats["reads"]
    states = await store.get_statuses("r1", ["a", "b", "missing"])
    assert store.stats["reads"] - before == 3  # one per node asked for, none for chunks
    assert states == {"a": NodeState(S.SUCCEEDED), "b": NodeState(S.WAITING)}
    before = store.stats["reads"]
    assert (await store.get_outputs("r1", ["a"]))["a"].output == output
    assert store.stats["reads"] - before > 1  # the node and its chunks


async def test_a_large_input_and_graph_are_chunked_on_the_run(store: FirestoreStore) -> None:
    big_input = {"code": "é" * 2_000_000}
    graph = {"name": "g", "nodes": [{"id": "a", "prompt": "y" * 700_000}]}
    run, nodes = make_run("r1", {"a": (S.READY, [])}, input=big_input, graph=graph)
    await store.create_run(run, nodes)
    stored = await store.get_run("r1")
    assert stored is not None and stored.input == big_input and stored.graph == graph
    raw = (await store.client.document("runs/r1").get()).to_dict()
    assert raw["input_ref"] is not None and raw["input_json"] is None
    outputs = {"a": "z" * 950_000}
    assert await store.set_run_status(
        "r1", (RunStatus.RUNNING,), RunStatus.SUCCEEDED, 1.0, outputs=outputs
    )
    assert (await store.get_run("r1")).outputs == outputs  # type: ignore[union-attr]


# ---- the run's counts: derived from the nodes, stored when the run ends -----------------


async def test_node_transitions_never_write_the_run_document_yet_its_counts_stay_true(
    store: FirestoreStore,
) -> None:
    nodes_spec: dict[str, tuple[NodeStatus, Sequence[str]]] = {
        f"n{i}": (S.READY, []) for i in range(40)
    }
    run, nodes = make_run("r1", nodes_spec)
    await store.create_run(run, nodes)
    run_ref = store.client.collection(names.COLLECTION_RUNS).document("r1")
    written = (await run_ref.get()).update_time
    now = time.time()
    await asyncio.gather(*(store.claim_node("r1", f"n{i}", 1, now, now + 30) for i in range(40)))
    summary = await store.get_run_summary("r1")
    assert summary is not None and summary.counts == {"running": 40}
    spent = Usage(input_tokens=2, cost_usd=0.001, calls=1)
    await asyncio.gather(
        *(
            store.finish_node("r1", f"n{i}", 1, Outcome(S.SUCCEEDED, i, usage=spent), now)
            for i in range(30)
        )
    )
    await store.finish_node("r1", "n30", 1, Outcome(S.FAILED, error=NodeError("E", "x")), now)
    assert (await run_ref.get()).update_time == written  # no transition wrote it
    full = await store.get_run("r1")
    summary = await store.get_run_summary("r1")
    assert full is not None and summary is not None
    assert full.counts == summary.counts == {"succeeded": 30, "failed": 1, "running": 9}
    assert (summary.usage.input_tokens, summary.usage.calls) == (60, 30)
    assert summary.usage.cost_usd == pytest.approx(0.03)
    await assert_counts_match_nodes(store, "r1")


async def test_a_run_that_ended_stores_its_counts_and_reads_as_one_document(
    store: FirestoreStore,
) -> None:
    """The end's write stores the counts and usage its nodes add up to (no write of its
    own); a redrive clears them: a running run is counted again."""
    run, nodes = make_run("r1", {"a": (S.READY, []), "b": (S.READY, [])})
    await store.create_run(run, nodes)
    now = time.time()
    spent = Usage(input_tokens=3, output_tokens=1, cost_usd=0.5, calls=1)
    await store.claim_node("r1", "a", 1, now, now + 30)
    await store.finish_node("r1", "a", 1, Outcome(S.SUCCEEDED, 1, usage=spent), now)
    await store.claim_node("r1", "b", 1, now, now + 30)
    await store.finish_node("r1", "b", 1, Outcome(S.FAILED, error=NodeError("E", "x")), now)
    writes, reads = store.stats["writes"], store.stats["reads"]
    assert await store.set_run_status("r1", (RunStatus.RUNNING,), RunStatus.FAILED, now)
    assert store.stats["writes"] - writes == 2  # the run document and its status line
    # its status, the nodes not succeeded, two usage sums; as some are: the unfinished
    # ones and each other final status (a successful run stops at the first four)
    assert store.stats["reads"] - reads == 1 + 1 + 2 + 1 + 3
    raw = (await store.client.document("runs/r1").get()).to_dict()
    assert raw["counts"] == {"succeeded": 1, "failed": 1} and raw["usage"]["calls"] == 1
    before = store.stats["reads"]
    summary = await store.get_run_summary("r1")
    assert summary is not None and summary.counts == {"succeeded": 1, "failed": 1}
    assert (summary.usage.input_tokens, summary.usage.cost_usd) == (3, 0.5)
    assert [r.counts for r in await store.list_runs()] == [summary.counts]
    assert store.stats["reads"] - before == 2  # one document each: nothing counted
    assert await store.redrive_run("r1", {"b": S.READY}, now + 1)
    raw = (await store.client.document("runs/r1").get()).to_dict()
    assert raw["status"] == "running" and raw["counts"] is None and raw["usage"] is None
    again = await store.get_run_summary("r1")
    assert again is not None and again.counts == {"succeeded": 1, "ready": 1}
    assert again.usage.calls == 1  # the nodes keep what they spent


async def test_a_run_ending_with_a_node_still_running_stores_no_counts(
    store: FirestoreStore,
) -> None:
    """A cancelled run's running node ends later; its counts stay derived, so true."""
    run, nodes = make_run("r1", {"a": (S.READY, []), "b": (S.WAITING, [])})
    await store.create_run(run, nodes)
    now = time.time()
    await store.claim_node("r1", "a", 1, now, now + 30)
    assert await store.set_run_status("r1", (RunStatus.RUNNING,), RunStatus.CANCELLED, now)
    await store.cancel_not_started("r1", now)
    await store.finish_node("r1", "a", 1, Outcome(S.SUCCEEDED, 1), now + 1)
    raw = (await store.client.document("runs/r1").get()).to_dict()
    assert raw["counts"] is None
    summary = await store.get_run_summary("r1")
    assert summary is not None and summary.counts == {"succeeded": 1, "cancelled": 1}
    assert await store.get_run_summary("r1", counts=False) is not None


async def test_300_nodes_ending_at_once_are_counted_exactly_even_while_they_end(
    store: FirestoreStore,
) -> None:
    """No counter to lose an increment: counts and usage come from the node documents,
    and a read while they end sees one instant (every count at the run's read time)."""
    width = 300
    run, nodes = make_run("r1", {f"n{i:03d}": (S.READY, []) for i in range(width)})
    await store.create_run(run, nodes)
    now = time.time()
    await asyncio.gather(
        *(store.claim_node("r1", f"n{i:03d}", 1, now, now + 60) for i in range(width))
    )
    spent = Usage(input_tokens=2, output_tokens=1, cost_usd=0.001, calls=1)
    seen: list[dict[str, int]] = []

    async def end(i: int) -> None:
        await store.finish_node("r1", f"n{i:03d}", 1, Outcome(S.SUCCEEDED, i, usage=spent), now)

    async def read_while_ending() -> None:
        for _ in range(5):
            summary = await store.get_run_summary("r1")
            assert summary is not None
            seen.append(summary.counts)

    await asyncio.gather(read_while_ending(), *(end(i) for i in range(width)))
    assert all(sum(counts.values()) == width for counts in seen), seen
    assert {s for counts in seen for s in counts} <= {"running", "succeeded"}
    final = await store.get_run_summary("r1")
    assert final is not None and final.counts == {"succeeded": width}
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2 * width, width)
    assert (final.usage.calls, final.usage.cost_usd) == (width, pytest.approx(0.3))
    assert await store.count_nodes("r1", [S.RUNNING, S.READY]) == 0
    assert await store.count_nodes("r1", [S.SUCCEEDED]) == width


# ---- events ------------------------------------------------------------------------------


async def test_events_come_back_in_commit_order_and_after_skips_the_seen_ones(
    store: FirestoreStore,
) -> None:
    run, nodes = make_run("r1", {"a": (S.READY, []), "b": (S.WAITING, ["a"])})
    await store.create_run(run, nodes)
    now = time.time()
    await store.claim_node("r1", "a", 1, now, now + 30)
    await store.finish_node("r1", "a", 1, Outcome(S.SUCCEEDED, output=1), now)
    await store.resolve_node("r1", "b", S.READY, now)
    events = await store.list_events("r1")
    assert [(e.node_id, e.status) for e in events] == [
        (None, "running"),
        ("a", "running"),
        ("a", "succeeded"),
        ("b", "ready"),
    ]
    seqs = [e.seq for e in events]
    assert all(isinstance(s, int) for s in seqs) and seqs == sorted(set(seqs))  # type: ignore[type-var]
    assert [e.status for e in await store.list_events("r1", after=seqs[1])] == [
        "succeeded",
        "ready",
    ]
    assert await store.list_events("r1", after=seqs[-1]) == []


async def test_ready_started_and_succeeded_lines_live_on_the_node_and_read_back_in_order(
    store: FirestoreStore,
) -> None:
    """A node made ready, started or succeeded writes no event document (the line rides
    on the node write); the timeline reads it back in place, also after a retry and with
    `after`."""
    run, nodes = make_run("r1", {"a": (S.WAITING, [])})
    await store.create_run(run, nodes)
    now = time.time()
    assert await store.resolve_node("r1", "a", S.READY, now)
    await store.claim_node("r1", "a", 1, now + 0.01, now + 30)
    error = NodeError("Flaky", "try again")
    await store.schedule_retry("r1", "a", 1, error, now + 0.02, now + 0.02)
    await store.requeue_node("r1", "a", 2, now + 0.03)
    await store.claim_node("r1", "a", 2, now + 0.03, now + 30)
    await store.finish_node("r1", "a", 2, Outcome(S.SUCCEEDED, output=1), now + 0.04)
    events = await store.list_events("r1")
    assert [(e.node_id, e.kind, e.status, e.attempt) for e in events] == [
        (None, "run_status", "running", None),
        ("a", "node_status", "ready", 1),
        ("a", "node_status", "running", 1),
        ("a", "retry", "retrying", 1),
        ("a", "node_status", "ready", 2),
        ("a", "node_status", "running", 2),
        ("a", "node_status", "succeeded", 2),
    ]
    documents = await store.client.collection("runs/r1/events").get()
    assert len(documents) == 2  # the run's start and the retry
    later = await store.list_events("r1", after=events[2].seq)
    assert [(e.status, e.attempt) for e in later] == [
        ("retrying", 1),
        ("ready", 2),
        ("running", 2),
        ("succeeded", 2),
    ]


# ---- concurrency and the sweeper ---------------------------------------------------------


async def test_counts_stay_consistent_under_duplicate_deliveries(store: FirestoreStore) -> None:
    run, nodes = make_run("r1", {f"n{i}": (S.READY, []) for i in range(20)})
    await store.create_run(run, nodes)
    now = time.time()

    async def deliver(node_id: str) -> bool:
        if await store.claim_node("r1", node_id, 1, now, now + 30) is None:
            return False
        outcome = Outcome(S.SUCCEEDED, output=node_id, usage=Usage(1, 1, calls=1))
        return await store.finish_node("r1", node_id, 1, outcome, now + 1)

    finished = await asyncio.gather(*(deliver(f"n{i % 20}") for i in range(60)))
    assert finished.count(True) == 20
    await assert_counts_match_nodes(store, "r1")
    after = await store.get_run("r1")
    assert after is not None and after.usage.calls == 20


async def test_stale_nodes_are_those_a_dead_function_left_in_running_runs(
    store: FirestoreStore,
) -> None:
    now = time.time()
    spec = {
        "lost_ready": (S.READY, []),
        "expired": (S.READY, []),
        "leased": (S.READY, []),
        "due": (S.READY, []),
        "fresh_ready": (S.WAITING, []),
    }
    for run_id in ("live", "ended"):
        run, nodes = make_run(run_id, spec, now=now - 100)
        await store.create_run(run, nodes)
        await store.claim_node(run_id, "expired", 1, now - 100, now - 10)
        await store.claim_node(run_id, "leased", 1, now - 100, now + 100)
        await store.claim_node(run_id, "due", 1, now - 100, now + 100)
        error = NodeError("Timeout", "t", True)
        await store.schedule_retry(run_id, "due", 1, error, now - 70, now - 100)
        await store.resolve_node(run_id, "fresh_ready", S.READY, now)
    await store.set_run_status("ended", (RunStatus.RUNNING,), RunStatus.FAILED, now)
    stale = await store.stale_nodes(now, grace_s=60)
    assert sorted((n.run_id, n.node_id) for n in stale) == [
        ("live", "due"),
        ("live", "expired"),
        ("live", "lost_ready"),
    ]


# ---- cost --------------------------------------------------------------------------------


async def test_a_node_on_the_success_path_costs_three_reads_and_four_writes(
    store: FirestoreStore,
) -> None:
    """claim 1 read + 1 write (the node: its timeline line rides on it), finish 0 + 1
    (the claim remembers the node; its `succeeded` line rides on it too), arrival 1 + 1
    (the arrival document, then the count: the child is not written), resolve 1 + 1: no
    transition writes the run document or any counter (the run's counts are derived from
    the nodes when read). (The engine records arrivals only at children with two or more
    parents.)"""
    run, nodes = make_run("r1", {"parent": (S.READY, []), "child": (S.WAITING, ["parent"])})
    await store.create_run(run, nodes)
    now = time.time()
    steps: dict[str, tuple[int, int]] = {}

    async def step(name: str, work: Any) -> Any:
        before = Counter(store.stats)
        result = await work
        delta = Counter(store.stats)
        delta.subtract(before)
        steps[name] = (delta["reads"], delta["writes"])
        return result

    await step("claim", store.claim_node("r1", "parent", 1, now, now + 30))
    await step("finish", store.finish_node("r1", "parent", 1, Outcome(S.SUCCEEDED, "o"), now))
    await step("arrival", store.record_arrival("r1", "child", "parent"))
    await step("resolve", store.resolve_node("r1", "child", S.READY, now))
    _log.warning("ops per step (reads, writes): %s", steps)
    assert steps == {
        "claim": (1, 1),
        "finish": (0, 1),
        "arrival": (1, 1),
        "resolve": (1, 1),
    }


def test_from_env_on_the_emulator_needs_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.ENV_FIRESTORE_EMULATOR, "127.0.0.1:1")
    monkeypatch.delenv(names.ENV_PROJECT, raising=False)
    with pytest.raises(ValueError, match=names.ENV_PROJECT):
        FirestoreStore.from_env()
    monkeypatch.setenv(names.ENV_PROJECT, "demo-x")
    assert FirestoreStore.from_env().client.project == "demo-x"
