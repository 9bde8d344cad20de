"""The node and run state machine, written once: pure decisions over a stored record.

Every store transition is read → decide → persist. This module is the "decide": given the
record as read (and what the caller asks for), each function returns the `Change` to
persist, or None when this delivery must do nothing (a duplicate, a stale attempt, a node
already decided). The stores only read, encode and persist the change, each with a
compare-and-set on the state it was decided on (SQLite: an UPDATE guarded by status and
attempt inside one transaction; Firestore: a `last_update_time` precondition), so a
decision never applies to a state it was not made for. Both stores therefore follow the
same rules and write the same timeline, event texts included.

A `Change` speaks in `NodeRecord` field names and Python values (NodeStatus, NodeError,
Usage, the output value); how they become columns or document fields is the store's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentgraph.core.records import Event, NodeError, NodeRecord, Outcome, Usage
from agentgraph.core.status import NOT_STARTED, TERMINAL_NODE, NodeStatus, RunStatus

TAKEN_OVER = "lease expired; taken over"
DEFAULT_MAX_TAKEOVERS = 3  # RetryPolicy.max_takeovers: lost workers before the node fails
RUN_ENDED = "run_ended"  # the skip reason of a node cancelled because its run ended

Move = tuple[NodeStatus, NodeStatus]

# The record fields the decisions below read, and no others: for a transition that
# returns no record, a store may read just these (SQLite: a third of a node's columns).
READS = frozenset(
    {
        "run_id",
        "node_id",
        "status",
        "attempt",
        "started_at",
        "usage",
        "lease_until",
        "skip_reason",
        "executions",
        "meta",
    }
)


@dataclass(frozen=True)
class Change:
    """What one node transition writes, decided from the record it read.

    `status` and `attempt` are the state it was decided on: the store's write must apply
    only if the node is still in it. `moves` shift the run's node counts from one status
    to another; `usage` adds to the run's totals."""

    status: NodeStatus
    attempt: int
    fields: Mapping[str, Any]
    event: Event | None = None
    moves: tuple[Move, ...] = ()
    usage: Usage | None = None

    def applied(self, node: NodeRecord) -> NodeRecord:
        """The record as it is after this change."""
        return replace(node, **self.fields)


@dataclass(frozen=True)
class RunChange:
    """What a run status change writes (the run's own fields and its event)."""

    fields: Mapping[str, Any]
    event: Event = field(compare=False)


def claim(
    node: NodeRecord,
    attempt: int,
    now: float,
    lease_until: float,
    max_takeovers: int = DEFAULT_MAX_TAKEOVERS,
) -> Change | None:
    """ready(attempt) -> running; or take over running(attempt) whose lease expired (the
    executor died mid-attempt). A takeover moves no count: the node was already running.

    A node whose workers keep dying (a timeout the platform enforces, out of memory, a
    crash the node itself causes) would otherwise be run, and its model calls billed,
    forever: once more than `max_takeovers` executions of it were lost, the claim fails
    the node instead ("worker lost N times"), a permanent failure that `on_error` handles.
    """
    if node.attempt != attempt:
        return None
    takeover = node.status == NodeStatus.RUNNING and (node.lease_until or 0) < now
    if node.status != NodeStatus.READY and not takeover:
        return None
    lost = lost_executions(node)
    if lost > max_takeovers:
        return _worker_lost(node, attempt, now, lost)
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.RUNNING,
            "started_at": now,
            "lease_until": lease_until,
            "updated_at": now,
            "executions": node.executions + 1,
        },
        _node_event(node, now, NodeStatus.RUNNING, attempt, TAKEN_OVER if takeover else None),
        () if takeover else ((NodeStatus.READY, NodeStatus.RUNNING),),
    )


