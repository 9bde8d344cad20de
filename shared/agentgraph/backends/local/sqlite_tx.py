"""SQLite connections and group commit: where a store transaction runs, and when.

A transition is a handful of indexed statements on a WAL file with `synchronous=NORMAL`
(no fsync per commit), tens of microseconds, less than the hop to a worker thread and
back. So a transaction first runs inline on the caller's thread (the event loop) on a
connection with a zero busy timeout: it either gets the write lock at once or fails at
`BEGIN` having done nothing. Only when another process holds the lock (a second
`agentgraph run` on the same file) does it go, whole, to a worker thread whose own
connection waits up to 30 s, so the event loop never waits on another process.

The WAL is copied back into the database file by that thread too, every
`CHECKPOINT_EVERY` commits: SQLite's own checkpoint runs inside the commit that crosses
1,000 pages and fsyncs the file there (about 4 ms on this machine's disk), which put half
of all commit time on one transition in a hundred. On the thread, it overlaps the event
loop (the sqlite3 module lets go of the GIL while SQLite works).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentgraph.backends.local.sqlite_batch import begin_batch, end_batch

log = logging.getLogger(__name__)

T = TypeVar("T")

_Pending = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_Outcome = tuple[Any, BaseException | None]

CHECKPOINT_EVERY = 100  # commits of the inline connection between two checkpoints


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
    batch = begin_batch()  # the writes that wait for the end of the transaction
    try:
        results = [work(conn) for work in works]
        batch.write(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        end_batch()
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


class Transactions:
    """The connections of one SQLite file and the group commit that runs transitions on
    them (see the module docstring); `SqliteStore` writes the transitions."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # The inline connection never waits for a lock (see the module docstring); an
        # in-memory database is private to its one connection, so it is never contended.
        self._conn: sqlite3.Connection | None = self._connect(
            timeout=0.0 if not self._memory else 30
        )
        self._conn.executescript(schema)
        if not self._memory:  # the thread checkpoints (see the module docstring)
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._commits = 0
        self._checkpointing = False
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
        """Close both connections (the last one to close checkpoints the WAL into the
        file). Closing a closed store does nothing."""
        if self._conn is None:
            return

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
        self._committed()

    def _committed(self) -> None:
        if self._memory:
            return
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and not self._checkpointing:
            self._commits = 0
            self._checkpointing = True
            self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """PASSIVE: copies what no reader still needs, and waits for nobody."""
        try:
            if self._thread_conn is not None:
                self._thread_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # busy, or a full disk: the next one tries again
            log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            self._checkpointing = False

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
