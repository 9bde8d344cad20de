"""The pure rules of a run: readiness, skips, failure propagation, retries, run status."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from agentgraph.core.model import OnError
from agentgraph.core.readiness import (
    CONDITION_FALSE,
    PARENTS_SKIPPED,
    UPSTREAM_FAILED,
    Fail,
    ParentResult,
    Retry,
    Verdict,
    after_failure,
    apply_condition,
    decide,
    run_outcome,
)
from agentgraph.core.records import NodeError
from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus
from agentgraph.core.validate import load_graph

S = NodeStatus


def parent(
    status: NodeStatus, on_error: OnError = OnError.FAIL_RUN, reason: str | None = None
) -> ParentResult:
    return ParentResult(status, on_error, reason)


def test_a_root_is_ready() -> None:
    assert decide({}).verdict == Verdict.READY


def test_a_child_waits_while_any_parent_is_unfinished() -> None:
    for unfinished in (S.WAITING, S.READY, S.RUNNING, S.RETRYING):
        assert decide({"a": parent(S.SUCCEEDED), "b": parent(unfinished)}).verdict == Verdict.WAIT


def test_one_succeeded_parent_is_enough_when_the_others_were_skipped() -> None:
    assert (
        decide({"a": parent(S.SUCCEEDED), "b": parent(S.SKIPPED, reason=CONDITION_FALSE)}).verdict
        == Verdict.READY
    )


def test_a_child_whose_parents_were_all_skipped_is_skipped() -> None:
    decision = decide(
        {
            "a": parent(S.SKIPPED, reason=CONDITION_FALSE),
            "b": parent(S.SKIPPED, reason=PARENTS_SKIPPED),
        }
    )
    assert (decision.verdict, decision.reason) == (Verdict.SKIP, PARENTS_SKIPPED)


def test_skip_downstream_failure_skips_children_even_with_a_succeeded_parent() -> None:
    decision = decide({"a": parent(S.SUCCEEDED), "b": parent(S.FAILED, OnError.SKIP_DOWNSTREAM)})
    assert (decision.verdict, decision.reason) == (Verdict.SKIP, UPSTREAM_FAILED)
    grandchild = decide({"c": parent(S.SKIPPED, reason=UPSTREAM_FAILED), "d": parent(S.SUCCEEDED)})
    assert grandchild.reason == UPSTREAM_FAILED


def test_continue_failure_lets_the_child_run() -> None:
    assert decide({"a": parent(S.FAILED, OnError.CONTINUE)}).verdict == Verdict.READY


def test_fail_run_failure_or_cancelled_parent_cancels_the_child() -> None:
    assert decide({"a": parent(S.FAILED, OnError.FAIL_RUN)}).verdict == Verdict.CANCEL
    assert decide({"a": parent(S.CANCELLED)}).verdict == Verdict.CANCEL


def test_a_false_condition_skips() -> None:
    assert apply_condition(False).reason == CONDITION_FALSE
    assert apply_condition(True).verdict == Verdict.READY


def _node(**overrides: object):  # type: ignore[no-untyped-def]
    spec = {"id": "n", "prompt": "p", "model": "gemini-2.5-pro", **overrides}
    return load_graph({"name": "g", "nodes": [spec]})["n"]


def test_retryable_errors_retry_until_attempts_are_spent() -> None:
    node = _node(retry={"max_attempts": 3, "initial_delay_s": 1, "jitter": False})
    error = NodeError("Unavailable", "503", retryable=True)
    assert after_failure(node, 1, error, random.Random(0)) == Retry(2, 1.0)
    assert after_failure(node, 2, error, random.Random(0)) == Retry(3, 2.0)
    assert after_failure(node, 3, error, random.Random(0)) == Fail(fails_run=True)


def test_permanent_errors_never_retry() -> None:
    node = _node(retry={"max_attempts": 5}, on_error="continue")
    assert after_failure(node, 1, NodeError("InvalidArgument", "400"), random.Random(0)) == Fail(
        fails_run=False
    )


def test_the_fallback_model_takes_over_when_the_primary_is_exhausted() -> None:
    node = _node(retry={"max_attempts": 2, "jitter": False}, fallback_model="gemini-2.5-flash")
    error = NodeError("Unavailable", "503", retryable=True)
    assert node.model_for_attempt(2) == "gemini-2.5-pro"
    assert after_failure(node, 2, error, random.Random(0)) == Retry(3, 0.0)
    assert node.model_for_attempt(3) == "gemini-2.5-flash"
    assert after_failure(node, 3, error, random.Random(0)) == Retry(4, 1.0)
    assert isinstance(after_failure(node, 4, error, random.Random(0)), Fail)


@st.composite
def parent_results(draw: st.DrawFn) -> dict[str, ParentResult]:
    count = draw(st.integers(1, 5))
    return {
        f"p{i}": ParentResult(
            draw(st.sampled_from(list(NodeStatus))),
            draw(st.sampled_from(list(OnError))),
            draw(st.sampled_from([None, CONDITION_FALSE, PARENTS_SKIPPED, UPSTREAM_FAILED])),
        )
        for i in range(count)
    }


@given(parent_results())
def test_no_node_is_ready_before_every_parent_is_final(parents: dict[str, ParentResult]) -> None:
    decision = decide(parents)
    if decision.verdict != Verdict.WAIT:
        assert all(p.status in TERMINAL_NODE for p in parents.values())
    if decision.verdict == Verdict.READY:
        assert any(p.satisfies for p in parents.values())


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(list(NodeStatus)), min_size=3)
)
def test_run_status_follows_from_node_statuses(statuses: dict[str, NodeStatus]) -> None:
    graph = load_graph(
        {
            "name": "g",
            "nodes": [
                {"id": "a", "tool": "t"},
                {"id": "b", "tool": "t", "on_error": "continue"},
                {"id": "c", "tool": "t"},
            ],
        }
    )
    outcome = run_outcome(graph, statuses)
    if any(s not in TERMINAL_NODE for s in statuses.values()):
        assert outcome is None
    elif S.FAILED in (statuses["a"], statuses["c"]):
        assert outcome == RunStatus.FAILED
    elif S.CANCELLED in statuses.values():
        assert outcome == RunStatus.CANCELLED
    else:
        assert outcome == RunStatus.SUCCEEDED
