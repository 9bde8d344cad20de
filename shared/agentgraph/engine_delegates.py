"""The engine's half of agents as tools (`delegates`; decisions in `core/delegation.py`).

Order, and what a crash at each point leaves:
1. the caller's tool loop meets delegate calls with no final answer yet and raises
   DelegationSuspended (every completed step of the turn is already recorded);
2. `add_instances` creates the turn's delegates if absent (a repeat creates nothing);
3. `expand_node` moves the caller to `expanded`: no lease, no worker, no function
   instance; the sweeper leaves it alone; cancelling the run cancels it;
4. node-ready for the delegates not yet started.
A crash before 3 leaves the caller running: its lease lapses, it is taken over, replays
its steps, meets the same calls and re-plans: the same ids, nothing added twice. A crash
before 4 leaves ready delegates unsent: the sweeper (or `resume`) re-sends node-ready for
nodes ready too long, and a repeated node-ready of the caller re-sends them too.

A delegate finishing (its node-finished) reads its siblings (every delegate of the same
turn); when all are final, the caller goes expanded -> ready at the same attempt (once:
the transition is conditional) and is sent node-ready. Each delegate writes its final
status before sending its node-finished, so the last one to finish always sees the rest
final. Its tool loop then replays: the delegates' outputs become the calls' results.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentgraph.core import agent_loop, delegation
from agentgraph.core.errors import DelegationSuspended
from agentgraph.core.graph import Node
from agentgraph.core.llm_port import FunctionCall
from agentgraph.core.records import NodeRecord, Step
from agentgraph.core.status import NodeStatus
from agentgraph.engine_parts import EngineParts

if TYPE_CHECKING:
    from agentgraph.engine import RunContext

log = logging.getLogger("agentgraph.engine")


class Delegation(EngineParts):
    """Suspending a caller on its delegates and waking it; mixed into Engine."""

    if TYPE_CHECKING:  # provided by Engine

        async def _ended_meanwhile(self, run_id: str) -> bool: ...

        async def _record(self, run_id: str, node_id: str, step: Step) -> Step: ...

    async def _delegate_steps(
        self,
        run_id: str,
        node: Node,
        attempt: int,
        turn: int,
        calls: list[tuple[int, FunctionCall]],
        into: list[Step],
    ) -> None:
        """The delegate calls of a turn: those whose delegate has finished are recorded
        as steps; if any has not (or does not exist yet), the node suspends."""
        delegation.check_depth(node)
        now = self.clock()
        valid = []
        for index, call in calls:
            if delegation.task_of(call) is None:
                step = delegation.bad_task_step(index, turn, attempt, call, now)
                into.append(await self._record(run_id, node.id, step))
            else:
                valid.append((index, call))
        if not valid:
            return
        ids = [delegation.child_id(node.id, c.name, i) for i, c in valid]
        found = await self.store.get_outputs(run_id, ids)
        if all(found.get(i) is not None and found[i].status.terminal for i in ids):
            for (index, call), child_id in zip(valid, ids, strict=True):
                step = delegation.result_step(index, turn, attempt, call, found[child_id], now)
                into.append(await self._record(run_id, node.id, step))
            return
        records = [delegation.record(run_id, node, i, c, ids) for i, c in valid]
        raise DelegationSuspended(records)

    async def _suspend(
        self, run_id: str, node: Node, attempt: int, suspended: DelegationSuspended
    ) -> None:
        """Steps 2-4 of the module docstring."""
        records: list[NodeRecord] = suspended.records
        now = self.clock()
        await self.store.add_instances(run_id, records, now)
        if not await self.store.expand_node(run_id, node.id, attempt, len(records), now):
            return  # no longer this attempt's (taken over): that execution goes on
        if await self._ended_meanwhile(run_id):
            return
        await self._send_delegates(run_id, node.id, [r.node_id for r in records])

    async def _send_delegates(self, run_id: str, caller_id: str, ids: list[str]) -> None:
        """node-ready for the delegates not started yet; when every one has already
        finished (a re-plan after a takeover), wake the caller at once."""
        found = await self.store.get_outputs(run_id, ids)
        if ids and all(found.get(i) is not None and found[i].status.terminal for i in ids):
            await self._wake_caller(run_id, caller_id)
            return
        for record in found.values():
            if record.status == NodeStatus.READY and not record.executions:
                await self.dispatcher.node_ready(run_id, record.node_id, 1, record.pool)

    async def _delegate_finished(self, run_id: str, node: Node, record: NodeRecord) -> None:
        """A delegate reached a final status: wake its caller if it was the last of its
        turn. Repeating this is safe (the wake is conditional)."""
        assert node.delegate_of is not None
        siblings = delegation.siblings_of(record)
        others = [s for s in siblings if s != record.node_id]
        found = await self.store.get_outputs(run_id, others) if others else {}
        if all(found.get(i) is not None and found[i].status.terminal for i in others):
            await self._wake_caller(run_id, node.delegate_of)

    async def _wake_caller(self, run_id: str, caller_id: str) -> None:
        """expanded -> ready at the same attempt, then node-ready. A caller already woken
        but not yet claimed gets its node-ready again (a crash may have lost it; a
        claim happens once)."""
        caller = await self.store.get_node(run_id, caller_id)
        if caller is None or await self._has_ended(run_id):
            return
        if caller.status == NodeStatus.EXPANDED:
            if not await self.store.resolve_node(
                run_id, caller_id, NodeStatus.READY, self.clock(), expected=(NodeStatus.EXPANDED,)
            ):
                return
        elif caller.status != NodeStatus.READY:
            return
        await self.dispatcher.node_ready(run_id, caller_id, caller.attempt, caller.pool)

    async def _redispatch_delegates(self, run_id: str, node: Node) -> None:
        """A repeated node-ready of a suspended caller: its first delivery may have died
        before sending node-ready for its delegates (step 4)."""
        state = agent_loop.replay(await self.store.list_steps(run_id, node.id))
        ids = [
            delegation.child_id(node.id, call.name, index)
            for index, call in state.pending
            if delegation.parse(delegation.child_id(node.id, call.name, index)) is not None
        ]
        found = await self.store.get_outputs(run_id, ids) if ids else {}
        await self._send_delegates(run_id, node.id, list(found))


def resolve(context: RunContext, node_id: str) -> Node | None:
    """The Node a delegate's id runs as (None when it is not one): its caller resolved
    through the run context (itself possibly a delegate), then its profile."""
    parsed = delegation.parse(node_id)
    if parsed is None:
        return None
    caller_id, profile, _ = parsed
    caller = context.node(caller_id)
    if caller is None or caller.kind != "agent" or caller.controller:
        return None
    return delegation.node(caller, context.graph, node_id, profile)
