"""The Store port on SQLite: one file (or `:memory:`), real transactions.

Every method is a single `BEGIN IMMEDIATE … COMMIT` (`sqlite_tx.py`: connections and
group commit): a process killed at any line leaves the file at the last committed
transition, which is exactly what `agentgraph resume` continues from. WAL mode lets a
second process (`agentgraph show`) read while a run writes.

A node transition reads the node, asks `core.transitions` what to do, and persists the
answer guarded by the status and attempt it was decided on (`sqlite_rows.persist`); this
module holds no rule of the state machine, only where the records are.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentgraph.backends.local import sqlite_rows as rows
from agentgraph.backends.local.sqlite_tx import Transactions
from agentgraph.core import transitions
from agentgraph.core.records import (
    Event,
    NodeError,
    NodePage,
    NodeRecord,
    NodeState,
    Outcome,
    RunRecord,
    Step,
    Usage,
)
from agentgraph.core.status import NOT_STARTED, NodeStatus, RunStatus
from agentgraph.core.transitions import Change


class SqliteStore(Transactions):
    """Satisfies agentgraph.core.ports.Store."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        super().__init__(path, rows.SCHEMA)
        assert self._conn is not None
        columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(nodes)")}
        if "meta" not in columns:
            for statement in rows.MIGRATIONS:
                with contextlib.suppress(sqlite3.OperationalError):  # another process did
                    self._conn.execute(statement)

    async def _transition(
        self, run_id: str, node_id: str, decide: Callable[[NodeRecord], Change | None]
    ) -> NodeRecord | None:
        """Read, decide, persist, in one transaction; the node after the change, or None
        when the decision was to do nothing."""

        def work(conn: sqlite3.Connection) -> NodeRecord | None:
            node = rows.select_node(conn, run_id, node_id)
            change = None if node is None else decide(node)
            if node is None or change is None:
                return None
            if not rows.persist(conn, run_id, node_id, change):
                return None
            return rows.applied(node, change)

        return await self._tx(work)

    async def _transitioned(
        self,
        run_id: str,
        node_id: str,
        decide: Callable[[NodeRecord], Change | None],
        *,
        while_run_ended: bool = False,
    ) -> bool:
        """`_transition` for callers that only ask whether it happened (most of them):
        only what the decision reads is read, and the record after the change is not
        built. `while_run_ended`: nothing unless the run has ended, read in the same
        transaction (`Store.resolve_node`)."""

        def work(conn: sqlite3.Connection) -> bool:
            if while_run_ended:
                run = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,))
                found = run.fetchone()
                if found is None or not RunStatus(found[0]).terminal:
                    return False
            node = rows.select_for_decision(conn, run_id, node_id)
            change = None if node is None else decide(node)
            return change is not None and rows.persist(conn, run_id, node_id, change)

        return await self._tx(work)

    # ---- runs ------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> RunRecord:
        def work(conn: sqlite3.Connection) -> RunRecord:
            if run.idempotency_key is not None:
                row = conn.execute(
                    f"{rows.SELECT_RUNS} WHERE idempotency_key=? AND owner IS ?",
                    (run.idempotency_key, run.owner),
                ).fetchone()
                if row is not None:
                    return rows.run_record(row)
            rows.insert_run(conn, run)
            conn.executemany(rows.INSERT_NODE, rows.node_rows(run, nodes))
            rows.insert_event(
                conn,
                transitions.run_started(
                    run.run_id, run.graph_name, run.status, run.created_at, len(nodes)
                ),
            )
            return run

        return await self._tx(work)

    async def get_run(self, run_id: str, *, counts: bool = True) -> RunRecord | None:
        def work(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(f"{rows.SELECT_RUNS} WHERE runs.run_id=?", (run_id,)).fetchone()
            return rows.run_record(row) if row else None

        return await self._read(work)

    async def get_run_summary(self, run_id: str, *, counts: bool = True) -> RunRecord | None:
        def work(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(f"{rows.SELECT_SUMMARIES} WHERE run_id=?", (run_id,)).fetchone()
            return rows.run_summary(row) if row else None

        return await self._read(work)

    async def count_nodes(self, run_id: str, statuses: Sequence[NodeStatus]) -> int:
        run = await self.get_run_summary(run_id)
        return 0 if run is None else sum(run.counts.get(s.value, 0) for s in statuses)

    async def list_runs(self, owner: str | None = None, limit: int = 50) -> list[RunRecord]:
        def work(conn: sqlite3.Connection) -> list[RunRecord]:
            if owner is None:
                found = conn.execute(
                    f"{rows.SELECT_SUMMARIES} ORDER BY created_at DESC LIMIT ?", (limit,)
                )
            else:
                found = conn.execute(
                    f"{rows.SELECT_SUMMARIES} WHERE owner=? ORDER BY created_at DESC LIMIT ?",
                    (owner, limit),
                )
            return [rows.run_summary(r) for r in found]

        return await self._read(work)

    async def set_run_status(
        self,
        run_id: str,
        expected: Sequence[RunStatus],
        status: RunStatus,
        now: float,
        *,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return False
            current = RunStatus(row["status"])
            change = transitions.set_run_status(
                run_id, current, expected, status, now, outputs=outputs, error=error
            )
            return change is not None and rows.persist_run(conn, run_id, current, change)

        return await self._tx(work)

    # ---- nodes -----------------------------------------------------------------------

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None:
        return await self._read(lambda conn: rows.select_node(conn, run_id, node_id))

    async def list_nodes(self, run_id: str) -> list[NodeRecord]:
        def work(conn: sqlite3.Connection) -> list[NodeRecord]:
            found = conn.execute(
                f"SELECT {rows.NODE_COLUMNS} FROM nodes WHERE run_id=? ORDER BY seq", (run_id,)
            )
            return [rows.node_record(r) for r in found]

        return await self._read(work)

    async def list_nodes_page(
        self, run_id: str, *, limit: int, after: int | None = None
    ) -> NodePage:
        def work(conn: sqlite3.Connection) -> NodePage:
            found = conn.execute(
                f"SELECT {rows.NODE_COLUMNS}, seq FROM nodes WHERE run_id=? AND seq>? "
                "ORDER BY seq LIMIT ?",
                (run_id, -1 if after is None else after, limit + 1),
            ).fetchall()
            page = found[:limit]
            more = len(found) > limit
            return NodePage([rows.node_record(r) for r in page], page[-1]["seq"] if more else None)

        return await self._read(work)

    async def get_outputs(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeRecord]:
        def work(conn: sqlite3.Connection) -> dict[str, NodeRecord]:
            found = _named_nodes(conn, rows.NODE_COLUMNS, run_id, node_ids)
            return {row[1]: rows.node_record(row) for row in found}  # row[1]: node_id

        return await self._read(work) if node_ids else {}

    async def get_statuses(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeState]:
        def work(conn: sqlite3.Connection) -> dict[str, NodeState]:
            found = _named_nodes(conn, "node_id, status, skip_reason", run_id, node_ids)
            return {
                node_id: NodeState(NodeStatus(status), reason) for node_id, status, reason in found
            }

        return await self._read(work) if node_ids else {}

    async def claim_node(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        now: float,
        lease_until: float,
        max_takeovers: int = transitions.DEFAULT_MAX_TAKEOVERS,
    ) -> NodeRecord | None:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.claim(node, attempt, now, lease_until, max_takeovers)

        return await self._transition(run_id, node_id, decide)

    async def finish_node(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.finish(node, attempt, outcome, now)

        return await self._transitioned(run_id, node_id, decide)

    async def schedule_retry(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        error: NodeError,
        next_attempt_at: float,
        now: float,
        usage: Usage | None = None,
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.schedule_retry(node, attempt, error, next_attempt_at, now, usage)

        return await self._transitioned(run_id, node_id, decide)

    async def requeue_node(self, run_id: str, node_id: str, attempt: int, now: float) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.requeue(node, attempt, now)

        return await self._transitioned(run_id, node_id, decide)

    async def record_arrival(
        self,
        run_id: str,
        child_id: str,
        parent_id: str,
        position: int | None = None,
        of: int | None = None,
        succeeded: bool = False,
    ) -> int | None:
        """The count is of the child's arrival rows, in the transaction that adds one:
        exact, as one writer commits at a time. It is not kept on the child's row, whose
        every UPDATE rewrites the whole row. SQLite has no hot documents, so
        `position`/`of` are unused, and reading the parents is local, so `succeeded` is
        not kept."""

        def work(conn: sqlite3.Connection) -> int | None:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO arrivals VALUES (?,?,?)", (run_id, child_id, parent_id)
            ).rowcount
            return rows.count_arrivals(conn, run_id, child_id) if inserted else None

        return await self._tx(work)

    async def get_arrival_count(self, run_id: str, node_id: str) -> int:
        """The node's arrival rows, counted (one writer at a time, so exactly one arrival
        sees the full count)."""
        return await self._read(lambda conn: rows.count_arrivals(conn, run_id, node_id))

    async def count_succeeded_arrivals(self, run_id: str, node_id: str) -> int:
        """0: not kept (`record_arrival`); the engine reads the parents instead."""
        return 0

    async def claim_decision(self, run_id: str, node_id: str) -> bool:
        """Always True: the exact counter lets only one arrival see the full count."""
        return True

    async def resolve_node(
        self,
        run_id: str,
        node_id: str,
        status: NodeStatus,
        now: float,
        *,
        reason: str | None = None,
        expected: Sequence[NodeStatus] = (NodeStatus.WAITING,),
        while_run_ended: bool = False,
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.resolve(node, status, now, reason, expected)

        return await self._transitioned(run_id, node_id, decide, while_run_ended=while_run_ended)

    async def cancel_not_started(self, run_id: str, now: float) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            states = [s.value for s in NOT_STARTED]
            marks = ",".join("?" * len(states))
            found = conn.execute(
                f"SELECT {rows.NODE_COLUMNS} FROM nodes WHERE run_id=? AND status IN ({marks}) "
                "ORDER BY seq",
                (run_id, *states),
            ).fetchall()
            cancelled = []
            for row in found:
                change = transitions.cancel(rows.node_record(row), now)
                if change is not None and rows.persist(conn, run_id, row["node_id"], change):
                    cancelled.append(row["node_id"])
            return cancelled

        return await self._tx(work)

    async def add_instances(self, run_id: str, records: Sequence[NodeRecord], now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(f"{rows.SELECT_RUNS} WHERE runs.run_id=?", (run_id,)).fetchone()
            if row is None or not records:
                return 0
            run = rows.run_record(row)
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) FROM nodes WHERE run_id=?", (run_id,)
            ).fetchone()
            fresh = [replace(r, updated_at=now) for r in records]
            created: Counter[str] = Counter()
            insert = rows.INSERT_NODE.replace("INSERT INTO", "INSERT OR IGNORE INTO")
            for record, values in zip(fresh, rows.node_rows(run, fresh, last + 1), strict=True):
                if conn.execute(insert, values).rowcount:
                    created[record.status.value] += 1
            total = sum(created.values())
            if total:
                rows.add_counts(conn, run_id, created, total)
            return total

        return await self._tx(work)

    async def expand_node(
        self, run_id: str, node_id: str, attempt: int, expect: int, now: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.expand(node, attempt, expect, now)

        return await self._transitioned(run_id, node_id, decide)

    async def settle_node(self, run_id: str, node_id: str, outcome: Outcome, now: float) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.settle(node, outcome, now)

        return await self._transitioned(run_id, node_id, decide)

    async def renew_lease(
        self, run_id: str, node_id: str, attempt: int, lease_until: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.renew(node, attempt, lease_until)

        return await self._transitioned(run_id, node_id, decide)

    async def set_partial(self, run_id: str, node_id: str, attempt: int, text: str) -> None:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.set_partial(node, attempt, text)

        await self._transitioned(run_id, node_id, decide)

    async def append_event(self, event: Event) -> None:
        await self._tx(lambda conn: rows.insert_event(conn, event))

    async def list_events(self, run_id: str, after: int | None = None) -> list[Event]:
        def work(conn: sqlite3.Connection) -> list[Event]:
            found = conn.execute(
                "SELECT * FROM events WHERE run_id=? AND seq>? ORDER BY seq", (run_id, after or 0)
            )
            return [rows.event_record(r) for r in found]

        return await self._read(work)

    async def stale_nodes(self, now: float, grace_s: float) -> list[NodeRecord]:
        def work(conn: sqlite3.Connection) -> list[NodeRecord]:
            columns = ", ".join("n." + c.strip() for c in rows.NODE_COLUMNS.split(","))
            found = conn.execute(
                f"SELECT {columns} "
                "FROM nodes n JOIN runs r ON r.run_id = n.run_id WHERE r.status='running' AND ("
                " (n.status='running' AND n.lease_until < ?)"
                " OR (n.status='retrying' AND n.next_attempt_at < ?)"
                " OR (n.status='ready' AND n.updated_at < ?)"
                " OR (n.status='waiting_approval' AND n.next_attempt_at < ?))",
                (now, now - grace_s, now - grace_s, now - grace_s),
            )
            return [rows.node_record(r) for r in found]

        return await self._read(work)

    # ---- steps of agents' tool loops ---------------------------------------------------

    async def append_step(self, run_id: str, node_id: str, step: Step) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO steps VALUES (?,?,?,?)",
                (run_id, node_id, step.index, rows.dumps(step.to_dict())),
            ).rowcount
            return bool(inserted)

        return await self._tx(work)

    async def list_steps(self, run_id: str, node_id: str) -> list[Step]:
        def work(conn: sqlite3.Connection) -> list[Step]:
            found = conn.execute(
                "SELECT step FROM steps WHERE run_id=? AND node_id=? ORDER BY idx",
                (run_id, node_id),
            )
            return [Step.from_dict(json.loads(r["step"])) for r in found]

        return await self._read(work)

    # ---- human approval --------------------------------------------------------------

    async def await_approval(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        pending: Any,
        deadline: float,
        now: float,
        usage: Usage | None = None,
        model: str | None = None,
        message: str | None = None,
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.await_approval(
                node, attempt, pending, deadline, now, usage, model, message
            )

        return await self._transitioned(run_id, node_id, decide)

    async def decide_approval(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.decide_approval(node, attempt, outcome, now)

        return await self._transitioned(run_id, node_id, decide)

    # ---- redrive -------------------------------------------------------------------------

    async def redrive_run(self, run_id: str, resets: Mapping[str, NodeStatus], now: float) -> bool:
        """One transaction: the run must still be failed or cancelled; each node of
        `resets` is reset, its arrivals from reset nodes deleted (parents, or the units of
        a controller back in `expanded`: they will arrive again) and its count made the
        arrivals that remain; then the run is running."""

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return False
            current = RunStatus(row["status"])
            change = transitions.redrive_run(run_id, current, now, len(resets))
            if change is None:
                return False
            for node_id, status in resets.items():
                node = rows.select_node(conn, run_id, node_id)
                reset = None if node is None else transitions.redrive_node(node, status, now)
                if node is None or reset is None:
                    continue
                rows.persist(conn, run_id, node_id, reset)
                arrived = conn.execute(
                    "SELECT parent_id FROM arrivals WHERE run_id=? AND child_id=?",
                    (run_id, node_id),
                ).fetchall()
                again = [row[0] for row in arrived if row[0] in resets]
                marks = ",".join("?" * len(again))
                if again:
                    conn.execute(
                        "DELETE FROM arrivals WHERE run_id=? AND child_id=? "
                        f"AND parent_id IN ({marks})",
                        (run_id, node_id, *again),
                    )
            return rows.persist_run(conn, run_id, current, change)

        return await self._tx(work)


def _named_nodes(
    conn: sqlite3.Connection, columns: str, run_id: str, node_ids: Sequence[str]
) -> Iterator[Any]:
    """`columns` of the named nodes of a run (a node's parents, a template's reads), in
    chunks of 500 ids (SQLite binds at most 999 parameters before 3.32)."""
    ids = list(node_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        yield from conn.execute(_select_named(columns, len(chunk)), (run_id, *chunk))


@functools.lru_cache(maxsize=64)
def _select_named(columns: str, count: int) -> str:
    marks = ",".join("?" * count)
    return f"SELECT {columns} FROM nodes WHERE run_id=? AND node_id IN ({marks})"
