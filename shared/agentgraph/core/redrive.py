"""Redrive, as a pure plan: which nodes of a failed or cancelled run run again, and in
which status they start (Step Functions' redrive, Map redrive included).

Nodes that succeeded keep their outputs and are not run again, and a node still running
(a straggler of the run's end) is left to finish; every other node runs again with a
fresh attempt 1: failed and cancelled nodes, nodes that never ran, and skipped nodes whose
skip came from the failure (`upstream_failed`, `run_ended`) or that sit below a node that
runs again (their condition may now hold). A node skipped by its own false condition,
under parents that all stay, stays skipped: it would be skipped again.

A node starts `ready` when nothing is left to decide: a root, or a node without `when`
whose parents all succeeded and stay. Any other starts `waiting` and is decided by the
fan-in as its parents finish (or, for parents that stay and have already finished, by the
engine right after the run is running again: `Plan.decide`).

Runs that grew instances (core/grow.py, core/delegation.py). Every instance has an
*owner*: a map's item and a loop's iteration their controller, a body's node its
subgraph's controller, a delegate its caller. An instance runs again only when its owner
does: the items of a map that succeeded stay as they are, failed ones included (`on_error:
continue`). An owner that runs again and had expanded keeps its expansion (its map's items
are not evaluated again, like Step Functions' Map redrive): it goes back to `expanded`,
its instances that did not succeed run again, and the arrivals of those are forgotten by
the store (`Store.redrive_run`), so it settles once all its units are final, on the same
arrivals as before. Items keep their lanes: an item starts ready when the item before it
in its lane stays and has finished, else waiting (released when that one finishes), so
`max_concurrency` still holds. An owner that had not expanded (its map expression failed)
runs again like any node and expands then. A caller of delegates goes back to `expanded`
when some delegate it has not read the result of yet runs again (`answered`: the calls
its tool-loop steps already answer, whose delegates stay whatever their status); else it
runs again like any node and replays its steps. What an owner back in `expanded` would
otherwise never hear (all its units stay; a straggler that finished before it was back) is
sent to it again by the engine (`Plan.rearrive`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agentgraph.core import delegation, grow
from agentgraph.core.errors import RedriveConflict
from agentgraph.core.graph import Graph, Node
from agentgraph.core.readiness import RUN_ENDED, UPSTREAM_FAILED
from agentgraph.core.records import NodeRecord, Step
from agentgraph.core.status import NodeStatus

_STAYS = frozenset({NodeStatus.SUCCEEDED, NodeStatus.RUNNING})
_FAILURE_SKIPS = frozenset({UPSTREAM_FAILED, RUN_ENDED})

NodeOf = Callable[[str], Node | None]


@dataclass(frozen=True)
class Plan:
    """What a redrive does. `again`: node id -> the status it starts again in (waiting,
    ready or expanded), in the records' order. `decide`: nodes starting waiting whose
    parents all stay, which the engine decides once the run is running (parents that
    have finished will not send node-finished again). `rearrive`: units of owners back
    in `expanded` whose node-finished the engine sends again once the run is running,
    if they are final by then: those still running when planned (one that finished
    before the owner was back in `expanded` released no lane, added no iteration,
    settled nothing) and, for an owner none of whose units runs again, its final units
    (nothing else would arrive)."""

    again: dict[str, NodeStatus] = field(default_factory=dict)
    decide: list[str] = field(default_factory=list)
    rearrive: list[str] = field(default_factory=list)


def node_resolver(graph: Graph) -> NodeOf:
    """The Node an id runs as, delegates included (what the engine's run context does,
    uncached): for callers that have no run context, such as tests."""

    def node_of(node_id: str) -> Node | None:
        found = grow.instance_node(graph, node_id)
        if found is not None:
            return found
        parsed = delegation.parse(node_id)
        if parsed is None:
            return None
        caller = node_of(parsed[0])
        if caller is None or caller.kind != "agent" or caller.controller:
            return None
        return delegation.node(caller, graph, node_id, parsed[1])

    return node_of


def owner_of(node_id: str, node: Node | None) -> str | None:
    """The node an instance belongs to (see the module docstring); None for a graph node."""
    if node is not None and node.delegate_of is not None:
        return node.delegate_of
    unit = grow.unit_of(node_id)
    if unit is not None:
        return unit[0]
    head, slash, _ = node_id.rpartition("/")
    return head if slash else None


def callers(records: Mapping[str, NodeRecord], node_of: NodeOf) -> set[str]:
    """Callers of delegates that did not succeed: the engine reads their steps to know
    which delegates' results they already hold (`answered`)."""
    found = set()
    for node_id in records:
        node = node_of(node_id)
        caller = node.delegate_of if node is not None else None
        if caller is not None and caller in records and records[caller].status not in _STAYS:
            found.add(caller)
    return found


def answered(caller_id: str, steps: Iterable[Step]) -> set[str]:
    """The delegates whose result a caller's recorded steps already hold."""
    return {
        delegation.child_id(caller_id, step.name, step.index)
        for step in steps
        if step.kind == "tool"
    }


