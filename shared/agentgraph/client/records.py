"""The api's answers as the records the terminal view reads (`agentgraph.view`), so
`agentgraph run --api` and `show --api` draw a deployed run exactly like a local one.

What the api does not send (the graph snapshot, the input, leases, streamed partial text)
is left empty: the view does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentgraph.api import models
from agentgraph.core.records import Event, NodeError, NodeRecord, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus

if TYPE_CHECKING:
    from agentgraph.client.http import Client


def _usage(usage: models.Usage) -> Usage:
    return Usage.from_dict(usage.model_dump())


def run_record(run: models.RunSummary, node_count: int = 0) -> RunRecord:
    nodes = getattr(run, "nodes", None)
    return RunRecord(
        run_id=run.run_id,
        graph_name=run.graph,
        graph={},
        input=None,
        status=RunStatus(run.status),
        created_at=run.created_at,
        node_count=len(nodes) if nodes is not None else node_count,
        started_at=run.started_at,
        finished_at=run.finished_at,
        counts=dict(run.counts),
        usage=_usage(run.usage),
        outputs=run.outputs,
        error=run.error,
        owner=run.owner,
    )


def node_records(run: models.Run) -> list[NodeRecord]:
    return [
        NodeRecord(
            run_id=run.run_id,
            node_id=node.id,
            status=NodeStatus(node.status),
            parents=list(node.parents),
            children=[],
            attempt=max(1, node.attempts),
            output=node.output,
            error=NodeError.from_dict(node.error),
            duration_ms=node.duration_ms,
            usage=_usage(node.usage),
            model=node.model,
            skip_reason=node.skip_reason,
            executions=node.executions,
        )
        for node in run.nodes
    ]


def event_record(run_id: str, event: models.Event) -> Event:
    return Event(
        run_id=run_id,
        at=event.at,
        kind=event.kind,
        node_id=event.node_id,
        status=event.status,
        attempt=event.attempt,
        message=event.message,
        seq=event.seq,
    )


class RunReader:
    """The read side of a Store (get_run, list_nodes, get_node, list_events) for one run over the
    api, as `agentgraph.view.ProgressView` reads it. Runs and nodes come from the latest
    snapshot the caller gave (`update`), so the view costs no requests of its own; events
    are fetched (the view asks only for those after the last it printed)."""

    def __init__(self, client: Client, run: models.Run) -> None:
        self.client = client
        self.run = run

    def update(self, run: models.Run) -> None:
        self.run = run

    async def get_run(self, run_id: str) -> RunRecord:
        return run_record(self.run)

    async def list_nodes(self, run_id: str) -> list[NodeRecord]:
        return node_records(self.run)

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None:
        """A node of the snapshot (a map's size for folding it: `view_grow`), if listed."""
        return next((r for r in node_records(self.run) if r.node_id == node_id), None)

    async def list_events(self, run_id: str, after: int | None = None) -> list[Event]:
        events = await self.client.events(run_id, after=after or 0)
        return [event_record(run_id, e) for e in events]
