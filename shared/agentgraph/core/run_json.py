"""A run and its nodes as plain JSON: what `agentgraph run --json` prints and the api
returns. Here, not in the terminal view, so the HTTP function does not depend on rich."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentgraph.core.records import NodeRecord, RunRecord
from agentgraph.core.status import NodeStatus


def run_to_json(run: RunRecord, nodes: Sequence[NodeRecord]) -> dict[str, Any]:
    """The run record for scripts: stable keys, plain JSON values."""
    return {
        "run_id": run.run_id,
        "graph": run.graph_name,
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "usage": run.usage.to_dict(),
        "outputs": run.outputs,
        "error": run.error,
        "counts": {k: v for k, v in run.counts.items() if v},
        "nodes": [
            {
                "id": n.node_id,
                "status": n.status.value,
                "parents": list(n.parents),
                "attempts": n.attempt if n.status != NodeStatus.WAITING else 0,
                "executions": n.executions,
                "output": n.output,
                "error": n.error.to_dict() if n.error else None,
                "usage": n.usage.to_dict(),
                "model": n.model,
                "duration_ms": n.duration_ms,
                "skip_reason": n.skip_reason,
            }
            for n in nodes
        ],
    }