def plan(
    graph: Graph,
    records: Mapping[str, NodeRecord],
    node_of: NodeOf | None = None,
    answered: Collection[str] = frozenset(),
) -> Plan:
    """The redrive of a run with these records (all of its nodes); see the module
    docstring. RedriveConflict for an owner with instances that never finished expanding
    (its workers died mid-expansion until it failed): its instances cannot be trusted."""
    return _Planner(records, node_of or node_resolver(graph), frozenset(answered)).plan()


class _Planner:
    """One plan: each node's owner and instances, and whether it runs again, memoised
    (an instance's answer depends on its owner's, a skipped node's on its parents')."""

    def __init__(
        self, records: Mapping[str, NodeRecord], node_of: NodeOf, answered: frozenset[str]
    ) -> None:
        self.records = records
        self.answered = answered
        self.nodes = {node_id: node_of(node_id) for node_id in records}
        self.owners = {node_id: owner_of(node_id, n) for node_id, n in self.nodes.items()}
        self.instances: dict[str, list[str]] = {}
        for node_id, owner in self.owners.items():
            if owner is not None:
                self.instances.setdefault(owner, []).append(node_id)
        self._again: dict[str, bool] = {}

    def plan(self) -> Plan:
        result = Plan()
        for node_id in self.records:
            if self.runs_again(node_id):
                result.again[node_id] = self.status(node_id)
        for node_id, status in result.again.items():
            node = self.nodes[node_id]
            assert node is not None
            if status == NodeStatus.WAITING and not self.is_unit(node_id):
                if all(self.stays(p) for p in node.parents):
                    result.decide.append(node_id)
            elif status == NodeStatus.EXPANDED and node.controller:
                result.rearrive.extend(self.rearrivals(node_id, node))
        return result

    def runs_again(self, node_id: str) -> bool:
        known = self._again.get(node_id)
        if known is None:
            known = self._again[node_id] = self._runs_again(node_id)
        return known

    def _runs_again(self, node_id: str) -> bool:
        record, node = self.records.get(node_id), self.nodes.get(node_id)
        if record is None or node is None or record.status in _STAYS:
            return False
        if node_id in self.answered:
            return False  # its caller already holds its result
        owner = self.owners[node_id]
        if owner is not None and not self.runs_again(owner):
            return False  # what it is part of stays (succeeded, or still running)
        return not (
            record.status == NodeStatus.SKIPPED
            and record.skip_reason not in _FAILURE_SKIPS
            and not any(self.runs_again(p) for p in self.parents(node_id, node))
        )

    def status(self, node_id: str) -> NodeStatus:
        record, node = self.records[node_id], self.nodes[node_id]
        assert node is not None
        mine = self.instances.get(node_id, [])
        if node.controller and mine:
            if "expect" not in (record.meta or {}):
                raise RedriveConflict(
                    f"node {node_id!r} of run {record.run_id} has instances but never "
                    "finished expanding; start the run again instead"
                )
            return NodeStatus.EXPANDED
        if node.delegates and any(self.runs_again(d) for d in mine):
            return NodeStatus.EXPANDED
        parents = self.parents(node_id, node)
        if self.is_unit(node_id):  # an item or an iteration: its lane decides
            finished = all(self.stays(p) and self.records[p].status.terminal for p in parents)
            return NodeStatus.READY if finished else NodeStatus.WAITING
        settled = node.when is None and all(
            self.stays(p) and self.records[p].status == NodeStatus.SUCCEEDED for p in parents
        )
        return NodeStatus.READY if not parents or settled else NodeStatus.WAITING

    def rearrivals(self, node_id: str, node: Node) -> list[str]:
        """The units of an owner back in `expanded` whose node-finished the engine sends
        again (see `Plan.rearrive`)."""
        units = [i for i in self.instances.get(node_id, []) if self._unit_of(i, node_id)]
        running = [u for u in units if self.records[u].status == NodeStatus.RUNNING]
        if any(self.runs_again(u) for u in units):
            return running
        final = [u for u in units if self.records[u].status.terminal]
        if node.loop is not None and final:
            final = [max(final, key=_iteration)]
        return final + running

    def _unit_of(self, instance_id: str, owner_id: str) -> bool:
        """Whether the owner waits for this instance: an item, an iteration, a sink."""
        node = self.nodes[instance_id]
        return node is not None and node.children == (owner_id,)

    def parents(self, node_id: str, node: Node) -> Sequence[str]:
        """A graph or body node's parents; an item's, the one before it in its lane."""
        if self.is_unit(node_id):
            return [p for p in self.records[node_id].parents if p in self.records]
        return [p for p in node.parents if p in self.records]

    def is_unit(self, node_id: str) -> bool:
        """An item or an iteration (not a delegate, whose id looks like an item's)."""
        node = self.nodes[node_id]
        return node is not None and node.delegate_of is None and grow.unit_of(node_id) is not None

    def stays(self, node_id: str) -> bool:
        return not self.runs_again(node_id)


def _iteration(node_id: str) -> int:
    unit = grow.unit_of(node_id)
    return (unit[1].iteration or 0) if unit else 0
