"""The node and run state machine (`core.transitions`), on plain records: what each
delivery may change, what it leaves alone, and what it writes to the run's timeline."""

from __future__ import annotations

import ast
import inspect
from dataclasses import replace

import pytest

from agentgraph.core import transitions
from agentgraph.core.records import NodeError, NodeRecord, Outcome, Usage
from agentgraph.core.status import NodeStatus, RunStatus

S = NodeStatus


def node(status: NodeStatus = S.READY, **fields: object) -> NodeRecord:
    return replace(NodeRecord("r1", "n1", status, ["p"], []), **fields)  # type: ignore[arg-type]


# ---- claim ---------------------------------------------------------------------------------


def test_a_ready_node_is_claimed_for_its_attempt_and_counted_as_running() -> None:
    change = transitions.claim(node(S.READY), attempt=1, now=10.0, lease_until=50.0)

    assert change is not None
    claimed = change.applied(node(S.READY))
    assert claimed.status == S.RUNNING
    assert (claimed.started_at, claimed.lease_until, claimed.executions) == (10.0, 50.0, 1)
    assert change.moves == ((S.READY, S.RUNNING),)
    assert change.event is not None and change.event.message is None
    assert (change.status, change.attempt) == (S.READY, 1)  # what the write is guarded on


def test_a_second_claim_of_the_same_attempt_does_nothing() -> None:
    first = transitions.claim(node(S.READY), 1, 10.0, 50.0)
    assert first is not None
    running = first.applied(node(S.READY))

    assert transitions.claim(running, 1, 11.0, 51.0) is None


def test_a_claim_for_another_attempt_does_nothing() -> None:
    assert transitions.claim(node(S.READY, attempt=2), 1, 10.0, 50.0) is None
    assert transitions.claim(node(S.READY, attempt=1), 2, 10.0, 50.0) is None


def test_a_running_node_whose_lease_expired_is_taken_over_and_counted() -> None:
    crashed = node(S.RUNNING, lease_until=20.0, executions=1)

    change = transitions.claim(crashed, 1, now=21.0, lease_until=60.0)

    assert change is not None
    assert change.applied(crashed).executions == 2  # > attempt: the engine sees a repeat
    assert change.moves == ()  # it was already counted as running
    assert change.event is not None and change.event.message == "lease expired; taken over"


def test_a_running_node_whose_lease_holds_is_not_taken_over() -> None:
    assert transitions.claim(node(S.RUNNING, lease_until=20.0), 1, 19.0, 60.0) is None


@pytest.mark.parametrize("status", [S.WAITING, S.RETRYING, S.SUCCEEDED, S.CANCELLED])
def test_only_ready_or_abandoned_running_nodes_are_claimed(status: NodeStatus) -> None:
    assert transitions.claim(node(status), 1, 10.0, 50.0) is None


# ---- finish ------------------------------------------------------------------------------------


def test_finishing_records_output_usage_and_duration_and_moves_the_count() -> None:
    running = node(S.RUNNING, started_at=10.0, usage=Usage(input_tokens=5))
    outcome = Outcome(S.SUCCEEDED, output={"x": 1}, usage=Usage(input_tokens=3), model="m")

    change = transitions.finish(running, 1, outcome, now=12.5)

    assert change is not None
    done = change.applied(running)
    assert (done.status, done.output, done.model, done.duration_ms) == (
        S.SUCCEEDED,
        {"x": 1},
        "m",
        2500,
    )
    assert done.usage.input_tokens == 8  # the node's usage adds up over attempts
    assert change.usage == Usage(input_tokens=3)  # the run gets this attempt's only
    assert (done.lease_until, done.partial, done.finished_at) == (None, None, 12.5)
    assert change.moves == ((S.RUNNING, S.SUCCEEDED),)


def test_a_failure_writes_its_error_into_the_timeline() -> None:
    error = NodeError("ValueError", "bad input")
    change = transitions.finish(node(S.RUNNING), 1, Outcome(S.FAILED, error=error), 3.0)

    assert change is not None and change.event is not None
    assert (change.event.status, change.event.message) == ("failed", "ValueError: bad input")


