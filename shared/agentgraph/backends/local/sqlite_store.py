"""The Store port on SQLite: one file (or `:memory:`), real transactions.

Every method is a single `BEGIN IMMEDIATE … COMMIT`: a process killed at any line leaves
the file at the last committed transition, which is exactly what `agentgraph resume`
continues from. WAL mode lets a second process (`agentgraph show`) read while a run writes.

Where the SQL runs: a transition is a handful of indexed statements on a WAL file with
`synchronous=NORMAL` (no fsync per commit), tens of microseconds, less than the hop to a
worker thread and back. So a transaction first runs inline on the caller's thread (the
event loop) on a connection with a zero busy timeout: it either gets the write lock at
once or fails at `BEGIN` having done nothing. Only when another process holds the lock
(a second `agentgraph run` on the same file) does it go, whole, to a worker thread whose
own connection waits up to 30 s, so the event loop never waits on another process.

Node counts per status and usage totals live as JSON on the run row (the layout mirrors
Firestore's run document); each transition moves them with one `json_set` UPDATE in SQL,
never a read-modify-write through Python.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from agentgraph.core.ports import Event, NodeError, NodeRecord, Outcome, RunRecord, Usage
from agentgraph.core.status import NOT_STARTED, TERMINAL_NODE, NodeStatus, RunStatus

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, graph_name TEXT NOT NULL, graph TEXT NOT NULL, input TEXT,
  status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
  node_count INTEGER NOT NULL, counts TEXT NOT NULL, usage TEXT NOT NULL, outputs TEXT,
  error TEXT, owner TEXT, idempotency_key TEXT, request_hash TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_idempotency ON runs(owner, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE TABLE IF NOT EXISTS nodes (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
  attempt INTEGER NOT NULL, parents TEXT NOT NULL, children TEXT NOT NULL, pool TEXT NOT NULL,
  arrivals INTEGER NOT NULL DEFAULT 0, output TEXT, error TEXT, started_at REAL,
  finished_at REAL, duration_ms INTEGER, usage TEXT NOT NULL, lease_until REAL,
  next_attempt_at REAL, updated_at REAL, model TEXT, skip_reason TEXT, partial TEXT,
  executions INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run_id, node_id)
);
CREATE INDEX IF NOT EXISTS nodes_status ON nodes(status);
CREATE TABLE IF NOT EXISTS arrivals (
  run_id TEXT NOT NULL, child_id TEXT NOT NULL, parent_id TEXT NOT NULL,
  PRIMARY KEY (run_id, child_id, parent_id)
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at REAL NOT NULL,
  kind TEXT NOT NULL, node_id TEXT, status TEXT, attempt INTEGER, message TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
"""

_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)  # UPDATE … RETURNING

