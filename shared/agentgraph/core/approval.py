"""Human approval, as pure decisions: what a waiting node's output says, what a decision
makes of it, and whether a decision may still apply.

A node with `approval:` first does its work (a tool or agent node computes its value; a
pure gate has none), then waits in `waiting_approval` holding no worker. Its output while
it waits is the request (`pending`); a decision replaces it with the record of the
decision. This is LangGraph's `interrupt` after a draft and Step Functions'
`.waitForTaskToken` after a task: the person sees what was computed and may edit it.

- approve -> the node succeeds; its output is `{"decision": "approved", "by", "comment",
  "payload", "message", "at"}`, where `payload` is the approver's edited payload if given,
  else the node's computed value. Children read it as `nodes.<id>.output.payload`.
- reject / timeout -> the node fails (ApprovalRejected / ApprovalTimeout, permanent: no
  retry) with the same record as its output, and `on_error` applies as for any failure.
- The same decision again is idempotent (the stored record is the answer); another
  decision, or any decision once the node is no longer waiting, is ApprovalConflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from agentgraph.core.errors import ApprovalConflict
from agentgraph.core.records import NodeError, NodeRecord, Outcome
from agentgraph.core.status import NodeStatus

APPROVED = "approved"
REJECTED = "rejected"
TIMED_OUT = "timeout"
PENDING = "pending"
Decision = Literal["approved", "rejected"]
UNSET: Any = object()  # no edited payload: the node's computed value stands


def pending(
    message: str, payload: Any, approvers: Sequence[str], expires_at: float
) -> dict[str, Any]:
    """The output of a node while it waits: what the person is asked, and about what."""
    return {
        "decision": PENDING,
        "message": message,
        "payload": payload,
        "approvers": list(approvers),
        "expires_at": expires_at,
    }


def decided(
    record: NodeRecord,
    decision: str,
    by: str | None,
    comment: str | None,
    now: float,
    payload: Any = UNSET,
) -> Outcome:
    """The outcome that records a decision (approved, rejected or timeout) on `record`."""
    request = record.output if isinstance(record.output, dict) else {}
    output = {
        "decision": decision,
        "by": by,
        "comment": comment,
        "payload": request.get("payload") if payload is UNSET else payload,
        "message": request.get("message"),
        "at": now,
    }
    if decision == APPROVED:
        return Outcome(NodeStatus.SUCCEEDED, output=output)
    if decision == REJECTED:
        why = f"rejected by {by}" + (f": {comment}" if comment else "")
        error = NodeError("ApprovalRejected", why, False, None, record.attempt)
    else:
        error = NodeError(
            "ApprovalTimeout",
            "no approval decision before the deadline (approval.timeout_s)",
            False,
            None,
            record.attempt,
        )
    return Outcome(NodeStatus.FAILED, output=output, error=error)


def already(record: NodeRecord, decision: str) -> bool:
    """True when `record` was already given this decision (a duplicate: answer with it);
    False when it is waiting for one. Raises ApprovalConflict otherwise."""
    if record.status == NodeStatus.WAITING_APPROVAL:
        return False
    earlier = record.output.get("decision") if isinstance(record.output, dict) else None
    if record.status in (NodeStatus.SUCCEEDED, NodeStatus.FAILED) and earlier == decision:
        return True
    if earlier in (APPROVED, REJECTED, TIMED_OUT):
        raise ApprovalConflict(
            f"node {record.node_id!r} of run {record.run_id} was already {earlier}"
            + (f" by {record.output.get('by')}" if record.output.get("by") else "")
        )
    raise ApprovalConflict(
        f"node {record.node_id!r} of run {record.run_id} is {record.status.value}, "
        "not waiting for approval"
    )


def may_decide(
    principal_ids: Sequence[str | None], owner: str | None, approvers: Sequence[str]
) -> bool:
    """The run's owner or a listed approver (by uid or email) may decide."""
    ids = {p for p in principal_ids if p}
    return (owner is not None and owner in ids) or any(a in ids for a in approvers)