def test_a_late_finish_of_an_attempt_that_was_retried_does_nothing() -> None:
    later = node(S.RUNNING, attempt=2)
    assert transitions.finish(later, 1, Outcome(S.SUCCEEDED), 3.0) is None
    assert transitions.finish(node(S.SUCCEEDED), 1, Outcome(S.SUCCEEDED), 3.0) is None


# ---- retry and requeue ---------------------------------------------------------------------


def test_a_retry_keeps_the_usage_spent_and_says_when_the_next_attempt_runs() -> None:
    error = NodeError("Timeout", "slow", retryable=True)

    change = transitions.schedule_retry(
        node(S.RUNNING), 1, error, next_attempt_at=14.0, now=10.0, usage=Usage(calls=1)
    )

    assert change is not None and change.event is not None
    retrying = change.applied(node(S.RUNNING))
    assert (retrying.status, retrying.next_attempt_at, retrying.error) == (S.RETRYING, 14.0, error)
    assert retrying.usage.calls == 1 and change.usage == Usage(calls=1)
    assert change.event.kind == "retry"
    assert change.event.message == "attempt 1 failed (Timeout: slow); attempt 2 in 4.00s"


def test_a_retry_of_a_node_not_running_that_attempt_does_nothing() -> None:
    error = NodeError("E", "m", retryable=True)
    assert transitions.schedule_retry(node(S.RETRYING), 1, error, 5.0, 1.0) is None
    assert transitions.schedule_retry(node(S.RUNNING, attempt=2), 1, error, 5.0, 1.0) is None


def test_a_due_retry_makes_the_next_attempt_ready() -> None:
    change = transitions.requeue(node(S.RETRYING, next_attempt_at=5.0), attempt=2, now=6.0)

    assert change is not None
    ready = change.applied(node(S.RETRYING))
    assert (ready.status, ready.attempt, ready.next_attempt_at) == (S.READY, 2, None)
    assert change.moves == ((S.RETRYING, S.READY),)


def test_a_duplicate_requeue_does_nothing() -> None:
    assert transitions.requeue(node(S.READY, attempt=2), attempt=2, now=6.0) is None
    assert transitions.requeue(node(S.RETRYING, attempt=2), attempt=2, now=6.0) is None


# ---- resolve and cancel --------------------------------------------------------------------


def test_a_waiting_child_is_skipped_with_its_reason() -> None:
    change = transitions.resolve(node(S.WAITING), S.SKIPPED, 4.0, reason="condition false")

    assert change is not None
    skipped = change.applied(node(S.WAITING))
    assert (skipped.status, skipped.skip_reason, skipped.finished_at) == (
        S.SKIPPED,
        "condition false",
        4.0,
    )
    assert change.moves == ((S.WAITING, S.SKIPPED),)


def test_a_condition_that_fails_records_a_condition_error() -> None:
    change = transitions.resolve(node(S.WAITING), S.FAILED, 4.0, reason="when: bad")

    assert change is not None
    failed = change.applied(node(S.WAITING))
    assert failed.error == NodeError("ConditionError", "when: bad", False, None, 1)
    assert failed.skip_reason is None


def test_made_ready_a_node_is_not_finished() -> None:
    change = transitions.resolve(node(S.WAITING), S.READY, 4.0)

    assert change is not None and "finished_at" not in change.fields


def test_a_node_no_longer_in_the_expected_status_is_not_resolved() -> None:
    assert transitions.resolve(node(S.READY), S.SKIPPED, 4.0) is None
    assert transitions.resolve(node(S.SUCCEEDED), S.CANCELLED, 4.0, expected=[S.RUNNING]) is None


@pytest.mark.parametrize("status", [S.WAITING, S.READY, S.RETRYING])
def test_a_node_not_started_is_cancelled_when_its_run_ends(status: NodeStatus) -> None:
    change = transitions.cancel(node(status), 9.0)

    assert change is not None
    cancelled = change.applied(node(status))
    assert (cancelled.status, cancelled.skip_reason) == (S.CANCELLED, "run_ended")
    assert change.moves == ((status, S.CANCELLED),)


def test_cancelling_keeps_the_reason_a_node_already_had() -> None:
    change = transitions.cancel(node(S.WAITING, skip_reason="upstream skipped"), 9.0)

    assert change is not None and change.fields["skip_reason"] == "upstream skipped"


