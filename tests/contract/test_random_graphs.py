"""Property: on random DAGs with random tool outcomes, retries, `on_error` and `when`, the
backend ends every node and the run exactly where a reference scheduler says they end.

The reference is written here from the README's rules (Readiness, Failures) alone, not
from the engine's: it walks the nodes in topological order, as if one node at a time ran.
The one thing order can change is a `fail_run` failure racing nodes on other branches:
they may already be running (and then finish as the reference says) or not yet started
(and then are cancelled). The assertions allow exactly that and nothing more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus

from .conftest import Harness

OK, FAIL, FLAKY = "ok", "fail", "flaky"
SUCCEEDED, FAILED, SKIPPED, CANCELLED = "succeeded", "failed", "skipped", "cancelled"
_examples = itertools.count()


@dataclass(frozen=True)
class Spec:
    """One node of a random graph, as the reference sees it."""

    id: str
    parents: tuple[str, ...]
    behaviour: str  # ok | fail (permanently) | flaky (fails `failures` times, then succeeds)
    on_error: str
    when: bool | None  # None: no condition
    failures: int = 0
    max_attempts: int = 1

    @property
    def calls_to_end(self) -> int:
        """How many times the tool is called in a run that lets the node end by itself."""
        return min(self.failures + 1, self.max_attempts) if self.behaviour == FLAKY else 1


@dataclass(frozen=True)
class Case:
    nodes: tuple[Spec, ...]
    flag: bool  # the run input; conditions read it

    def document(self, tag: str) -> dict[str, Any]:
        """The graph; tool keys are unique to this example (the call counter is shared)."""
        nodes = []
        for spec in self.nodes:
            node: dict[str, Any] = {"id": spec.id, "after": list(spec.parents)}
            key = f"{tag}-{spec.id}"
            if spec.behaviour == OK:
                node |= {"tool": "const", "args": {"key": key, "value": spec.id}}
            elif spec.behaviour == FAIL:
                node |= {"tool": "boom", "args": {"key": key}}
            else:
                node |= {"tool": "flaky", "args": {"key": key, "failures": spec.failures}}
            node["retry"] = {
                "max_attempts": spec.max_attempts,
                "initial_delay_s": 0.001,
                "jitter": False,
            }
            node["on_error"] = spec.on_error
            if spec.when is not None:
                node["when"] = "input.flag" if spec.when == self.flag else "not input.flag"
            nodes.append(node)
        return {"name": "random", "nodes": nodes}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    size = draw(st.integers(1, 8))
    nodes = []
    for i in range(size):
        parents = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        behaviour = draw(st.sampled_from([OK, OK, FAIL, FLAKY]))
        nodes.append(
            Spec(
                id=f"n{i}",
                parents=tuple(f"n{p}" for p in parents),
                behaviour=behaviour,
                on_error=draw(st.sampled_from(["fail_run", "continue", "skip_downstream"])),
                when=draw(st.sampled_from([None, None, True, False])),
                failures=draw(st.integers(1, 2)) if behaviour == FLAKY else 0,
                max_attempts=draw(st.integers(1, 3)) if behaviour == FLAKY else 1,
            )
        )
    return Case(tuple(nodes), draw(st.booleans()))


def reference(case: Case) -> tuple[dict[str, str], str]:
    """Final node statuses and run status by the README's rules, one node at a time."""
    status: dict[str, str] = {}
    poisoned: set[str] = set()  # failed with skip_downstream, or skipped because of one
    specs = {s.id: s for s in case.nodes}
    for node in case.nodes:  # parents come first: a topological order
        parents = [(status[p], specs[p]) for p in node.parents]
        if any(s == CANCELLED or (s == FAILED and p.on_error == "fail_run") for s, p in parents):
            status[node.id] = CANCELLED  # the run failed before this could start
        elif any(p.id in poisoned for _, p in parents):
            status[node.id] = SKIPPED  # skip_downstream skips every descendant
            poisoned.add(node.id)
        elif parents and not any(
            s == SUCCEEDED or (s == FAILED and p.on_error == "continue") for s, p in parents
        ):
            status[node.id] = SKIPPED  # all parents skipped
        elif node.when is False:
            status[node.id] = SKIPPED
        elif node.behaviour == OK or (
            node.behaviour == FLAKY and node.failures < node.max_attempts  # a retry succeeds
        ):
            status[node.id] = SUCCEEDED
        else:
            status[node.id] = FAILED
            if node.on_error == "skip_downstream":
                poisoned.add(node.id)
    fails_run = any(status[s.id] == FAILED and s.on_error == "fail_run" for s in case.nodes)
    return status, FAILED if fails_run else SUCCEEDED


def descendants(case: Case, roots: set[str]) -> set[str]:
    found: set[str] = set()
    for node in case.nodes:
        if any(p in roots or p in found for p in node.parents):
            found.add(node.id)
    return found


