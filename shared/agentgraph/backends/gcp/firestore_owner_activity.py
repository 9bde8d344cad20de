"""What an owner has done, counted from their run documents with aggregation queries.

No counter document: a per-owner counter that one busy owner writes many times a second
would be the hot document Firestore throttles. An aggregation query instead reads index
entries (billed as one read per 1,000 entries), so counting costs a few reads per run
start and per model call, and writes nothing (core/limits.py has the decisions).

Indexes (firestore.indexes.json): `runs` `owner` + `created_at` serves the per-minute
count, collection group `nodes` `owner` + `run_created_at` today's spend; `owner` == and
`status` == merge single-field indexes.
"""

from __future__ import annotations

from typing import Any

from google.cloud.firestore_v1.base_query import FieldFilter

from agentgraph.core import names
from agentgraph.core.limits import MINUTE_S, OwnerActivity, OwnerLimits, day_start
from agentgraph.core.status import RunStatus


class FirestoreOwnerActivity:
    """Satisfies agentgraph.core.ports.OwnerActivityReader on a Firestore AsyncClient."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _runs(self, owner: str) -> Any:
        runs = self.client.collection(names.COLLECTION_RUNS)
        return runs.where(filter=FieldFilter("owner", "==", owner))

    async def activity(self, owner: str, now: float, limits: OwnerLimits) -> OwnerActivity:
        minute = self._runs(owner).where(filter=FieldFilter("created_at", ">=", now - MINUTE_S))
        running = self._runs(owner).where(filter=FieldFilter("status", "==", RunStatus.RUNNING))
        started = await _count(minute)
        oldest = None
        if started >= limits.runs_per_minute:
            # The run whose leaving the window lets one more start: the limit-th newest.
            newest = minute.order_by("created_at", direction="DESCENDING")
            found = await newest.limit(limits.runs_per_minute).select(["created_at"]).get()
            oldest = found[-1].get("created_at") if found else None
        usd, tokens = await self.spend_today(owner, now)
        return OwnerActivity(started, oldest, await _count(running), usd, tokens)

    async def spend_today(self, owner: str, now: float) -> tuple[float, int]:
        """USD and tokens of the owner's runs created since midnight UTC: one `sum()`
        aggregation over their node documents (collection group `nodes`, owner +
        run_created_at), where every transition that carries usage writes it. Not the
        run documents: an ended run's stored usage is a copy of its nodes'."""
        nodes = (
            self.client.collection_group(names.COLLECTION_NODES)
            .where(filter=FieldFilter("owner", "==", owner))
            .where(filter=FieldFilter("run_created_at", ">=", day_start(now)))
        )
        query = (
            nodes.sum("usage.cost_usd", alias="usd")
            .sum("usage.input_tokens", alias="input")
            .sum("usage.output_tokens", alias="output")
        )
        values = {r.alias: r.value for row in await query.get() for r in row}
        usd = float(values.get("usd") or 0.0)
        tokens = int((values.get("input") or 0) + (values.get("output") or 0))
        return usd, tokens


async def _count(query: Any) -> int:
    rows = await query.count(alias="n").get()
    return int(next((r.value for row in rows for r in row), 0))
