"""The SQLite store's own guarantees: group commits that undo a failing transition
alone, a write lock held by another process never blocking the event loop, and the run's
counts and usage moved in SQL, the WAL checkpointed off the event loop, and older files
opened as they are."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from agentgraph.backends.local import SqliteStore, sqlite_tx
from agentgraph.backends.local import sqlite_rows as rows
from agentgraph.core import transitions
from agentgraph.core.records import NodeError, NodeRecord, Outcome, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus


async def _store_with_run(path: Path, ready: list[str]) -> SqliteStore:
    store = SqliteStore(path)
    nodes = [NodeRecord("r1", n, NodeStatus.READY, [], []) for n in ready]
    run = RunRecord(
        run_id="r1",
        graph_name="g",
        graph={"name": "g", "nodes": []},
        input=None,
        status=RunStatus.RUNNING,
        created_at=1.0,
        node_count=len(nodes),
        counts={"ready": len(nodes)},
    )
    await store.create_run(run, nodes)
    return store


async def test_a_failing_transition_in_a_group_commit_is_undone_alone(tmp_path: Path) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a", "b"])

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE nodes SET pool='broken' WHERE node_id='a'")
        raise ValueError("a bug half-way through a transition")

    try:
        a, bad, b = await asyncio.gather(
            store.claim_node("r1", "a", 1, 2.0, 100.0),
            store._tx(broken),
            store.claim_node("r1", "b", 1, 2.0, 100.0),
            return_exceptions=True,
        )
        assert isinstance(bad, ValueError)
        assert isinstance(a, NodeRecord) and a.status == NodeStatus.RUNNING
        assert isinstance(b, NodeRecord) and b.status == NodeStatus.RUNNING
        nodes = {n.node_id: n for n in await store.list_nodes("r1")}
        assert nodes["a"].pool == "default" and nodes["a"].status == NodeStatus.RUNNING
        run = await store.get_run("r1")
        assert run is not None and run.counts == {"ready": 0, "running": 2}
    finally:
        store.close()


async def test_another_process_holding_the_lock_never_blocks_the_event_loop(
    tmp_path: Path,
) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a"])
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        claim = asyncio.ensure_future(store.claim_node("r1", "a", 1, 2.0, 100.0))
        began = time.monotonic()
        for _ in range(10):  # by the first turn the claim has met the lock and handed off
            await asyncio.sleep(0)  # the sleep is the behaviour: the loop keeps turning
        # Ten turns of the loop took no lock wait (a blocked loop would take the 30 s
        # busy timeout), and the claim cannot end while the other process holds the lock.
        assert time.monotonic() - began < 5 and not claim.done()
        other.execute("COMMIT")
        record = await asyncio.wait_for(claim, timeout=10)
        assert record is not None and record.status == NodeStatus.RUNNING
    finally:
        other.close()
        store.close()


async def test_counts_and_usage_move_on_the_run_row(tmp_path: Path) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a"])
    try:
        await store.claim_node("r1", "a", 1, 2.0, 100.0)
        spent = Usage(input_tokens=3, output_tokens=4, cost_usd=0.1, calls=1)
        outcome = Outcome(NodeStatus.SUCCEEDED, output="x", usage=spent)
        assert await store.finish_node("r1", "a", 1, outcome, 3.0)
        assert not await store.finish_node("r1", "a", 1, outcome, 3.0)  # a duplicate
        run = await store.get_run("r1")
        assert run is not None
        assert run.counts == {"ready": 0, "running": 0, "succeeded": 1}
        assert run.usage == spent
        node = await store.get_node("r1", "a")
        assert node is not None and node.usage == spent and node.duration_ms == 1000
    finally:
        store.close()


async def test_the_graph_has_a_row_of_its_own_and_older_files_still_read(tmp_path: Path) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a"])
    conn = sqlite3.connect(tmp_path / "runs.db")
    try:
        assert conn.execute("SELECT graph FROM runs WHERE run_id='r1'").fetchone() == ("",)
        # A file written before run_graphs: the graph on the run row, no row of its own.
        conn.execute("UPDATE runs SET graph=? WHERE run_id='r1'", ('{"name": "old"}',))
        conn.execute("DELETE FROM run_graphs WHERE run_id='r1'")
        conn.commit()
    finally:
        conn.close()
    try:
        run = await store.get_run("r1")
        assert run is not None and run.graph == {"name": "old"}
        assert [r.run_id for r in await store.list_runs()] == ["r1"]
    finally:
        store.close()


async def test_a_file_from_before_runs_could_grow_gains_the_meta_column(tmp_path: Path) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a"])
    store.close()
    conn = sqlite3.connect(tmp_path / "runs.db")
    try:
        conn.execute("ALTER TABLE nodes DROP COLUMN meta")
        conn.commit()
    finally:
        conn.close()
    reopened = SqliteStore(tmp_path / "runs.db")
    try:
        added = NodeRecord(
            "r1", "m[0]", NodeStatus.READY, [], ["m"], meta={"bindings": {"item": 1}}
        )
        assert await reopened.add_instances("r1", [added], 2.0) == 1
        assert await reopened.add_instances("r1", [added], 3.0) == 0  # if absent only
        nodes = {n.node_id: n for n in await reopened.list_nodes("r1")}
        assert nodes["a"].meta is None and nodes["m[0]"].meta == {"bindings": {"item": 1}}
        run = await reopened.get_run("r1")
        assert run is not None and run.node_count == 2 and run.counts["ready"] == 2
    finally:
        reopened.close()


async def test_transitions_of_one_group_commit_move_counts_and_write_events_as_one_at_a_time(
    tmp_path: Path,
) -> None:
    """A group commit writes its counts once per run and its events together, before its
    COMMIT: the run row and the timeline are what transitions one at a time would leave,
    a status moved into and out of within the batch included (its key at 0)."""
    together = await _store_with_run(tmp_path / "together.db", ["a", "b"])
    alone = await _store_with_run(tmp_path / "alone.db", ["a", "b"])
    done = Outcome(NodeStatus.SUCCEEDED, output="x")
    try:
        await together.claim_node("r1", "a", 1, 2.0, 100.0)
        await asyncio.gather(
            together.finish_node("r1", "a", 1, done, 3.0),
            together.claim_node("r1", "b", 1, 3.0, 100.0),
        )
        await together.finish_node("r1", "b", 1, done, 4.0)
        await alone.claim_node("r1", "a", 1, 2.0, 100.0)
        await alone.finish_node("r1", "a", 1, done, 3.0)
        await alone.claim_node("r1", "b", 1, 3.0, 100.0)
        await alone.finish_node("r1", "b", 1, done, 4.0)
        runs = [await s.get_run("r1") for s in (together, alone)]
        assert runs[0] is not None and runs[1] is not None
        assert runs[0].counts == runs[1].counts == {"ready": 0, "running": 0, "succeeded": 2}
        timelines = [
            [(e.kind, e.node_id, e.status, e.at) for e in await s.list_events("r1")]
            for s in (together, alone)
        ]
        assert timelines[0] == timelines[1]
        assert [e[1:3] for e in timelines[0][1:]] == [
            ("a", "running"),
            ("a", "succeeded"),
            ("b", "running"),
            ("b", "succeeded"),
        ]
    finally:
        together.close()
        alone.close()


async def test_usage_finished_in_one_group_commit_sums_as_one_at_a_time(tmp_path: Path) -> None:
    """A group commit adds its transitions' usage in one UPDATE: the run's totals are the
    very ones UPDATEs one at a time leave, the cost rounded after every addition too."""
    names = [f"n{i}" for i in range(250)]  # more costs than one statement nests
    together = await _store_with_run(tmp_path / "together.db", names)
    alone = await _store_with_run(tmp_path / "alone.db", names)
    spent = [
        Usage(input_tokens=i, output_tokens=2 * i, cost_usd=0.1 + i * 1e-10, calls=1)
        for i in range(len(names))
    ]
    try:
        for store in (together, alone):
            await asyncio.gather(*(store.claim_node("r1", n, 1, 2.0, 100.0) for n in names))
        await asyncio.gather(
            *(
                together.finish_node("r1", n, 1, Outcome(NodeStatus.SUCCEEDED, usage=u), 3.0)
                for n, u in zip(names, spent, strict=True)
            )
        )
        for n, u in zip(names, spent, strict=True):
            await alone.finish_node("r1", n, 1, Outcome(NodeStatus.SUCCEEDED, usage=u), 3.0)
        runs = [await s.get_run("r1") for s in (together, alone)]
        assert runs[0] is not None and runs[1] is not None
        assert runs[0].usage == runs[1].usage
        assert runs[0].usage.calls == len(names)
        assert runs[0].usage.input_tokens == sum(range(len(names)))
        assert runs[0].counts == runs[1].counts == {"ready": 0, "running": 0, "succeeded": 250}
    finally:
        together.close()
        alone.close()


async def test_a_failing_transition_takes_none_of_its_counts_or_events_with_it(
    tmp_path: Path,
) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a", "b"])

    def broken(conn: sqlite3.Connection) -> None:
        node = rows.select_node(conn, "r1", "b")
        assert node is not None
        change = transitions.claim(node, 1, 2.0, 100.0)
        assert change is not None and rows.persist(conn, "r1", "b", change)
        raise ValueError("a bug after the transition was persisted")

    try:
        results = await asyncio.gather(
            store.claim_node("r1", "a", 1, 2.0, 100.0), store._tx(broken), return_exceptions=True
        )
        assert isinstance(results[1], ValueError)
        run = await store.get_run("r1")
        assert run is not None and run.counts == {"ready": 1, "running": 1}
        events = [(e.node_id, e.status) for e in await store.list_events("r1")][1:]
        assert events == [("a", "running")]
    finally:
        store.close()


async def test_a_node_record_reads_back_every_field_it_was_written_with(tmp_path: Path) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a"])
    try:
        claimed = await store.claim_node("r1", "a", 1, 2.0, 100.0)
        assert claimed is not None and claimed.executions == 1 and claimed.lease_until == 100.0
        spent = Usage(input_tokens=3, output_tokens=4, cost_usd=0.5, calls=1)
        outcome = Outcome(NodeStatus.SUCCEEDED, output={"k": [1, "é"]}, usage=spent, model="m")
        assert await store.finish_node("r1", "a", 1, outcome, 3.5)
        node = await store.get_node("r1", "a")
        assert node is not None
        assert (node.status, node.output, node.usage, node.model) == (
            NodeStatus.SUCCEEDED,
            {"k": [1, "é"]},
            spent,
            "m",
        )
        assert (node.started_at, node.finished_at, node.duration_ms) == (2.0, 3.5, 1500)
        assert node.error is None and node.meta is None and node.lease_until is None
        page = await store.list_nodes_page("r1", limit=1)
        assert page.nodes == [node]
    finally:
        store.close()


async def test_a_node_read_for_a_decision_holds_every_field_decisions_read(
    tmp_path: Path,
) -> None:
    store = await _store_with_run(tmp_path / "runs.db", ["a"])
    try:
        await store.add_instances(
            "r1", [NodeRecord("r1", "m[0]", NodeStatus.READY, [], ["m"], meta={"x": 1})], 1.5
        )
        for node_id in ("a", "m[0]"):
            assert await store.claim_node("r1", node_id, 1, 2.0, 100.0) is not None
        spent = Usage(input_tokens=3, output_tokens=4, cost_usd=0.5, calls=1)
        failed = NodeError("Boom", "no", True, None, 1)
        assert await store.schedule_retry("r1", "a", 1, failed, 9.0, 3.0, usage=spent)
        assert store._conn is not None
        for node_id in ("a", "m[0]"):
            full = await store.get_node("r1", node_id)
            read = rows.select_for_decision(store._conn, "r1", node_id)
            assert full is not None and read is not None
            for name in transitions.READS:
                assert getattr(read, name) == getattr(full, name), name
    finally:
        store.close()


async def test_the_wal_is_checkpointed_off_the_event_loop_every_so_many_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_tx, "CHECKPOINT_EVERY", 4)
    path = tmp_path / "runs.db"
    store = await _store_with_run(path, ["a", "b", "c", "d"])  # commit 1
    checkpoints: list[str] = []
    store._thread_conn.set_trace_callback(checkpoints.append)  # type: ignore[union-attr]
    try:
        await store.claim_node("r1", "a", 1, 2.0, 100.0)
        await store.claim_node("r1", "b", 1, 2.0, 100.0)
        assert store._conn is not None
        # The event loop's own connection never checkpoints: SQLite would, inside a
        # commit, fsyncing the file there.
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        await store.claim_node("r1", "c", 1, 2.0, 100.0)  # commit 4: the thread's turn
        await asyncio.get_running_loop().run_in_executor(store._executor, lambda: None)
        assert checkpoints == ["PRAGMA wal_checkpoint(PASSIVE)"]
        # The file itself holds the claims: a reader of the file alone sees them.
        copy = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            status = "SELECT status FROM nodes WHERE node_id='c'"
            assert copy.execute(status).fetchone() == ("running",)
        finally:
            copy.close()
    finally:
        store.close()


async def test_a_file_made_before_keeps_working_and_loses_its_status_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    older = sqlite3.connect(path)
    try:  # as made before: a status index, rowid arrivals, AUTOINCREMENT events, and
        # each node's arrival count kept on its row
        older.executescript(
            rows.SCHEMA.replace(") WITHOUT ROWID;", ");")
            .replace("seq INTEGER PRIMARY KEY,", "seq INTEGER PRIMARY KEY AUTOINCREMENT,")
            .replace(
                "pool TEXT NOT NULL,", "pool TEXT NOT NULL, arrivals INTEGER NOT NULL DEFAULT 0,"
            )
            .replace(
                "DROP INDEX IF EXISTS nodes_status;", "CREATE INDEX nodes_status ON nodes(status);"
            )
        )
    finally:
        older.close()
    store = await _store_with_run(path, ["a", "b"])
    try:
        assert store._conn is not None
        indexes = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
        assert "nodes_status" not in indexes and "sqlite_sequence" in indexes
        claimed = await store.claim_node("r1", "a", 1, 2.0, 100.0)
        assert claimed is not None and claimed.status == NodeStatus.RUNNING
        assert [e.status for e in await store.list_events("r1")][-1] == "running"
        assert await store.record_arrival("r1", "c", "a") == 1
        assert await store.record_arrival("r1", "c", "a") is None  # once per edge
        assert await store.record_arrival("r1", "c", "b") == 2
        assert await store.get_arrival_count("r1", "c") == 2
    finally:
        store.close()
