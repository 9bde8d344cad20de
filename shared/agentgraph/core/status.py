"""Run and node statuses, and which of them are final."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_RUN


class NodeStatus(StrEnum):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    RETRYING = "retrying"
    # A map, loop or subgraph node whose instances were added to the run: it holds no
    # lease and no worker; its instances' arrivals decide it (core/grow.py).
    EXPANDED = "expanded"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    # Its work is done (or it is a pure gate) and it waits for a person's decision,
    # holding no worker, function instance or lease (core/approval.py).
    WAITING_APPROVAL = "waiting_approval"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_NODE


_TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
TERMINAL_NODE = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
)
# A node in one of these holds no worker (it has not started, it waits for a person's
# approval, or, expanded, only waits for its instances), so cancelling the run may cancel it.
NOT_STARTED = frozenset(
    {
        NodeStatus.WAITING,
        NodeStatus.READY,
        NodeStatus.RETRYING,
        NodeStatus.WAITING_APPROVAL,
        NodeStatus.EXPANDED,
    }
)