@pytest.mark.parametrize("status", [S.RUNNING, S.SUCCEEDED, S.SKIPPED])
def test_a_started_or_finished_node_is_not_cancelled(status: NodeStatus) -> None:
    assert transitions.cancel(node(status), 9.0) is None


def test_partial_text_is_kept_only_for_the_running_attempt() -> None:
    assert transitions.set_partial(node(S.RUNNING), 1, "so far") is not None
    assert transitions.set_partial(node(S.RUNNING, attempt=2), 1, "late") is None
    assert transitions.set_partial(node(S.SUCCEEDED), 1, "late") is None


# ---- runs ----------------------------------------------------------------------------------


def test_a_run_ends_once_with_its_outputs_and_finish_time() -> None:
    change = transitions.set_run_status(
        "r1", RunStatus.RUNNING, [RunStatus.RUNNING], RunStatus.SUCCEEDED, 7.0, outputs={"a": 1}
    )

    assert change is not None
    assert change.fields == {"status": RunStatus.SUCCEEDED, "finished_at": 7.0, "outputs": {"a": 1}}
    assert change.event.kind == "run_status" and change.event.status == "succeeded"


def test_a_run_that_already_ended_is_not_changed_again() -> None:
    expected = [RunStatus.RUNNING, RunStatus.PENDING]
    cancelled = RunStatus.CANCELLED
    assert transitions.set_run_status("r1", cancelled, expected, RunStatus.FAILED, 7.0) is None


def test_a_failed_run_says_why_in_its_timeline() -> None:
    change = transitions.set_run_status(
        "r1",
        RunStatus.RUNNING,
        [RunStatus.RUNNING],
        RunStatus.FAILED,
        7.0,
        error={"node_id": "n1", "message": "node 'n1' failed"},
    )

    assert change is not None and change.event.message == "node 'n1' failed"
    assert "outputs" not in change.fields  # nothing is written over what the run has


NOW = 1000.0


def test_a_claim_after_more_lost_workers_than_max_takeovers_fails_the_node() -> None:
    from agentgraph.core.transitions import lost_executions

    expired = node(NodeStatus.RUNNING, attempt=2, executions=4, lease_until=NOW - 1)
    assert lost_executions(expired) == 3  # attempt 1 recorded once; 3 executions of 2 died
    allowed = transitions.claim(expired, 2, NOW, NOW + 60, max_takeovers=3)
    assert allowed is not None and allowed.fields["status"] == NodeStatus.RUNNING
    failed = transitions.claim(expired, 2, NOW, NOW + 60, max_takeovers=2)
    assert failed is not None and failed.fields["status"] == NodeStatus.FAILED
    assert failed.fields["error"].type == "WorkerLost"
    assert failed.moves == ((NodeStatus.RUNNING, NodeStatus.FAILED),)


def test_a_live_worker_renews_its_lease_and_only_its_own_attempt() -> None:
    running = node(S.RUNNING, attempt=2, lease_until=40.0)
    renewed = transitions.renew(running, 2, 70.0)
    assert renewed is not None and renewed.fields == {"lease_until": 70.0}
    assert renewed.event is None and renewed.moves == ()
    assert transitions.renew(running, 1, 70.0) is None  # a stale attempt's heartbeat
    assert transitions.renew(node(S.SUCCEEDED, attempt=2), 2, 70.0) is None
    late = transitions.renew(running, 2, 30.0)  # a delayed beat never shortens the lease
    assert late is not None and late.fields == {"lease_until": 40.0}


# ---- what a decision reads -------------------------------------------------------------------


def test_decisions_read_only_the_record_fields_named_in_reads() -> None:
    """A store may read just `READS` for a decision (SQLite does); a decision reading
    any other field would see it empty there."""
    tree = ast.parse(inspect.getsource(transitions))
    read: set[str] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or function.name == "applied":
            continue
        records = {
            a.arg
            for a in function.args.args
            if a.annotation is not None and ast.unparse(a.annotation) == "NodeRecord"
        }
        read |= {
            n.attr
            for n in ast.walk(function)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id in records
        }
    assert read and read <= transitions.READS, sorted(read - transitions.READS)
    assert {"status", "attempt", "executions", "lease_until", "usage"} <= read