def finish(node: NodeRecord, attempt: int, outcome: Outcome, now: float) -> Change | None:
    """running(attempt) -> succeeded | failed, with the attempt's output, error and usage."""
    if not _running(node, attempt):
        return None
    extra = {
        "usage": node.usage + outcome.usage,
        "model": outcome.model,
        "lease_until": None,
        "partial": None,
    }
    return _ended(node, attempt, outcome, now, NodeStatus.RUNNING, extra, usage=outcome.usage)


def _ended(
    node: NodeRecord,
    attempt: int,
    outcome: Outcome,
    now: float,
    was: NodeStatus,
    extra: Mapping[str, Any],
    *,
    usage: Usage | None = None,
    quiet: str | None = None,
) -> Change:
    """`was` -> succeeded | failed: what every way a node ends writes (its output or
    error, when and how long), `extra` for what that way also clears or adds, and the
    event (the error, else `quiet`)."""
    failure = outcome.error
    return Change(
        node.status,
        node.attempt,
        {
            "status": outcome.status,
            "output": outcome.output,
            "error": failure,
            "finished_at": now,
            "duration_ms": int((now - (node.started_at or now)) * 1000),
            **extra,
            "updated_at": now,
        },
        _node_event(
            node,
            now,
            outcome.status,
            attempt,
            f"{failure.type}: {failure.message}" if failure else quiet,
        ),
        ((was, outcome.status),),
        usage,
    )


def schedule_retry(
    node: NodeRecord,
    attempt: int,
    error: NodeError,
    next_attempt_at: float,
    now: float,
    usage: Usage | None = None,
) -> Change | None:
    """running(attempt) -> retrying; attempt + 1 becomes ready at `next_attempt_at`."""
    if not _running(node, attempt):
        return None
    spent = usage or Usage()
    message = (
        f"attempt {attempt} failed ({error.type}: {error.message}); "
        f"attempt {attempt + 1} in {max(0.0, next_attempt_at - now):.2f}s"
    )
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.RETRYING,
            "error": error,
            "next_attempt_at": next_attempt_at,
            "lease_until": None,
            "partial": None,
            "usage": node.usage + spent,
            "updated_at": now,
        },
        Event(node.run_id, now, "retry", node.node_id, NodeStatus.RETRYING.value, attempt, message),
        ((NodeStatus.RUNNING, NodeStatus.RETRYING),),
        spent,
    )


def requeue(node: NodeRecord, attempt: int, now: float) -> Change | None:
    """retrying(attempt - 1) -> ready(attempt): a delayed retry came due."""
    if node.status != NodeStatus.RETRYING or node.attempt != attempt - 1:
        return None
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.READY,
            "attempt": attempt,
            "next_attempt_at": None,
            "updated_at": now,
        },
        _node_event(node, now, NodeStatus.READY, attempt),
        ((NodeStatus.RETRYING, NodeStatus.READY),),
    )


def resolve(
    node: NodeRecord,
    status: NodeStatus,
    now: float,
    reason: str | None = None,
    expected: Sequence[NodeStatus] = (NodeStatus.WAITING,),
) -> Change | None:
    """One of `expected` -> `status` without running the node (ready, skipped, cancelled,
    or failed by a condition that does not evaluate). The reason is the skip reason, or
    the failure's message."""
    if node.status not in expected:
        return None
    fields: dict[str, Any] = {"status": status, "lease_until": None, "updated_at": now}
    if status == NodeStatus.FAILED:
        fields["error"] = NodeError("ConditionError", reason or "failed", False, None, node.attempt)
    elif reason is not None:
        fields["skip_reason"] = reason
    if status in TERMINAL_NODE:
        fields["finished_at"] = now
    if node.status == NodeStatus.EXPANDED and status == NodeStatus.READY:
        # An agent woken from its delegates runs again at the same attempt: its
        # suspension was no lost execution, so it does not count toward max_takeovers.
        fields["executions"] = max(node.executions - 1, 0)
    return Change(
        node.status,
        node.attempt,
        fields,
        _node_event(node, now, status, node.attempt, reason),
        ((node.status, status),),
    )


