"""The engine's recovery half: delayed retries coming due, cancelling a run, and
re-sending what a dead process left behind (the sweeper, `agentgraph resume`). Part of
`Engine` (`engine.py`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agentgraph.core.errors import RunNotFound
from agentgraph.core.records import NodeRecord, RunRecord
from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus
from agentgraph.engine_parts import EngineParts
from agentgraph.observability import metrics, tracing

if TYPE_CHECKING:
    pass

log = logging.getLogger("agentgraph.engine")

RUN_ENDED_WHILE_RUNNING = "run ended while it was running"


class Recovery(EngineParts):
    """Retries, cancellation, the sweeper and resume."""

    sweep_grace_s: float

    if TYPE_CHECKING:  # provided by Engine

        async def _end_run(
            self, run_id: str, status: RunStatus, error: dict[str, Any] | None
        ) -> bool: ...

        async def _approval_due(self, record: NodeRecord) -> None: ...

        async def _watch_lease(
            self, run_id: str, node_id: str, attempt: int, lease_until: float
        ) -> None: ...

        async def _arm_approval(
            self, run_id: str, node_id: str, attempt: int, deadline: float
        ) -> None: ...

    async def retry(self, run_id: str, node_id: str, attempt: int) -> None:
        """A delayed retry came due: make the node ready for `attempt` and dispatch it."""
        context = await self._context(run_id)
        node = context.node(node_id) if context is not None else None
        if node is None:
            log.warning("retry for unknown run/node %s/%s: dropped", run_id, node_id)
            return
        pool = node.pool
        if await self.store.requeue_node(run_id, node_id, attempt, self.clock()):
            await self.dispatcher.node_ready(run_id, node_id, attempt, pool)
            return
        record = await self.store.get_node(run_id, node_id)
        if record and record.status == NodeStatus.READY and record.attempt == attempt:
            await self.dispatcher.node_ready(run_id, node_id, attempt, pool)
        elif record and record.status == NodeStatus.WAITING_APPROVAL and record.attempt == attempt:
            await self._approval_due(record)  # the approval's timeout came due
        elif record and record.status == NodeStatus.RUNNING and record.attempt == attempt:
            await self._lease_due(record, pool)  # a watch of a lease (engine._watch_lease)

    async def _lease_due(self, record: NodeRecord, pool: str) -> None:
        """The lease a watch waited for: lapsed, the node-ready goes out again and its
        claim takes the node over; renewed by a live worker, watch it once more."""
        lease_until = record.lease_until
        if lease_until is None:
            return
        if lease_until <= self.clock():
            await self.dispatcher.node_ready(record.run_id, record.node_id, record.attempt, pool)
        else:
            await self._watch_lease(record.run_id, record.node_id, record.attempt, lease_until)

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run: nodes not started are cancelled; running ones finish their call
        but start nothing after them. False if the run had already ended."""
        if await self.store.get_run_summary(run_id, counts=False) is None:
            raise RunNotFound(run_id)
        return await self._end_run(run_id, RunStatus.CANCELLED, {"message": "cancelled"})

    async def sweep(self) -> int:
        """Re-dispatch what a dead function left behind; returns how many messages it sent.
        Safe to run at any time and as often as wanted."""
        now = self.clock()
        sent = 0
        for record in await self.store.stale_nodes(now, self.sweep_grace_s):
            if record.status in (NodeStatus.READY, NodeStatus.RUNNING):
                await self.dispatcher.node_ready(
                    record.run_id, record.node_id, record.attempt, record.pool
                )
            elif record.status == NodeStatus.RETRYING:
                await self.retry(record.run_id, record.node_id, record.attempt + 1)
            elif record.status == NodeStatus.WAITING_APPROVAL:  # its timeout was lost
                await self.retry(record.run_id, record.node_id, record.attempt)
            sent += 1
        if sent:
            metrics.instruments().sweep_recoveries.add(sent)
        tracing.annotate(agentgraph__sweep__dispatched=sent)
        return sent

    async def resume(self, run_id: str) -> RunRecord:
        """Continue a run whose process died: redo what was in flight, re-send every
        finished node's completion (idempotent), and re-arm pending retries."""
        run = await self.store.get_run(run_id, counts=False)
        if run is None:
            raise RunNotFound(run_id)
        if run.status.terminal:  # died after the run ended: nothing will finish these
            for record in await self.store.list_nodes(run_id):
                if record.status == NodeStatus.RUNNING:
                    await self.store.resolve_node(
                        run_id,
                        record.node_id,
                        NodeStatus.CANCELLED,
                        self.clock(),
                        reason=RUN_ENDED_WHILE_RUNNING,
                        expected=(NodeStatus.RUNNING,),
                    )
            return run
        context = await self._context(run_id)
        assert context is not None
        now = self.clock()
        for record in await self.store.list_nodes(run_id):
            if record.status == NodeStatus.RUNNING:
                await self.store.resolve_node(
                    run_id, record.node_id, NodeStatus.READY, now, expected=(NodeStatus.RUNNING,)
                )
                await self.dispatcher.node_ready(
                    run_id, record.node_id, record.attempt, record.pool
                )
            elif record.status == NodeStatus.READY:
                await self.dispatcher.node_ready(
                    run_id, record.node_id, record.attempt, record.pool
                )
            elif record.status == NodeStatus.RETRYING:
                await self.retries.schedule(
                    run_id, record.node_id, record.attempt + 1, record.next_attempt_at or now
                )
            elif record.status == NodeStatus.WAITING_APPROVAL:
                await self._arm_approval(
                    run_id, record.node_id, record.attempt, record.next_attempt_at or now
                )
            elif record.status in TERMINAL_NODE:
                await self.dispatcher.node_finished(run_id, record.node_id, record.status)
        return run
