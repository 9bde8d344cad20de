"""What an owner has done, counted from their runs in the SQLite store: the same numbers
as `backends/gcp/firestore_owner_activity.py` gives on Firestore, for the per-owner limits
(core/limits.py) wherever the api runs on the local store."""

from __future__ import annotations

import sqlite3

from agentgraph.backends.local.sqlite_store import SqliteStore
from agentgraph.core.limits import MINUTE_S, OwnerActivity, OwnerLimits, day_start
from agentgraph.core.status import RunStatus


class SqliteOwnerActivity:
    """Satisfies agentgraph.core.ports.OwnerActivityReader on a SqliteStore."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def activity(self, owner: str, now: float, limits: OwnerLimits) -> OwnerActivity:
        def work(conn: sqlite3.Connection) -> tuple[int, float | None, int]:
            recent = [
                row[0]
                for row in conn.execute(
                    "SELECT created_at FROM runs WHERE owner=? AND created_at>=? "
                    "ORDER BY created_at DESC",
                    (owner, now - MINUTE_S),
                )
            ]
            running = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE owner=? AND status=?",
                (owner, RunStatus.RUNNING.value),
            ).fetchone()[0]
            # The run whose leaving the window lets one more start: the limit-th newest.
            oldest = (
                recent[limits.runs_per_minute - 1]
                if len(recent) >= limits.runs_per_minute
                else None
            )
            return len(recent), oldest, int(running)

        started, oldest, running = await self.store._read(work)
        usd, tokens = await self.spend_today(owner, now)
        return OwnerActivity(started, oldest, running, usd, tokens)

    async def spend_today(self, owner: str, now: float) -> tuple[float, int]:
        def work(conn: sqlite3.Connection) -> tuple[float, int]:
            row = conn.execute(
                "SELECT COALESCE(SUM(json_extract(usage, '$.cost_usd')), 0), "
                "COALESCE(SUM(json_extract(usage, '$.input_tokens')), 0) + "
                "COALESCE(SUM(json_extract(usage, '$.output_tokens')), 0) "
                "FROM runs WHERE owner=? AND created_at>=?",
                (owner, day_start(now)),
            ).fetchone()
            return float(row[0]), int(row[1])

        return await self.store._read(work)