def cancel(node: NodeRecord, now: float) -> Change | None:
    """A node that has not started -> cancelled, because its run ended. A reason it
    already had (why it would have been skipped) is kept."""
    if node.status not in NOT_STARTED:
        return None
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.CANCELLED,
            "finished_at": now,
            "updated_at": now,
            "skip_reason": node.skip_reason or RUN_ENDED,
        },
        Event(node.run_id, now, "node_status", node.node_id, NodeStatus.CANCELLED.value),
        ((node.status, NodeStatus.CANCELLED),),
    )


def expand(node: NodeRecord, attempt: int, expect: int, now: float) -> Change | None:
    """running(attempt) -> expanded: a map, loop or subgraph whose instances were added.
    It gives up its lease: from now on its instances' arrivals decide it."""
    if not _running(node, attempt):
        return None
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.EXPANDED,
            "lease_until": None,
            "updated_at": now,
            "meta": {**(node.meta or {}), "expect": expect},
        },
        _node_event(node, now, NodeStatus.EXPANDED, attempt, f"{expect} to wait for"),
        ((NodeStatus.RUNNING, NodeStatus.EXPANDED),),
    )


def settle(node: NodeRecord, outcome: Outcome, now: float) -> Change | None:
    """expanded -> succeeded | failed, with the output (or error) its instances gave."""
    if node.status != NodeStatus.EXPANDED:
        return None
    return _ended(node, node.attempt, outcome, now, NodeStatus.EXPANDED, {})


def renew(node: NodeRecord, attempt: int, lease_until: float) -> Change | None:
    """The worker of running(attempt) is alive: its lease runs until `lease_until`. Leases
    are short (a dead worker is taken over soon after it stops renewing), so a long node
    is not taken over merely because it is long. Nothing else changes: no event, no count."""
    if not _running(node, attempt):
        return None
    return Change(
        node.status, node.attempt, {"lease_until": max(lease_until, node.lease_until or 0)}
    )


def set_partial(node: NodeRecord, attempt: int, text: str) -> Change | None:
    """The streamed text so far, kept only while this attempt is running."""
    if not _running(node, attempt):
        return None
    return Change(node.status, node.attempt, {"partial": text})


def set_run_status(
    run_id: str,
    current: RunStatus,
    expected: Sequence[RunStatus],
    status: RunStatus,
    now: float,
    *,
    outputs: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> RunChange | None:
    """One of `expected` -> `status`; a final status stamps finished_at. Outputs and error
    are written only when given (a cancel keeps no outputs, and writes no None over them)."""
    if current not in expected:
        return None
    fields: dict[str, Any] = {"status": status}
    if status.terminal:
        fields["finished_at"] = now
    if outputs is not None:
        fields["outputs"] = outputs
    if error is not None:
        fields["error"] = error
    message = error.get("message") if error else None
    return RunChange(fields, Event(run_id, now, "run_status", status=status.value, message=message))


def run_started(run_id: str, graph_name: str, status: RunStatus, now: float, nodes: int) -> Event:
    """The first line of every run's timeline."""
    message = f"run of {graph_name!r} started with {nodes} nodes"
    return Event(run_id, now, "run_status", None, status.value, None, message)


def lost_executions(node: NodeRecord) -> int:
    """Executions of the node that died before recording anything, for a node about to be
    claimed (ready, or running with an expired lease): every earlier attempt ended with
    exactly one execution that recorded its result, so the rest were lost."""
    return max(0, node.executions - (node.attempt - 1))


def _worker_lost(node: NodeRecord, attempt: int, now: float, lost: int) -> Change:
    error = NodeError(
        "WorkerLost",
        f"the worker running attempt {attempt} was lost {lost} times (a timeout, running "
        "out of memory, or a crash); not trying again",
        False,
        None,
        attempt,
    )
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.FAILED,
            "error": error,
            "finished_at": now,
            "lease_until": None,
            "partial": None,
            "updated_at": now,
        },
        _node_event(node, now, NodeStatus.FAILED, attempt, f"{error.type}: {error.message}"),
        ((node.status, NodeStatus.FAILED),),
    )


