"""The engine's node-finished half: the fan-in from a finished node to its children, and
the end of a run. Part of `Engine` (`engine.py`), split off along the message kinds.

Each step is safe to repeat: arrivals are recorded once per edge, a child is decided by
one conditional transition, and a repeated delivery only re-sends what a crash may have
cut short (see `_finish_decision`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from agentgraph.core import grow, readiness
from agentgraph.core.errors import TemplateProblem
from agentgraph.core.graph import Node
from agentgraph.core.model import OnError
from agentgraph.core.readiness import Decision, ParentResult, Verdict
from agentgraph.core.records import NodeRecord, NodeState
from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus
from agentgraph.core.templates import condition_holds
from agentgraph.engine_parts import EngineParts
from agentgraph.observability import metrics, tracing

if TYPE_CHECKING:
    from agentgraph.engine import RunContext

log = logging.getLogger("agentgraph.engine")
_UNFINISHED = tuple(s for s in NodeStatus if s not in TERMINAL_NODE)

# From this many parents (or a controller's arrivals), the arrivals that see a full count
# claim the decision (`Store.claim_decision`: a read and a write) before reading every
# parent; below it, the rare race of two arrivals costs fewer reads than claiming always.
CLAIM_FROM_PARENTS = 16


class FanIn(EngineParts):
    """node-finished: arrivals, deciding children, ending runs."""

    if TYPE_CHECKING:  # provided by Engine

        async def _arrive_at_controller(
            self,
            run_id: str,
            context: RunContext,
            unit: Node,
            record: NodeRecord,
            controller_id: str,
        ) -> None: ...

        async def _delegate_finished(self, run_id: str, node: Node, record: NodeRecord) -> None: ...

    async def complete(self, run_id: str, node_id: str, status: NodeStatus | str) -> None:
        """Record this node's arrival at each child, once per edge; the arrival that
        completes a child's set of parents decides the child. A sink may end the run.

        The status in the message is a hint, and decisions follow the node's stored
        record, with one exception that saves a read per node: a plain node (no delegate,
        no instance arriving at its controller) whose message says "succeeded" is taken
        at its word. "succeeded" is final (a redrive keeps succeeded nodes), and only
        agentgraph's functions may publish node-finished, each after writing the status
        it sends (Pub/Sub IAM: docs/security.md).
        Any other status is read back, so a forged or stale "failed" (for a node that is
        running, or that succeeded, or was redriven since) changes nothing."""
        context = await self._context(run_id)
        node = context.node(node_id) if context is not None else None
        if context is None or node is None:
            log.warning("node-finished for unknown run/node %s/%s: dropped", run_id, node_id)
            return
        to_controller = grow.is_instance(node_id) and any(
            _contains(c, node_id) for c in node.children
        )
        if status == NodeStatus.SUCCEEDED and node.delegate_of is None and not to_controller:
            await self._arrive_all(run_id, context, node, NodeStatus.SUCCEEDED)
            return
        record = await self.store.get_node(run_id, node_id)
        if record is None or not record.status.terminal:
            log.warning(
                "node-finished for %s/%s, which is %s in the store: ignored",
                run_id,
                node_id,
                record.status.value if record else "absent",
            )
            return
        if record.status != status:
            log.warning(
                "node-finished for %s/%s says %s; the store says %s: following the store",
                run_id,
                node_id,
                status,
                record.status.value,
            )
        status = record.status
        if status == NodeStatus.FAILED and node.on_error == OnError.FAIL_RUN:
            error = record.error.to_dict() if record.error else {}
            await self._end_run(run_id, RunStatus.FAILED, {"node_id": node_id, **error})
            return
        if status == NodeStatus.CANCELLED:
            return
        if node.delegate_of is not None:  # a delegate: its caller waits for it
            await self._delegate_finished(run_id, node, record)
            return
        if to_controller:  # an item, an iteration or a body's sink: its controller decides
            await self._arrive_at_controller(run_id, context, node, record, node.children[0])
            return
        await self._arrive_all(run_id, context, node, status)

    async def _arrive_all(
        self, run_id: str, context: RunContext, node: Node, status: NodeStatus
    ) -> None:
        """Arrive at every child; a sink instead sees whether the run is done (reading the
        sinks' outputs itself, so a trusted "succeeded" needs no record here)."""
        if len(node.children) == 1:
            await self._arrive(run_id, context, node.id, status, node.children[0])
        else:
            await asyncio.gather(
                *(self._arrive(run_id, context, node.id, status, c) for c in node.children)
            )
        if not node.children:
            await self._finish_run_if_done(run_id, context)

    async def _arrive(
        self,
        run_id: str,
        context: RunContext,
        parent_id: str,
        status: NodeStatus,
        child_id: str,
    ) -> None:
        """A child with one parent needs no arrival record: this arrival is the last, and
        the conditional waiting -> ready|skipped|failed that decides it is already
        exactly-once (a duplicate finds it decided and, like a duplicate arrival, only
        re-sends what `_finish_decision` owes)."""
        child = context.node(child_id)
        assert child is not None, child_id
        finished = (parent_id, status)
        if len(child.parents) == 1:
            if not await self._decide_child(run_id, context, child, finished):
                await self._finish_decision(run_id, context, child)
            return
        count = await self.store.record_arrival(
            run_id,
            child_id,
            parent_id,
            child.parents.index(parent_id),
            len(child.parents),
            succeeded=status == NodeStatus.SUCCEEDED,
        )
        if count is None:  # duplicate: finish what a crash may have cut short
            await self._finish_decision(run_id, context, child)
            return
        # Arrivals racing may each see the full count; the decision is conditional, and
        # from CLAIM_FROM_PARENTS parents on only the claim's winner reads them all.
        wide = len(child.parents) >= CLAIM_FROM_PARENTS
        if count >= len(child.parents) and (
            not wide or await self.store.claim_decision(run_id, child_id)
        ):
            await self._decide_child(run_id, context, child, finished)

    async def _finish_decision(self, run_id: str, context: RunContext, child: Node) -> None:
        """A repeated node-finished: the first delivery may have died after the last
        arrival but before deciding the child, or after deciding to skip or fail it but
        before sending its node-finished; nothing else would ever send that one, as the
        child is terminal. Re-sending it is safe (receivers are idempotent).

        A child decided ready gets no second node-ready here: duplicates usually race the
        original, and a node-ready a crash lost is re-sent by the sweeper (or `resume`),
        which finds nodes left ready too long."""
        record = await self.store.get_node(run_id, child.id)
        if record is None:
            return
        # A one-parent child keeps no arrival count: its only parent has finished.
        if record.status == NodeStatus.WAITING and (
            len(child.parents) == 1
            or await self.store.get_arrival_count(run_id, child.id) >= len(child.parents)
        ):
            await self._decide_child(run_id, context, child)
        elif record.status in (NodeStatus.SKIPPED, NodeStatus.FAILED) and not record.executions:
            await self.dispatcher.node_finished(run_id, child.id, record.status)

    async def _decide_child(
        self,
        run_id: str,
        context: RunContext,
        child: Node,
        finished: tuple[str, NodeStatus] | None = None,
    ) -> bool:
        """`_decide`, as one span of the run's trace (the fan-in decision)."""
        with tracing.span(f"fanin {child.id}", {tracing.NODE_ID: child.id}):
            return await self._decide(run_id, context, child, finished)

    async def _decide(
        self,
        run_id: str,
        context: RunContext,
        child: Node,
        finished: tuple[str, NodeStatus] | None = None,
    ) -> bool:
        """Decide a child whose parents have all arrived; False when the child was no
        longer waiting (decided by an earlier delivery, or cancelled).

        `finished` is the parent whose node-finished message this is, with its status:
        a final status never changes once written, and the message is sent only after
        it was, so that parent's record need not be read (unless it was skipped: the
        skip's reason decides whether the skip is contagious). The others are read
        without their outputs (`Store.get_statuses`) unless the child's `when` reads
        them. A wide child without `when` whose parents all arrived succeeded reads none
        of them (`Store.count_succeeded_arrivals`: one aggregation instead of a read each)."""
        known: dict[str, ParentResult] = {}
        if finished is not None and finished[1] in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
            parent_id, parent_status = finished
            known[parent_id] = ParentResult(parent_status, _node(context, parent_id).on_error)
        rest = [p for p in child.parents if p not in known]
        if (
            rest
            and len(child.parents) >= CLAIM_FROM_PARENTS
            and child.when is None
            and await self.store.count_succeeded_arrivals(run_id, child.id) >= len(child.parents)
        ):  # every parent arrived succeeded: no need to read them
            known.update(
                (p, ParentResult(NodeStatus.SUCCEEDED, _node(context, p).on_error)) for p in rest
            )
            rest = []
        # The decision needs the parents' statuses; a `when` also reads the outputs it
        # names (`_values`). So each parent is read once, with its output only if the
        # condition reads it: an output may be megabytes (chunked in Firestore).
        named = {child.scope + r for r in child.reads} if child.when is not None else set()
        with_output = [p for p in rest if p in named]
        parents = await self.store.get_outputs(run_id, with_output) if with_output else {}
        states = {pid: NodeState(r.status, r.skip_reason) for pid, r in parents.items()}
        status_only = [p for p in rest if p not in named]
        if status_only:
            states.update(await self.store.get_statuses(run_id, status_only))
        decision = readiness.decide(
            {
                **known,
                **{
                    pid: ParentResult(state.status, _node(context, pid).on_error, state.skip_reason)
                    for pid, state in states.items()
                },
            }
        )
        now = self.clock()
        ended = decision.verdict == Verdict.READY and await self._has_ended(run_id)
        if ended:
            decision = Decision(Verdict.CANCEL, readiness.RUN_ENDED)
        if decision.verdict == Verdict.READY and child.when is not None:
            own = await self.store.get_node(run_id, child.id) if child.scope else None
            values = await self._values(run_id, context, child, own, parents)
            try:
                decision = readiness.apply_condition(condition_holds(child.when, values))
            except TemplateProblem as exc:
                if await self.store.resolve_node(
                    run_id, child.id, NodeStatus.FAILED, now, reason=f"when: {exc}"
                ):
                    await self.dispatcher.node_finished(run_id, child.id, NodeStatus.FAILED)
                    return True
                return False
        tracing.annotate(agentgraph__fanin__verdict=decision.verdict.value)
        if decision.verdict == Verdict.READY:
            if await self.store.resolve_node(run_id, child.id, NodeStatus.READY, now):
                await self.dispatcher.node_ready(run_id, child.id, 1, child.pool)
                return True
        elif decision.verdict == Verdict.SKIP:
            if await self.store.resolve_node(
                run_id, child.id, NodeStatus.SKIPPED, now, reason=decision.reason
            ):
                await self.dispatcher.node_finished(run_id, child.id, NodeStatus.SKIPPED)
                return True
        elif decision.verdict == Verdict.CANCEL:
            return await self.store.resolve_node(
                run_id,
                child.id,
                NodeStatus.CANCELLED,
                now,
                reason=decision.reason,
                while_run_ended=ended,  # not if a redrive reset it since the read
            )
        return False

    async def _finish_run_if_done(self, run_id: str, context: RunContext) -> None:
        """Only sinks call this: the last node of a run to reach a final status is always
        a sink, and it does so after every other node's status was written. A sink that
        is not the last pays one count (of the unfinished nodes); the last one also counts
        the failed nodes. The run's status is read only when some failed (before reading
        every node): `set_run_status` changes only a running or pending run anyway."""
        if await self.store.count_nodes(run_id, _UNFINISHED):
            return
        graph = context.graph
        outcome = RunStatus.SUCCEEDED
        error = None
        if await self.store.count_nodes(run_id, (NodeStatus.FAILED,)):
            run = await self.store.get_run_summary(run_id, counts=False)
            if run is None or run.status.terminal:
                return  # ended (cancelled, failed): not worth reading every node
            statuses = {r.node_id: r.status for r in await self.store.list_nodes(run_id)}
            outcome = readiness.run_outcome(graph, statuses) or RunStatus.SUCCEEDED
            if outcome == RunStatus.FAILED:
                failed = next(
                    n
                    for n in graph.nodes
                    if statuses[n] == NodeStatus.FAILED and graph[n].on_error == OnError.FAIL_RUN
                )
                error = {"node_id": failed, "message": f"node {failed!r} failed"}
        sinks = await self.store.get_outputs(run_id, graph.sinks)
        outputs = {
            sid: rec.output for sid, rec in sinks.items() if rec.status == NodeStatus.SUCCEEDED
        }
        if await self.store.set_run_status(
            run_id,
            (RunStatus.RUNNING, RunStatus.PENDING),
            outcome,
            self.clock(),
            outputs=outputs,
            error=error,
        ):
            metrics.instruments().runs_finished.add(1, {"status": outcome.value})

    async def _has_ended(self, run_id: str) -> bool:
        """Whether this process ended the run (no read), unless it was redriven since
        (one read, only for runs this process ended): another instance may have redriven
        it, and its nodes must then run, not be cancelled."""
        if run_id not in self._ended:
            return False
        run = await self.store.get_run_summary(run_id, counts=False)
        if run is not None and not run.status.terminal:
            self._ended.pop(run_id)
            return False
        return True

    async def _end_run(self, run_id: str, status: RunStatus, error: dict[str, Any] | None) -> bool:
        """Fail or cancel: the run first (so nothing new starts), then whatever has not
        started. Repeating it is harmless, which is what a redelivery needs."""
        changed = await self.store.set_run_status(
            run_id, (RunStatus.PENDING, RunStatus.RUNNING), status, self.clock(), error=error
        )
        if changed:
            metrics.instruments().runs_finished.add(1, {"status": status.value})
        # Remembered so this process starts nothing of the run from now on: a sibling
        # finishing while the cancel below is in flight must not make a child ready
        # that the cancel's query has already passed (no read needed to know).
        self._ended.put(run_id, None)
        await self.store.cancel_not_started(run_id, self.clock())
        return changed


def _contains(controller_id: str, instance_id: str) -> bool:
    """Whether an instance is one of a controller's own (its item, iteration, inner node)."""
    return instance_id.startswith(controller_id) and instance_id[len(controller_id)] in "[@/"


def _node(context: RunContext, node_id: str) -> Node:
    node = context.node(node_id)
    assert node is not None, node_id
    return node
