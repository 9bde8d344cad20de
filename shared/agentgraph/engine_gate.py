"""The engine's model gate: per-model limits and the circuit breaker around each model call.

Part of `Engine` (`engine.py`), with `LocalModelGate`, the in-process ModelGate adapter
(the Firestore one is `backends/gcp/firestore_model_gate.py`). Before an agent node is claimed, its model is admitted by
the ModelGate port (core/model_gate.py has the rules):
- admitted: the node is claimed and runs on that model; the permit is released with the
  call's outcome (success, overload = 429/5xx, other) whatever happens after;
- refused because the model's breaker is open (or its one probe is out): the node runs on
  its `fallback_model` if it has one and that model is admitted; otherwise the node is
  delayed, and never failed for it;
- refused for the rate or for concurrency: the delivery waits a little (at most
  `MAX_WAIT_S` in all) and asks again; beyond that the node is delayed.

A delayed node is not claimed: it stays `ready` with the same attempt, and the
RetryScheduler delivers node-ready for that attempt again later (tagged, so Cloud Tasks
keeps it apart from the retry that made the attempt). No attempt is spent, nothing is
written to the node; a breaker delay adds one line to the run's timeline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentgraph.core import grow
from agentgraph.core import model_gate as rules
from agentgraph.core.errors import AgentgraphError, LlmError
from agentgraph.core.graph import Node
from agentgraph.core.llm_port import LlmRequest, LlmResponse, OnPartial
from agentgraph.core.model_gate import Admitted, GateConfig, Outcome, Refused, is_overload
from agentgraph.core.ports import ModelGate
from agentgraph.core.records import Event
from agentgraph.core.templates import render
from agentgraph.engine_parts import EngineParts

if TYPE_CHECKING:
    from agentgraph.engine import RunContext

log = logging.getLogger("agentgraph.engine")

# A slot or probe is held at most the node's timeout plus this: the call cannot outlive
# its timeout, so a permit of a dead instance is free again soon after.
HOLD_MARGIN_S = 10.0
# How long one delivery may wait in total for a token or a slot before delaying the node.
MAX_WAIT_S = 5.0
# All slots taken: ask again after 50 ms, then twice as long each time (7 reads in 5 s).
FIRST_BUSY_PAUSE_S = 0.05


@dataclass
class Ticket:
    """One admitted model call: the model it goes to and what it ended with."""

    model: str
    permit: Admitted
    outcome: Outcome = "other"


class ModelGating(EngineParts):
    """Admission and release of model calls (mixed into Engine)."""

    gate: ModelGate
    rng: random.Random

    if TYPE_CHECKING:  # provided by Engine

        async def _execute(
            self, run_id: str, node_id: str, attempt: int, ticket: Ticket | None = None
        ) -> None: ...

    async def _gated_execute(self, run_id: str, node_id: str, attempt: int) -> None:
        context = await self._context(run_id)
        node = context.node(node_id) if context is not None else None
        if node is not None and context is not None and node.agent is not None:
            node = await self._as_profile(run_id, context, node)
        if node is None or node.kind != "agent" or node.model_for_attempt(attempt) is None:
            # (no model of its own: an `agent:` node takes its profile's, or fails clearly)
            await self._execute(run_id, node_id, attempt)
            return
        ticket = await self._admit(run_id, node, attempt)
        if ticket is None:
            return
        try:
            await self._execute(run_id, node_id, attempt, ticket)
        finally:
            try:
                await self.gate.release(ticket.model, ticket.permit, ticket.outcome)
            except Exception:  # the permit's lease expires by itself
                log.warning("releasing the gate of %s failed", ticket.model, exc_info=True)

    async def _as_profile(self, run_id: str, context: RunContext, node: Node) -> Node:
        """A planned subagent (`agent: "{{ item.agent }}"`) calls its profile's model, so
        that is the model to admit. Its name usually reads the item: one read of the
        instance's record, for such nodes only. A name that does not resolve is gated as
        the template; the attempt then fails with the clear error."""
        assert node.agent is not None
        try:
            record = await self.store.get_node(run_id, node.id) if "{" in node.agent else None
            values = await self._values(run_id, context, node, record) if record else {}
            return grow.with_profile(node, context.graph, render(node.agent, values).strip())
        except AgentgraphError:
            return node

    async def _admit(self, run_id: str, node: Node, attempt: int) -> Ticket | None:
        """A ticket for the model this attempt may call now, or None: the node was delayed."""
        primary = node.model_for_attempt(attempt)
        assert primary is not None
        models = [primary]
        if node.fallback_model and node.fallback_model != primary:
            models.append(node.fallback_model)
        hold_s = node.timeout_s + HOLD_MARGIN_S
        waited, backoff = 0.0, FIRST_BUSY_PAUSE_S
        while True:
            refusals: list[Refused] = []
            for model in models:
                decision = await self.gate.admit(model, hold_s)
                if isinstance(decision, Admitted):
                    if model != primary:
                        await self._note(
                            run_id,
                            node.id,
                            attempt,
                            f"model {primary} is failing (circuit {refusals[0].because}): "
                            f"this attempt uses fallback_model {model}",
                        )
                    return Ticket(model, decision)
                refusals.append(decision)
                if not decision.breaker:
                    break  # a busy or rate-limited model is waited for, not switched from
            refusal = min(refusals, key=lambda r: r.retry_at)
            pause = max(0.0, refusal.retry_at - self.clock())
            if refusal.because == "busy":  # when a slot frees is unknown: ask again soon
                pause, backoff = min(pause, backoff), backoff * 2
            if not any(r.breaker for r in refusals) and waited + pause <= MAX_WAIT_S:
                pause += self.rng.uniform(0.0, 0.01)
                waited += pause
                await asyncio.sleep(pause)
                continue
            await self._delay(run_id, node.id, attempt, primary, refusal, pause)
            return None

    async def _delay(
        self, run_id: str, node_id: str, attempt: int, model: str, refusal: Refused, pause: float
    ) -> None:
        # Spread the delayed nodes over a tenth of the pause, so they do not all come back
        # in the same instant when a cool-down ends.
        at = self.clock() + pause + self.rng.uniform(0.0, 0.1 * pause + 0.05)
        if refusal.breaker:
            await self._note(
                run_id,
                node_id,
                attempt,
                f"model {model} is failing (circuit {refusal.because})"
                f": delayed {at - self.clock():.1f} s, not counted as an attempt",
            )
        log.info(
            "node %s/%s#%d delayed: model %s %s", run_id, node_id, attempt, model, refusal.because
        )
        await self.retries.schedule(run_id, node_id, attempt, at, tag=f"gate-{int(at * 1000)}")

    async def _note(self, run_id: str, node_id: str, attempt: int, message: str) -> None:
        await self.store.append_event(
            Event(run_id, self.clock(), "message", node_id, None, attempt, message)
        )

    async def _generate(
        self, request: LlmRequest, on_partial: OnPartial | None, ticket: Ticket | None
    ) -> LlmResponse:
        """The model call, with its outcome noted on the ticket for the breaker."""
        try:
            response = await self.llm.generate(request, on_partial)
        except LlmError as exc:
            if ticket is not None:
                ticket.outcome = "overload" if is_overload(exc.http_status) else "other"
            raise
        if ticket is not None:
            ticket.outcome = "success"
        return response


class LocalModelGate:
    """Satisfies agentgraph.core.ports.ModelGate within one process: the local backend's
    gate, and every engine's when none is given. Its state is a dict; each decision reads
    and replaces a model's state without awaiting in between, so the coroutines of the
    event loop cannot interleave inside one. (Here rather than in backends/local: the
    engine builds it by default, and the api, which imports the engine, may not depend
    on a backend.)"""

    def __init__(
        self, config: GateConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config or GateConfig()
        self.clock = clock
        self.states: dict[str, rules.GateState] = {}
        self._limits: dict[str, rules.ModelLimit] = {}

    def _limit(self, model: str) -> rules.ModelLimit:
        limit = self._limits.get(model)
        if limit is None:
            if len(self._limits) > 1024:
                self._limits.clear()
            limit = self._limits[model] = self.config.limit_for(model)
        return limit

    async def admit(self, model: str, hold_s: float) -> Admitted | Refused:
        limit = self._limit(model)
        if model not in self.states and limit.concurrency is None and limit.rate_per_s is None:
            # A healthy model without limits (every call of most graphs): `rules.admit`
            # would admit and leave nothing to remember; that decision, without building it.
            return Admitted(secrets.token_hex(8))
        state = self.states.get(model, rules.GateState())
        state, decision = rules.admit(state, limit, self.clock(), secrets.token_hex(8), hold_s)
        self._keep(model, state)
        return decision

    async def release(self, model: str, permit: Admitted, outcome: Outcome) -> None:
        if model not in self.states and outcome == "success":
            return  # a success of a healthy model holding nothing changes nothing
        state = self.states.get(model, rules.GateState())
        self._keep(
            model, rules.release(state, self.config.breaker, self.clock(), permit.lease, outcome)
        )

    def _keep(self, model: str, state: rules.GateState) -> None:
        if state.quiet and state.tokens is None:  # nothing worth remembering
            self.states.pop(model, None)
        else:
            self.states[model] = state