def ancestors(case: Case, of: set[str]) -> set[str]:
    parents = {s.id: s.parents for s in case.nodes}
    found: set[str] = set()
    todo = [p for n in of for p in parents[n]]
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(parents[node])
    return found


async def check(harness: Harness, case: Case) -> None:
    tag = f"x{next(_examples)}"
    run = await harness.run(case.document(tag), {"flag": case.flag})
    nodes = await harness.nodes(run.run_id)
    got = {n: r.status.value for n, r in nodes.items()}
    calls = {s.id: harness.calls[f"{tag}-{s.id}"] for s in case.nodes}
    expected, expected_run = reference(case)

    assert run.status.value == expected_run, (got, expected)
    event(f"run {expected_run}")  # --hypothesis-show-statistics shows what was covered
    assert all(r.status in TERMINAL_NODE for r in nodes.values())
    ended = sum(run.counts.get(s.value, 0) for s in TERMINAL_NODE)
    assert ended == len(nodes) and not run.counts.get(NodeStatus.RUNNING.value)
    for record in nodes.values():  # no node starts before its parents have finished
        for parent in record.parents:
            if record.started_at is not None:
                finished = nodes[parent].finished_at
                assert finished is not None and finished <= record.started_at

    if expected_run == SUCCEEDED:  # no race: every node ends as the reference says
        assert got == expected
        for spec in case.nodes:
            ran = expected[spec.id] in (SUCCEEDED, FAILED)
            assert calls[spec.id] == (spec.calls_to_end if ran else 0), spec
        return

    # A fail_run failure: the nodes it cancels had not started when it spread.
    run_failers = {s.id for s in case.nodes if s.on_error == "fail_run" and got[s.id] == FAILED}
    assert run_failers, f"the run failed but no fail_run node did: {got}"
    assert run.error is not None and run.error["node_id"] in run_failers
    for spec in case.nodes:
        allowed = {expected[spec.id], CANCELLED}
        assert got[spec.id] in allowed, (spec, got, expected)
        if got[spec.id] != expected[spec.id]:
            event("a node the reference ran was cancelled by the failure")
        if got[spec.id] in (SUCCEEDED, FAILED):
            assert calls[spec.id] == spec.calls_to_end, spec
        elif got[spec.id] == SKIPPED:
            assert calls[spec.id] == 0, spec
    for node_id in ancestors(case, run_failers):  # all ended before the failure
        assert got[node_id] == expected[node_id], (node_id, got, expected)
    for node_id in descendants(case, run_failers):  # none could have started
        assert got[node_id] == CANCELLED and calls[node_id] == 0, (node_id, got)


def property_on(backend: Any, examples: int) -> Any:
    """The property as a test on one backend, with as many examples as it affords."""

    @pytest.mark.parametrize("harness", [backend], indirect=True)
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same examples every run: no flaky CI
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=cases())
    async def test(harness: Harness, case: Case) -> None:
        await check(harness, case)

    return test


# One harness serves every example of a test: each example is its own run.
test_random_runs_end_as_the_reference_scheduler_says_on_local = property_on("local", 1000)
test_random_runs_end_as_the_reference_scheduler_says_on_firestore = property_on(
    pytest.param("firestore", marks=pytest.mark.emulator), 25
)


def test_the_reference_applies_the_readme_rules() -> None:
    """The reference itself, on the cases the README spells out."""

    def spec(node_id: str, *parents: str, **kw: Any) -> Spec:
        behaviour, on_error = kw.pop("behaviour", OK), kw.pop("on_error", "fail_run")
        return Spec(node_id, parents, behaviour, on_error, kw.pop("when", None), **kw)

    statuses, outcome = reference(
        Case(
            (
                spec("a"),
                spec("gated", "a", when=False),
                spec("after_gated", "gated"),
                spec("join", "after_gated", "a"),
                spec("optional", behaviour=FAIL, on_error="skip_downstream"),
                spec("poisoned", "optional", "a"),
                spec("below", "poisoned"),
                spec("tolerant", behaviour=FAIL, on_error="continue"),
                spec("handler", "tolerant"),
                spec("retried", behaviour=FLAKY, failures=2, max_attempts=3),
                spec("bad", "a", behaviour=FLAKY, failures=2, max_attempts=2),
                spec("after_bad", "bad", "a"),
            ),
            flag=True,
        )
    )
    assert outcome == FAILED
    assert statuses == {
        "a": SUCCEEDED,
        "gated": SKIPPED,
        "after_gated": SKIPPED,
        "join": SUCCEEDED,
        "optional": FAILED,
        "poisoned": SKIPPED,
        "below": SKIPPED,
        "tolerant": FAILED,
        "handler": SUCCEEDED,
        "retried": SUCCEEDED,
        "bad": FAILED,
        "after_bad": CANCELLED,
    }
    assert RunStatus.FAILED.value == FAILED  # the reference's words are the store's
