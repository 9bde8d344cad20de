"""Redrive, as a pure plan: which nodes of a failed or cancelled run run again, and in
which status they start (Step Functions' redrive).

Nodes that succeeded keep their outputs and are not run again, and a node still running
(a straggler of the run's end) is left to finish; every other node runs again with a
fresh attempt 1: failed and cancelled nodes, nodes that never ran, and skipped nodes whose
skip came from the failure (`upstream_failed`, `run_ended`) or that sit below a node that
runs again (their condition may now hold). A node skipped by its own false condition,
under parents that all stay, stays skipped: it would be skipped again.

A node starts `ready` when nothing is left to decide: a root, or a node without `when`
whose parents all succeeded and stay. Any other starts `waiting` and is decided by the
fan-in as its parents finish (or, for parents that stay and have already finished, by the
engine right after the run is running again).
"""

from __future__ import annotations

from collections.abc import Mapping

from agentgraph.core.graph import Graph
from agentgraph.core.ports import NodeRecord
from agentgraph.core.readiness import RUN_ENDED, UPSTREAM_FAILED
from agentgraph.core.status import NodeStatus

_STAYS = frozenset({NodeStatus.SUCCEEDED, NodeStatus.RUNNING})
_FAILURE_SKIPS = frozenset({UPSTREAM_FAILED, RUN_ENDED})


def plan(graph: Graph, records: Mapping[str, NodeRecord]) -> dict[str, NodeStatus]:
    """node id -> the status it starts again in (waiting or ready), in topological order."""
    again: dict[str, NodeStatus] = {}
    for node_id, node in graph.nodes.items():
        record = records.get(node_id)
        if record is None or record.status in _STAYS:
            continue
        if (
            record.status == NodeStatus.SKIPPED
            and record.skip_reason not in _FAILURE_SKIPS
            and not any(p in again for p in node.parents)
        ):
            continue
        settled = node.when is None and all(
            p not in again and records[p].status == NodeStatus.SUCCEEDED for p in node.parents
        )
        again[node_id] = NodeStatus.READY if not node.parents or settled else NodeStatus.WAITING
    return again


def decided_by_engine(graph: Graph, again: Mapping[str, NodeStatus]) -> list[str]:
    """Nodes that start waiting although every parent stays (a `when`, a parent skipped,
    or one still running): parents that have finished will not send node-finished again,
    so the engine decides them once the run is running (a decision that finds a parent
    still running waits for that parent's node-finished, as usual)."""
    return [
        node_id
        for node_id, status in again.items()
        if status == NodeStatus.WAITING and all(p not in again for p in graph[node_id].parents)
    ]