def _running(node: NodeRecord, attempt: int) -> bool:
    return node.status == NodeStatus.RUNNING and node.attempt == attempt


def _node_event(
    node: NodeRecord, now: float, status: NodeStatus, attempt: int, message: str | None = None
) -> Event:
    return Event(node.run_id, now, "node_status", node.node_id, status.value, attempt, message)


# ---- human approval (core/approval.py holds what the outputs and errors say) -------------


def await_approval(
    node: NodeRecord,
    attempt: int,
    pending: Any,
    deadline: float,
    now: float,
    usage: Usage | None = None,
    model: str | None = None,
    message: str | None = None,
) -> Change | None:
    """running(attempt) -> waiting_approval: the node's work is done (or it is a gate) and
    it now waits for a person. It gives up its lease (no worker holds it, the sweeper
    leaves it alone); `next_attempt_at` holds the deadline, after which the timeout (a
    delayed delivery, or the sweeper when that was lost) rejects it. `pending` (the
    request: message, computed payload, approvers) is its output while it waits."""
    if not _running(node, attempt):
        return None
    spent = usage or Usage()
    return Change(
        node.status,
        node.attempt,
        {
            "status": NodeStatus.WAITING_APPROVAL,
            "output": pending,
            "usage": node.usage + spent,
            "model": model,
            "next_attempt_at": deadline,
            "lease_until": None,
            "partial": None,
            "updated_at": now,
        },
        _node_event(node, now, NodeStatus.WAITING_APPROVAL, attempt, message),
        ((NodeStatus.RUNNING, NodeStatus.WAITING_APPROVAL),),
        spent,
    )


def decide_approval(node: NodeRecord, attempt: int, outcome: Outcome, now: float) -> Change | None:
    """waiting_approval(attempt) -> succeeded (approved) | failed (rejected, timed out),
    with the decision as the output; exactly one decision ever applies."""
    if node.status != NodeStatus.WAITING_APPROVAL or node.attempt != attempt:
        return None
    extra = {"next_attempt_at": None}
    return _ended(node, attempt, outcome, now, NodeStatus.WAITING_APPROVAL, extra, quiet="approved")


# ---- redrive (core/redrive.py decides which nodes) ---------------------------------------

REDRIVEN = "redriven"


def redrive_node(node: NodeRecord, status: NodeStatus, now: float) -> Change | None:
    """A node of a failed or cancelled run that runs again -> waiting | ready, with a fresh
    attempt 1 (its retry budget whole again) and nothing of its last try but the usage it
    spent. Never a node that succeeded or is still running."""
    if node.status in (NodeStatus.SUCCEEDED, NodeStatus.RUNNING):
        return None
    return Change(
        node.status,
        node.attempt,
        {
            "status": status,
            "attempt": 1,
            "executions": 0,
            "output": None,
            "error": None,
            "model": None,
            "started_at": None,
            "finished_at": None,
            "duration_ms": None,
            "lease_until": None,
            "next_attempt_at": None,
            "partial": None,
            "skip_reason": None,
            "updated_at": now,
        },
        _node_event(node, now, status, 1, REDRIVEN),
        ((node.status, status),) if node.status != status else (),
    )


def redrive_run(run_id: str, current: RunStatus, now: float, nodes: int) -> RunChange | None:
    """failed | cancelled -> running again; the end it had (time, error, outputs) is gone."""
    if current not in (RunStatus.FAILED, RunStatus.CANCELLED):
        return None
    message = f"redriven: {nodes} node{'s' if nodes != 1 else ''} run again"
    return RunChange(
        {"status": RunStatus.RUNNING, "finished_at": None, "error": None, "outputs": None},
        Event(run_id, now, "run_status", None, RunStatus.RUNNING.value, None, message),
    )
