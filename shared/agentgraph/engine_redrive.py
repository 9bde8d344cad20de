"""The engine's redrive: a failed or cancelled run starts again from where it stopped.
Part of `Engine` (`engine.py`); which nodes run again is `core/redrive.py`'s.

Order: the store resets the nodes and then sets the run running (SQLite: one
transaction; Firestore: node batches guarded by the run still being failed or cancelled,
the run last), so until the run is running nothing of it moves, and a redrive that died
half-way is simply done again. Then the ready nodes are dispatched (a lost node-ready is
re-sent by the sweeper, or by `resume`) and the waiting nodes whose parents all stay are
decided (`resume` re-decides them after a crash). A duplicate request racing the first
finds the run no longer failed and answers `redriven: false`; one after it, a 409.

A run that grew instances is redriven the same way (`core/redrive.py`): owners that run
again go back to `expanded` in the same store transaction; then the node-finished of the
units such an owner would otherwise never hear is sent again (`Plan.rearrive`), which
`resume` also does after a crash, as it re-sends every final node's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentgraph.core import redrive
from agentgraph.core.errors import RedriveConflict, RunNotFound
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.engine_parts import EngineParts

if TYPE_CHECKING:
    from agentgraph.core.graph import Node
    from agentgraph.engine import RunContext

log = logging.getLogger("agentgraph.engine")


class Redrive(EngineParts):
    """`redrive`."""

    if TYPE_CHECKING:  # provided by Engine

        async def _decide_child(
            self,
            run_id: str,
            context: RunContext,
            child: Node,
            finished: tuple[str, NodeStatus] | None = None,
        ) -> bool: ...

    async def redrive(self, run_id: str) -> tuple[bool, list[str]]:
        """Run a failed or cancelled run again: (whether this call redrove it, the nodes
        that run again). RedriveConflict for a run in any other status."""
        run = await self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RedriveConflict(
                f"run {run_id} is {run.status.value}; only a failed or cancelled run can be "
                "redriven"
            )
        context = await self._context(run_id)
        assert context is not None
        records = {r.node_id: r for r in await self.store.list_nodes(run_id)}
        answered: set[str] = set()
        for caller in redrive.callers(records, context.node):
            answered |= redrive.answered(caller, await self.store.list_steps(run_id, caller))
        plan = redrive.plan(context.graph, records, context.node, answered)
        again = plan.again
        if not await self.store.redrive_run(run_id, again, self.clock()):
            after = await self.store.get_run(run_id)
            if after is not None and after.status == RunStatus.RUNNING:
                return False, []  # an identical request won the race
            raise RedriveConflict(f"run {run_id} could not be redriven; it changed meanwhile")
        self._ended.pop(run_id)  # this process ended it once; it runs again
        for node_id, status in again.items():
            node = context.node(node_id)
            if status == NodeStatus.READY and node is not None:
                await self.dispatcher.node_ready(run_id, node_id, 1, node.pool)
        for node_id in plan.decide:
            node = context.node(node_id)
            if node is not None:
                await self._decide_child(run_id, context, node)
        if plan.rearrive:  # a unit still running arrives by itself when it finishes
            for unit in (await self.store.get_outputs(run_id, plan.rearrive)).values():
                if unit.status.terminal:
                    await self.dispatcher.node_finished(run_id, unit.node_id, unit.status)
        return True, list(again)
