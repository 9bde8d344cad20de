"""The engine's half for runs that grow: expanding a map, loop or subgraph node into
instances, and deciding it from their arrivals. Part of `Engine` (`engine.py`); what to
add and how a controller ends is decided in `core/grow.py`.

Order, and what a crash at each point leaves:
1. the controller is claimed like any node (running, with a lease);
2. `add_instances` creates the instances if absent (a repeat creates nothing);
3. `expand_node` moves the controller to `expanded` (no lease, no worker);
4. node-ready for the ready instances (node-finished for skipped body roots).
A crash before 3 leaves the controller running: its lease expires, it is taken over and
expands again, adding nothing new. A crash before 4 leaves ready instances unsent: the
sweeper (or `resume`) re-sends node-ready for nodes ready too long, and a redelivered
node-ready of the controller re-sends what its expansion owes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentgraph.core import grow, readiness, stored_subgraphs
from agentgraph.core.errors import ExpansionError, TemplateProblem
from agentgraph.core.graph import Node
from agentgraph.core.ports import GraphStore
from agentgraph.core.records import NodeError, NodeRecord, Outcome
from agentgraph.core.status import NodeStatus
from agentgraph.core.templates import condition_holds
from agentgraph.engine_fanin import CLAIM_FROM_PARENTS
from agentgraph.engine_parts import EngineParts

if TYPE_CHECKING:
    from agentgraph.engine import RunContext

log = logging.getLogger("agentgraph.engine")


class Growth(EngineParts):
    """Expanding controllers and deciding them."""

    async def _expand(
        self, run_id: str, context: RunContext, node: Node, claimed: NodeRecord, attempt: int
    ) -> None:
        """A claimed controller adds its instances and waits for them (see the module
        docstring); a map that cannot expand (not a list, too many items) fails."""
        bindings = grow.bindings_of(claimed)
        try:
            expansion = await self._plan(run_id, context, node, claimed, bindings)
        except (ExpansionError, TemplateProblem) as exc:
            error = NodeError(type(exc).__name__, str(exc), False, None, attempt)
            await self._finish_controller(
                run_id, node, attempt, Outcome(NodeStatus.FAILED, error=error)
            )
            return
        if not expansion.records:  # an empty map
            await self._finish_controller(
                run_id, node, attempt, Outcome(NodeStatus.SUCCEEDED, output=[])
            )
            return
        now = self.clock()
        await self.store.add_instances(run_id, expansion.records, now)
        if not await self.store.expand_node(run_id, node.id, attempt, expansion.expect, now):
            return  # no longer this attempt's (taken over): the other expansion sends
        if await self._ended_meanwhile(run_id):
            return
        await self._send(run_id, expansion.records)

    async def _ended_meanwhile(self, run_id: str) -> bool:
        """Instances added while the run was being cancelled (or failed) may have come
        after its cancel's query: cancel what has not started once more, so nothing of
        an ended run starts. One read of the run per expansion."""
        run = await self.store.get_run_summary(run_id, counts=False)
        if run is None or not run.status.terminal:
            return False
        self._ended.put(run_id, None)
        await self.store.cancel_not_started(run_id, self.clock())
        return True

    async def _plan(
        self,
        run_id: str,
        context: RunContext,
        node: Node,
        claimed: NodeRecord,
        bindings: dict[str, Any],
    ) -> grow.Expansion:
        if node.map is not None:
            values = await self._values(run_id, context, node, claimed)
            items = grow.evaluate_map(node, values)
            expansion = grow.expand_map(run_id, node, items, bindings)
        elif node.loop is not None:
            expansion = grow.Expansion([grow.expand_iteration(run_id, node, 1, None, bindings)], 1)
        else:
            assert node.body is not None
            values = {**bindings, "input": context.input, "nodes": {}}
            skipped = {
                root.id: readiness.CONDITION_FALSE
                for root in node.body.nodes.values()
                if not root.parents and root.when is not None
                if not condition_holds(root.when, values)
            }
            expansion = grow.expand_body(run_id, node, bindings, skipped)
        if expansion.records:
            run = await self.store.get_run_summary(run_id, counts=False)
            first = await self.store.get_node(run_id, expansion.records[0].node_id)
            if run is not None and first is None:  # a repeated expansion adds nothing
                grow.check_capacity(node, run.node_count, len(expansion.records))
        return expansion

    async def _finish_controller(
        self, run_id: str, node: Node, attempt: int, outcome: Outcome
    ) -> None:
        if await self.store.finish_node(run_id, node.id, attempt, outcome, self.clock()):
            await self.dispatcher.node_finished(run_id, node.id, outcome.status)

    async def _send(self, run_id: str, records: list[NodeRecord]) -> None:
        for record in records:
            if record.status == NodeStatus.READY:
                await self.dispatcher.node_ready(run_id, record.node_id, 1, record.pool)
            elif record.status == NodeStatus.SKIPPED:
                await self.dispatcher.node_finished(run_id, record.node_id, record.status)

    async def _redispatch_expansion(self, run_id: str, node: Node) -> None:
        """A repeated node-ready of an expanded controller: its first delivery may have
        died before sending node-ready for its instances. Re-sending is safe (a claim
        happens once); the instances still ready or skipped are sent again."""
        if node.loop is not None:
            return  # its iterations are sent by the one before; the sweeper covers a loss
        context_ids: list[str]
        if node.map is not None:
            record = await self.store.get_node(run_id, node.id)
            expect = grow.expected_of(record) if record else 0
            lanes = min(expect, grow.lanes_of(node))
            context_ids = [grow.item_id(node.id, i) for i in range(lanes)]
        else:
            assert node.body is not None
            context_ids = [f"{node.id}/{root}" for root in node.body.roots]
        found = await self.store.get_outputs(run_id, context_ids)
        await self._send(run_id, [r for r in found.values() if not r.executions and r.attempt == 1])

    # ---- deciding a controller from its instances ---------------------------------------

    async def _arrive_at_controller(
        self,
        run_id: str,
        context: RunContext,
        unit: Node,
        record: NodeRecord,
        controller_id: str,
    ) -> None:
        """An instance that a controller waits for has finished (an item, an iteration,
        a body's sink)."""
        controller = context.node(controller_id)
        if controller is None:
            return
        position = grow.unit_of(unit.id)
        if controller.loop is not None and position is not None:
            await self._after_iteration(run_id, context, controller, record, position[1])
            return
        counted = await self.store.record_arrival(run_id, controller_id, unit.id)
        state = await self.store.get_node(run_id, controller_id)
        if state is None:
            return
        if controller.map is not None and position is not None:
            await self._release_lane(run_id, controller, state, position[1].index or 0)
        if state.status.terminal:
            if counted is None:  # a repeat: the first may have died before sending this
                await self.dispatcher.node_finished(run_id, controller_id, state.status)
            return
        if state.status != NodeStatus.EXPANDED:
            return
        needed = grow.arrivals_needed(controller, state)
        if counted is None:  # a repeat: the first may have died before deciding
            counted = await self.store.get_arrival_count(run_id, controller_id)
        if counted < needed:
            return
        # Arrivals racing may each see the full count (settling is conditional); from
        # CLAIM_FROM_PARENTS on, only the claim's winner reads every instance. A repeat
        # does not claim: it finishes what a crash of the winner left.
        if needed >= CLAIM_FROM_PARENTS and not await self.store.claim_decision(
            run_id, controller_id
        ):
            return
        if controller.map is not None:
            ids = [grow.item_id(controller_id, i) for i in range(grow.expected_of(state))]
            found = await self.store.get_outputs(run_id, ids)
            outcome = grow.map_outcome(controller, [found.get(i) for i in ids])
        else:
            assert controller.body is not None
            ids = [f"{controller_id}/{inner}" for inner in controller.body.nodes]
            found = await self.store.get_outputs(run_id, ids)
            inner = {i.rpartition("/")[2]: r for i, r in found.items()}
            outcome = grow.body_outcome(controller, inner, grow.bindings_of(state), context.input)
        await self._settle(run_id, controller_id, outcome)

    async def _settle(self, run_id: str, controller_id: str, outcome: Outcome) -> None:
        outcome = _within_output_limit(outcome)
        if await self.store.settle_node(run_id, controller_id, outcome, self.clock()):
            await self.dispatcher.node_finished(run_id, controller_id, outcome.status)

    async def _release_lane(
        self, run_id: str, controller: Node, state: NodeRecord, index: int
    ) -> None:
        """An item finishing releases the next item of its lane (waiting -> ready,
        exactly once: the transition is conditional; a repeat re-checks it)."""
        following = index + grow.lanes_of(controller)
        if (
            state.status != NodeStatus.EXPANDED
            or following >= grow.expected_of(state)
            or await self._has_ended(run_id)
        ):
            return
        successor = grow.item_id(controller.id, following)
        if await self.store.resolve_node(run_id, successor, NodeStatus.READY, self.clock()):
            await self.dispatcher.node_ready(run_id, successor, 1, controller.pool)

    async def _after_iteration(
        self,
        run_id: str,
        context: RunContext,
        controller: Node,
        record: NodeRecord,
        segment: grow.Segment,
    ) -> None:
        """Iteration k finished: the loop ends, or iteration k + 1 is added (once: its
        creation is create-if-absent; a repeat re-sends its node-ready only while it is
        still ready)."""
        iteration = segment.iteration or 1
        step = grow.loop_step(
            controller, iteration, record, grow.bindings_of(record), context.input
        )
        if isinstance(step, Outcome):
            step = _within_output_limit(step)
            if await self.store.settle_node(run_id, controller.id, step, self.clock()):
                await self.dispatcher.node_finished(run_id, controller.id, step.status)
                return
            state = await self.store.get_node(run_id, controller.id)
            if state is not None and state.status.terminal:  # a repeat: re-send
                await self.dispatcher.node_finished(run_id, controller.id, state.status)
            return
        state = await self.store.get_node(run_id, controller.id)
        if state is None or state.status != NodeStatus.EXPANDED or await self._has_ended(run_id):
            return
        bindings = grow.bindings_of(state)
        nxt = grow.expand_iteration(run_id, controller, step.iteration, step.previous, bindings)
        created = await self.store.add_instances(run_id, [nxt], self.clock())
        if await self._ended_meanwhile(run_id):
            return
        if not created:
            existing = await self.store.get_node(run_id, nxt.node_id)
            if existing is None or existing.status != NodeStatus.READY or existing.executions:
                return
        await self.dispatcher.node_ready(run_id, nxt.node_id, 1, nxt.pool)


def _within_output_limit(outcome: Outcome) -> Outcome:
    """A map's list of outputs is an output like any other: over the size limit
    (`MAX_OUTPUT_BYTES`), the map fails with OutputTooLarge instead."""
    from agentgraph.engine import MAX_OUTPUT_BYTES  # engine imports this module

    if outcome.status != NodeStatus.SUCCEEDED:
        return outcome
    size = len(json.dumps(outcome.output, ensure_ascii=False).encode())
    if size <= MAX_OUTPUT_BYTES:
        return outcome
    message = f"output is {size:,} bytes; the limit is {MAX_OUTPUT_BYTES:,} bytes"
    return Outcome(NodeStatus.FAILED, error=NodeError("OutputTooLarge", message, False))


async def resolve_stored_subgraphs(
    document: dict[str, Any], owner: str, graphs: GraphStore
) -> dict[str, Any]:
    """`graph: name@version` subgraphs replaced by the owner's stored definitions (the
    latest version when none is named), before the run is validated and written. A
    reference to a graph that does not exist is left in place: validation names it."""
    for _ in range(stored_subgraphs.MAX_REF_ROUNDS):
        refs = stored_subgraphs.graph_refs(document)
        if not refs:
            break
        stored: dict[stored_subgraphs.GraphRef, Mapping[str, Any]] = {}
        for name, version in refs:
            found = await graphs.get(owner, name, version)
            if found is not None:
                stored[(name, version)] = found.definition
        if not stored:
            break
        document = stored_subgraphs.inline_graph_refs(document, stored)
    return document
