"""The ModelGate port on Firestore: per-model limits and the breaker across a deployment.

One small document per model (`model_gates/{id}`) holds the model's `GateState`
(core/model_gate.py): the breaker, the token bucket and the leased concurrency slots.
Every change is a compare-and-set: read the document, decide with the core's rules, write
the answer under a `last_update_time` precondition (a `create` when there is no document
yet), and on losing to another instance read and decide again (`contention.until_settled`).
Slots are leases that expire `hold_s` after they were taken, so an instance that dies
mid-call frees its slot by itself; no sweeper is needed.

What one model call costs (billing units; a lost compare-and-set repeats its read and write):
- a model with neither concurrency nor rate cap, breaker closed and no failure streak:
  one read at admit, none at all while this instance read it closed within `fresh_s`
  (one second), and nothing at release on success (0 writes);
- with a concurrency cap: one read and one write at admit (take a slot), one read and one
  write at release (give it back);
- with a rate cap only: one read and one write at admit (take a token), nothing at release
  on success;
- a 429/5xx answer, or a success that ends a streak or closes a half-open breaker: one
  read and one write at release;
- a refusal (open breaker, all slots taken, no token): one read, no write.

The `fresh_s` memory means an instance may go on sending to a model for up to a second
after another instance opened its breaker: the price of not reading the document before
every call of a healthy, uncapped model.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore

from agentgraph.backends.gcp.contention import TryAgain, until_settled
from agentgraph.core import model_gate as rules
from agentgraph.core import names
from agentgraph.core.model_gate import Admitted, GateConfig, GateState, Outcome, Refused

FRESH_S = 1.0


def document_id(model: str) -> str:
    """A valid, unique document id for any model name: a hash, then the name made safe."""
    digest = hashlib.sha256(model.encode()).hexdigest()[:16]
    return f"{digest}-{re.sub(r'[^A-Za-z0-9._-]', '_', model)[:80]}"


class FirestoreModelGate:
    """Satisfies agentgraph.core.ports.ModelGate for every instance on one database."""

    def __init__(
        self,
        client: firestore.AsyncClient,
        config: GateConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        fresh_s: float = FRESH_S,
    ) -> None:
        self.client = client
        self.config = config or GateConfig()
        self.clock = clock
        self.fresh_s = fresh_s
        self.stats: Counter[str] = Counter()  # reads and writes, in billing units
        self._quiet_at: dict[str, float] = {}  # when this instance last read a model quiet

    def _ref(self, model: str) -> Any:
        return self.client.collection(names.COLLECTION_MODEL_GATES).document(document_id(model))

    def _uncapped(self, model: str) -> bool:
        limit = self.config.limit_for(model)
        return limit.concurrency is None and limit.rate_per_s is None

    def _fresh_quiet(self, model: str) -> bool:
        seen = self._quiet_at.get(model)
        return seen is not None and self.clock() - seen < self.fresh_s

    async def state(self, model: str) -> GateState:
        """The model's stored state (for tests and operators)."""
        snap = await self._ref(model).get()
        self.stats["reads"] += 1
        return GateState.from_dict(snap.to_dict() if snap.exists else None)

    async def admit(self, model: str, hold_s: float) -> Admitted | Refused:
        lease = secrets.token_hex(8)
        if self._uncapped(model) and self._fresh_quiet(model):
            return Admitted(lease)
        limit = self.config.limit_for(model)
        ref = self._ref(model)

        async def attempt(tries: int) -> Admitted | Refused:
            snap, state = await self._read(ref)
            if tries and (lease in state.slots or state.probe == lease):
                return Admitted(lease, state.probe == lease)  # our write landed; its answer didn't
            now = self.clock()
            changed, decision = rules.admit(state, limit, now, lease, hold_s)
            if isinstance(decision, Admitted) and changed != state:
                await self._write(ref, snap, model, changed)
            if isinstance(decision, Admitted) and changed.quiet and changed.tokens is None:
                self._quiet_at[model] = now
            else:
                self._quiet_at.pop(model, None)
            return decision

        return await until_settled(attempt, f"model gate {model}: admit")

    async def release(self, model: str, permit: Admitted, outcome: Outcome) -> None:
        if (
            outcome == "success"
            and not permit.probe
            and self._uncapped(model)
            and self._fresh_quiet(model)
        ):
            return  # nothing held, nothing to end: the state stays as it was read
        ref = self._ref(model)

        async def attempt(tries: int) -> None:
            snap, state = await self._read(ref)
            now = self.clock()
            changed = rules.release(state, self.config.breaker, now, permit.lease, outcome)
            if changed != state:
                await self._write(ref, snap, model, changed)
            if changed.quiet and changed.tokens is None:
                self._quiet_at[model] = now
            else:
                self._quiet_at.pop(model, None)

        await until_settled(attempt, f"model gate {model}: release")

    async def _read(self, ref: Any) -> tuple[Any, GateState]:
        snap = await ref.get()
        self.stats["reads"] += 1
        return snap, GateState.from_dict(snap.to_dict() if snap.exists else None)

    async def _write(self, ref: Any, snap: Any, model: str, state: GateState) -> None:
        """Compare-and-set: FailedPrecondition (or AlreadyExists) when another instance
        changed the document since `snap`; `until_settled` then reads and decides again."""
        data = {**state.to_dict(), "model": model}
        self.stats["writes"] += 1
        if not snap.exists:
            try:
                await ref.create(data)
            except AlreadyExists as exc:
                raise TryAgain from exc
            return
        option = self.client.write_option(last_update_time=snap.update_time)
        await ref.update(data, option=option)