_NODE_COLUMNS = (
    "run_id, node_id, status, attempt, parents, children, pool, arrivals, output, error, "
    "started_at, finished_at, duration_ms, usage, lease_until, next_attempt_at, updated_at, "
    "model, skip_reason, partial, executions"
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_Pending = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_Outcome = tuple[Any, BaseException | None]


def _batch(
    conn: sqlite3.Connection, works: Sequence[Callable[[sqlite3.Connection], Any]]
) -> list[_Outcome]:
    """One transaction for all the works. A work that raises (a bug, a full disk) must
    be undone alone: then the whole transaction is rolled back and each work runs again
    in a transaction of its own (a work only touches the database, so it can)."""
    try:
        return [(result, None) for result in _together(conn, works)]
    except sqlite3.OperationalError as exc:
        if _is_busy(exc) or len(works) == 1:
            raise
    except Exception:
        if len(works) == 1:
            raise
    outcomes: list[_Outcome] = []
    for work in works:
        try:
            outcomes.append((_together(conn, [work])[0], None))
        except Exception as exc:
            outcomes.append((None, exc))
    return outcomes


def _together(
    conn: sqlite3.Connection, works: Sequence[Callable[[sqlite3.Connection], Any]]
) -> list[Any]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [work(conn) for work in works]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _reading(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Reads run in autocommit: each SELECT sees one committed state, and the reads here
    are single statements (or chunks over rows that are independent of each other)."""
    return work(conn)


def _deliver(batch: Sequence[_Pending], outcomes: Sequence[_Outcome]) -> None:
    for (_, future), (result, exc) in zip(batch, outcomes, strict=True):
        if future.done():  # its caller was cancelled; the transition stands or not alike
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock; nothing was done."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteStore:
    """Satisfies agentgraph.core.ports.Store."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # The inline connection never waits for a lock (see the module docstring); an
        # in-memory database is private to its one connection, so it is never contended.
        self._conn: sqlite3.Connection | None = self._connect(
            timeout=0.0 if not self._memory else 30
        )
        self._conn.executescript(_SCHEMA)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentgraph-sqlite")
        self._pending: list[_Pending] = []
        self._thread_conn: sqlite3.Connection | None = (
            self._conn if self._memory else self._connect(timeout=30)
        )

    def _connect(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=timeout
        )
        conn.row_factory = sqlite3.Row
        if not self._memory:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def close(self) -> None:
        def _close() -> None:
            if self._thread_conn is not None and self._thread_conn is not self._conn:
                self._thread_conn.close()
            self._thread_conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _tx(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` as one atomic transition, committed before this returns.

        Group commit: the transitions asked for in one turn of the event loop share one
        `BEGIN IMMEDIATE … COMMIT` (a failing one is undone alone, see `_batch`), so the
        commit (the costly part: the WAL write) is paid once per turn, not once per
        transition. Nobody learns of a result before the commit, so a
        crash anywhere still leaves every transition either done and reported, or not
        done at all."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((work, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        result: T = await future
        return result

    def _flush(self) -> None:
        batch = [(work, future) for work, future in self._pending if not future.done()]
        self._pending = []
        if not batch:  # every caller was cancelled before its turn: nothing to do
            return
        conn = self._conn
        if conn is None:
            _deliver(batch, [(None, RuntimeError("store is closed"))] * len(batch))
            return
        try:
            outcomes = _batch(conn, [work for work, _ in batch])
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                _deliver(batch, [(None, exc)] * len(batch))
                return
            # Another process holds the write lock: wait for it on the thread, not here.
            self._executor.submit(self._batch_on_thread, batch)
            return
        except BaseException as exc:  # the commit failed: nothing of the batch happened
            _deliver(batch, [(None, exc)] * len(batch))
            return
        _deliver(batch, outcomes)

    def _batch_on_thread(self, batch: list[_Pending]) -> None:
        conn = self._thread_conn
        try:
            assert conn is not None, "store is closed"
            outcomes = _batch(conn, [work for work, _ in batch])
        except BaseException as exc:
            outcomes = [(None, exc)] * len(batch)
        loop = batch[0][1].get_loop()
        loop.call_soon_threadsafe(_deliver, batch, outcomes)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Reads need no write lock and write nothing: inline (a WAL reader does not wait
        for writers), on the thread only if the file is busy."""
        conn = self._conn
        assert conn is not None, "store is closed"
        try:
            return _reading(conn, work)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._read_on_thread, work
        )

    def _read_on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._thread_conn
        assert conn is not None, "store is closed"
        return _reading(conn, work)

    # ---- rows ------------------------------------------------------------------------

    @staticmethod
    def _run(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            run_id=row["run_id"],
            graph_name=row["graph_name"],
            graph=json.loads(row["graph"]),
            input=_loads(row["input"]),
            status=RunStatus(row["status"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            node_count=row["node_count"],
            counts=json.loads(row["counts"]),
            usage=Usage.from_dict(json.loads(row["usage"])),
            outputs=_loads(row["outputs"]),
            error=_loads(row["error"]),
            owner=row["owner"],
            idempotency_key=row["idempotency_key"],
            request_hash=row["request_hash"],
        )

    @staticmethod
    def _node(row: sqlite3.Row) -> NodeRecord:
        return NodeRecord(
            run_id=row["run_id"],
            node_id=row["node_id"],
            status=NodeStatus(row["status"]),
            attempt=row["attempt"],
            parents=json.loads(row["parents"]),
            children=json.loads(row["children"]),
            pool=row["pool"],
            arrivals=row["arrivals"],
            output=_loads(row["output"]),
            error=NodeError.from_dict(_loads(row["error"])),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            duration_ms=row["duration_ms"],
            usage=Usage.from_dict(json.loads(row["usage"])),
            lease_until=row["lease_until"],
            next_attempt_at=row["next_attempt_at"],
            updated_at=row["updated_at"],
            model=row["model"],
            skip_reason=row["skip_reason"],
            partial=row["partial"],
            executions=row["executions"],
        )

    @staticmethod
    def _select_node(conn: sqlite3.Connection, run_id: str, node_id: str) -> NodeRecord | None:
        row = conn.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE run_id=? AND node_id=?", (run_id, node_id)
        ).fetchone()
        return SqliteStore._node(row) if row else None

    @staticmethod
    def _event(conn: sqlite3.Connection, event: Event) -> None:
        conn.execute(
            "INSERT INTO events (run_id, at, kind, node_id, status, attempt, message) VALUES (?,?,?,?,?,?,?)",
            (
                event.run_id,
                event.at,
                event.kind,
                event.node_id,
                event.status,
                event.attempt,
                event.message,
            ),
        )

    @staticmethod
    def _bump_run(
        conn: sqlite3.Connection,
        run_id: str,
        moves: Iterable[tuple[str | None, str]],
        usage: Usage | None = None,
    ) -> None:
        """Move node counts between statuses (and add usage) on the run row, in SQL: one
        UPDATE with `json_set`, the run row is never decoded for it."""
        delta: Counter[str] = Counter()
        for old, new in moves:
            if old is not None:
                delta[old] -= 1
            delta[new] += 1
        pairs: list[str] = []
        params: list[Any] = []
        for status, change in delta.items():
            if change:
                path = f'$."{status}"'
                pairs.append("?, COALESCE(json_extract(counts, ?), 0) + ?")
                params += [path, path, change]
        sets = [f"counts=json_set(counts, {', '.join(pairs)})"] if pairs else []
        spent = {k: v for k, v in usage.to_dict().items() if v} if usage is not None else {}
        if spent:
            terms = []
            for key, value in spent.items():
                path = f"$.{key}"
                total = "COALESCE(json_extract(usage, ?), 0) + ?"
                terms.append(f"?, round({total}, 9)" if key == "cost_usd" else f"?, {total}")
                params += [path, path, value]
            sets.append(f"usage=json_set(usage, {', '.join(terms)})")
        if sets:
            conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", (*params, run_id))

    # ---- runs ------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> RunRecord:
        def work(conn: sqlite3.Connection) -> RunRecord:
            if run.idempotency_key is not None:
                row = conn.execute(
                    "SELECT * FROM runs WHERE idempotency_key=? AND owner IS ?",
                    (run.idempotency_key, run.owner),
                ).fetchone()
                if row is not None:
                    return self._run(row)
            conn.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.run_id,
                    run.graph_name,
                    json.dumps(run.graph),
                    _dumps(run.input),
                    run.status.value,
                    run.created_at,
                    run.started_at,
                    run.finished_at,
                    run.node_count,
                    json.dumps(run.counts),
                    json.dumps(run.usage.to_dict()),
                    _dumps(run.outputs),
                    _dumps(run.error),
                    run.owner,
                    run.idempotency_key,
                    run.request_hash,
                ),
            )
            conn.executemany(
                "INSERT INTO nodes (run_id, node_id, seq, status, attempt, parents, children, pool, "
                "usage, updated_at, skip_reason, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run.run_id,
                        n.node_id,
                        i,
                        n.status.value,
                        n.attempt,
                        json.dumps(n.parents),
                        json.dumps(n.children),
                        n.pool,
                        json.dumps(n.usage.to_dict()),
                        run.created_at,
                        n.skip_reason,
                        n.finished_at,
                    )
                    for i, n in enumerate(nodes)
                ],
            )
            self._event(
                conn,
                Event(
                    run.run_id,
                    run.created_at,
                    "run_status",
                    status=run.status.value,
                    message=f"run of {run.graph_name!r} started with {len(nodes)} nodes",
                ),
            )
            return run

        return await self._tx(work)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def work(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            return self._run(row) if row else None

        return await self._read(work)

    async def list_runs(self, owner: str | None = None, limit: int = 50) -> list[RunRecord]:
        def work(conn: sqlite3.Connection) -> list[RunRecord]:
            if owner is None:
                rows = conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
            else:
                rows = conn.execute(
                    "SELECT * FROM runs WHERE owner=? ORDER BY created_at DESC LIMIT ?",
                    (owner, limit),
                )
            return [self._run(r) for r in rows]

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
            marks = ",".join("?" * len(expected))
            changed = conn.execute(
                f"UPDATE runs SET status=?, finished_at=CASE WHEN ? THEN ? ELSE finished_at END, "
                f"outputs=COALESCE(?, outputs), error=COALESCE(?, error) "
                f"WHERE run_id=? AND status IN ({marks})",
                (
                    status.value,
                    status.terminal,
                    now,
                    _dumps(outputs),
                    _dumps(error),
                    run_id,
                    *[s.value for s in expected],
                ),
            ).rowcount
            if changed:
                message = (error or {}).get("message") if error else None
                self._event(
                    conn, Event(run_id, now, "run_status", status=status.value, message=message)
                )
            return bool(changed)

        return await self._tx(work)

    # ---- nodes -----------------------------------------------------------------------

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None:
        return await self._read(lambda conn: self._select_node(conn, run_id, node_id))

    async def list_nodes(self, run_id: str) -> list[NodeRecord]:
        def work(conn: sqlite3.Connection) -> list[NodeRecord]:
            rows = conn.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE run_id=? ORDER BY seq", (run_id,)
            )
            return [self._node(r) for r in rows]

        return await self._read(work)

    async def get_outputs(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeRecord]:
        def work(conn: sqlite3.Connection) -> dict[str, NodeRecord]:
            result: dict[str, NodeRecord] = {}
            ids = list(node_ids)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT {_NODE_COLUMNS} FROM nodes WHERE run_id=? AND node_id IN ({marks})",
                    (run_id, *chunk),
                ):
                    result[row["node_id"]] = self._node(row)
            return result

        return await self._read(work) if node_ids else {}

    async def claim_node(
        self, run_id: str, node_id: str, attempt: int, now: float, lease_until: float
    ) -> NodeRecord | None:
        def work(conn: sqlite3.Connection) -> NodeRecord | None:
            node = self._select_node(conn, run_id, node_id)
            if node is None or node.attempt != attempt:
                return None
            takeover = node.status == NodeStatus.RUNNING and (node.lease_until or 0) < now
            if node.status != NodeStatus.READY and not takeover:
                return None
            conn.execute(
                "UPDATE nodes SET status='running', started_at=?, lease_until=?, updated_at=?, "
                "executions=executions+1 WHERE run_id=? AND node_id=?",
                (now, lease_until, now, run_id, node_id),
            )
            if not takeover:
                self._bump_run(conn, run_id, [(NodeStatus.READY.value, NodeStatus.RUNNING.value)])
            self._event(
                conn,
                Event(
                    run_id,
                    now,
                    "node_status",
                    node_id,
                    "running",
                    attempt,
                    "lease expired; taken over" if takeover else None,
                ),
            )
            return replace(
                node,
                status=NodeStatus.RUNNING,
                started_at=now,
                lease_until=lease_until,
                updated_at=now,
                executions=node.executions + 1,
            )

        return await self._tx(work)

    async def finish_node(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            node = conn.execute(
                "SELECT started_at, usage FROM nodes "
                "WHERE run_id=? AND node_id=? AND status='running' AND attempt=?",
                (run_id, node_id, attempt),
            ).fetchone()
            if node is None:
                return False
            duration = int((now - (node["started_at"] or now)) * 1000)
            conn.execute(
                "UPDATE nodes SET status=?, output=?, error=?, usage=?, model=?, finished_at=?, "
                "duration_ms=?, lease_until=NULL, partial=NULL, updated_at=? WHERE run_id=? AND node_id=?",
                (
                    outcome.status.value,
                    _dumps(outcome.output),
                    _dumps(outcome.error.to_dict() if outcome.error else None),
                    json.dumps(
                        (Usage.from_dict(json.loads(node["usage"])) + outcome.usage).to_dict()
                    ),
                    outcome.model,
                    now,
                    duration,
                    now,
                    run_id,
                    node_id,
                ),
            )
            self._bump_run(
                conn, run_id, [(NodeStatus.RUNNING.value, outcome.status.value)], outcome.usage
            )
            message = f"{outcome.error.type}: {outcome.error.message}" if outcome.error else None
            self._event(
                conn,
                Event(run_id, now, "node_status", node_id, outcome.status.value, attempt, message),
            )
            return True

        return await self._tx(work)

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
        def work(conn: sqlite3.Connection) -> bool:
            node = self._select_node(conn, run_id, node_id)
            if node is None or node.status != NodeStatus.RUNNING or node.attempt != attempt:
                return False
            spent = usage or Usage()
            conn.execute(
                "UPDATE nodes SET status='retrying', error=?, next_attempt_at=?, lease_until=NULL, "
                "partial=NULL, usage=?, updated_at=? WHERE run_id=? AND node_id=?",
                (
                    json.dumps(error.to_dict()),
                    next_attempt_at,
                    json.dumps((node.usage + spent).to_dict()),
                    now,
                    run_id,
                    node_id,
                ),
            )
            self._bump_run(
                conn, run_id, [(NodeStatus.RUNNING.value, NodeStatus.RETRYING.value)], spent
            )
            self._event(
                conn,
                Event(
                    run_id,
                    now,
                    "retry",
                    node_id,
                    "retrying",
                    attempt,
                    f"attempt {attempt} failed ({error.type}: {error.message}); "
                    f"attempt {attempt + 1} in {max(0.0, next_attempt_at - now):.2f}s",
                ),
            )
            return True

        return await self._tx(work)

    async def requeue_node(self, run_id: str, node_id: str, attempt: int, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE nodes SET status='ready', attempt=?, next_attempt_at=NULL, updated_at=? "
                "WHERE run_id=? AND node_id=? AND status='retrying' AND attempt=?",
                (attempt, now, run_id, node_id, attempt - 1),
            ).rowcount
            if changed:
                self._bump_run(conn, run_id, [(NodeStatus.RETRYING.value, NodeStatus.READY.value)])
                self._event(conn, Event(run_id, now, "node_status", node_id, "ready", attempt))
            return bool(changed)

        return await self._tx(work)

    async def record_arrival(self, run_id: str, child_id: str, parent_id: str) -> int | None:
        def work(conn: sqlite3.Connection) -> int | None:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO arrivals VALUES (?,?,?)", (run_id, child_id, parent_id)
            ).rowcount
            if not inserted:
                return None
            key = (run_id, child_id)
            bump = "UPDATE nodes SET arrivals=arrivals+1 WHERE run_id=? AND node_id=?"
            if _RETURNING:
                return int(conn.execute(bump + " RETURNING arrivals", key).fetchone()[0])
            conn.execute(bump, key)
            row = conn.execute("SELECT arrivals FROM nodes WHERE run_id=? AND node_id=?", key)
            return int(row.fetchone()[0])

        return await self._tx(work)

    async def resolve_node(
        self,
        run_id: str,
        node_id: str,
        status: NodeStatus,
        now: float,
        *,
        reason: str | None = None,
        expected: Sequence[NodeStatus] = (NodeStatus.WAITING,),
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            node = conn.execute(
                "SELECT status, attempt FROM nodes WHERE run_id=? AND node_id=?", (run_id, node_id)
            ).fetchone()
            if node is None or node["status"] not in {s.value for s in expected}:
                return False
            old = node["status"]
            error = None
            if status == NodeStatus.FAILED:
                error = NodeError(
                    "ConditionError", reason or "failed", False, None, node["attempt"]
                ).to_dict()
            terminal = status in TERMINAL_NODE
            conn.execute(
                "UPDATE nodes SET status=?, skip_reason=COALESCE(?, skip_reason), error=COALESCE(?, error), "
                "finished_at=CASE WHEN ? THEN ? ELSE finished_at END, lease_until=NULL, updated_at=? "
                "WHERE run_id=? AND node_id=?",
                (
                    status.value,
                    reason if status != NodeStatus.FAILED else None,
                    _dumps(error),
                    terminal,
                    now,
                    now,
                    run_id,
                    node_id,
                ),
            )
            self._bump_run(conn, run_id, [(old, status.value)])
            self._event(
                conn,
                Event(run_id, now, "node_status", node_id, status.value, node["attempt"], reason),
            )
            return True

        return await self._tx(work)

    async def cancel_not_started(self, run_id: str, now: float) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            states = [s.value for s in NOT_STARTED]
            marks = ",".join("?" * len(states))
            rows = conn.execute(
                f"SELECT node_id, status FROM nodes WHERE run_id=? AND status IN ({marks}) ORDER BY seq",
                (run_id, *states),
            ).fetchall()
            if not rows:
                return []
            conn.execute(
                f"UPDATE nodes SET status='cancelled', finished_at=?, updated_at=?, "
                f"skip_reason=COALESCE(skip_reason, 'run_ended') WHERE run_id=? AND status IN ({marks})",
                (now, now, run_id, *states),
            )
            self._bump_run(conn, run_id, [(r["status"], NodeStatus.CANCELLED.value) for r in rows])
            for r in rows:
                self._event(conn, Event(run_id, now, "node_status", r["node_id"], "cancelled"))
            return [r["node_id"] for r in rows]

        return await self._tx(work)

    async def set_partial(self, run_id: str, node_id: str, attempt: int, text: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE nodes SET partial=? WHERE run_id=? AND node_id=? AND status='running' AND attempt=?",
                (text, run_id, node_id, attempt),
            )

        await self._tx(work)

    async def append_event(self, event: Event) -> None:
        await self._tx(lambda conn: self._event(conn, event))

    async def list_events(self, run_id: str, after: int | None = None) -> list[Event]:
        def work(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT * FROM events WHERE run_id=? AND seq>? ORDER BY seq", (run_id, after or 0)
            )
            return [
                Event(
                    r["run_id"],
                    r["at"],
                    r["kind"],
                    r["node_id"],
                    r["status"],
                    r["attempt"],
                    r["message"],
                    r["seq"],
                )
                for r in rows
            ]

        return await self._read(work)

    async def stale_nodes(self, now: float, grace_s: float) -> list[NodeRecord]:
        def work(conn: sqlite3.Connection) -> list[NodeRecord]:
            rows = conn.execute(
                f"SELECT {', '.join('n.' + c.strip() for c in _NODE_COLUMNS.split(','))} "
                "FROM nodes n JOIN runs r ON r.run_id = n.run_id WHERE r.status='running' AND ("
                " (n.status='running' AND n.lease_until < ?)"
                " OR (n.status='retrying' AND n.next_attempt_at < ?)"
                " OR (n.status='ready' AND n.updated_at < ?))",
                (now, now - grace_s, now - grace_s),
            )
            return [self._node(r) for r in rows]

        return await self._read(work)
