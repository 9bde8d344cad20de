"""The rules of a run, as pure functions: when a node is ready, skipped or cancelled,
what a failure leads to, and what the run's status is. No I/O, no clock, no randomness
that is not passed in, so the same rules hold on every backend and can be tested with
hypothesis over random graphs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agentgraph.core.backoff import retry_delay
from agentgraph.core.graph import Graph, Node
from agentgraph.core.model import OnError
from agentgraph.core.records import NodeError
from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus

# Why a node was skipped; UPSTREAM_FAILED is contagious (skip_downstream skips every
# descendant), the others are not (a child with another successful parent still runs).
UPSTREAM_FAILED = "upstream_failed"
PARENTS_SKIPPED = "parents_skipped"
CONDITION_FALSE = "condition_false"
RUN_ENDED = "run_ended"


class Verdict(StrEnum):
    WAIT = "wait"
    READY = "ready"
    SKIP = "skip"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str | None = None


@dataclass(frozen=True)
class ParentResult:
    """What a child needs to know of a parent that has finished."""

    status: NodeStatus
    on_error: OnError
    skip_reason: str | None = None

    @property
    def satisfies(self) -> bool:
        """A parent that lets its children run: succeeded, or failed with `continue`
        (the child then reads `nodes.<parent>.error`)."""
        return self.status == NodeStatus.SUCCEEDED or (
            self.status == NodeStatus.FAILED and self.on_error == OnError.CONTINUE
        )

    @property
    def poisons(self) -> bool:
        """A parent whose failure skips every descendant."""
        return (self.status == NodeStatus.FAILED and self.on_error == OnError.SKIP_DOWNSTREAM) or (
            self.status == NodeStatus.SKIPPED and self.skip_reason == UPSTREAM_FAILED
        )


def decide(parents: Mapping[str, ParentResult]) -> Decision:
    """Whether a node may run, given its parents' results (`when` is checked after).

    A root is always ready. Otherwise every parent must be final; a cancelled parent or a
    run-failing one cancels the child; a skip_downstream failure skips it; with no parent
    that succeeded (all skipped), it is skipped.
    """
    if any(p.status not in TERMINAL_NODE for p in parents.values()):
        return Decision(Verdict.WAIT)
    if any(
        p.status == NodeStatus.CANCELLED
        or (p.status == NodeStatus.FAILED and p.on_error == OnError.FAIL_RUN)
        for p in parents.values()
    ):
        return Decision(Verdict.CANCEL, RUN_ENDED)
    if any(p.poisons for p in parents.values()):
        return Decision(Verdict.SKIP, UPSTREAM_FAILED)
    if parents and not any(p.satisfies for p in parents.values()):
        return Decision(Verdict.SKIP, PARENTS_SKIPPED)
    return Decision(Verdict.READY)


def apply_condition(holds: bool) -> Decision:
    return Decision(Verdict.READY) if holds else Decision(Verdict.SKIP, CONDITION_FALSE)


@dataclass(frozen=True)
class Retry:
    """Try again: attempt `next_attempt` after `delay_s` seconds."""

    next_attempt: int
    delay_s: float


@dataclass(frozen=True)
class Fail:
    """Give up: the node fails; `fails_run` says whether the run goes with it."""

    fails_run: bool


def after_failure(node: Node, attempt: int, error: NodeError, rng: random.Random) -> Retry | Fail:
    """A retryable error retries until the node's attempts are spent (on the primary model,
    then on the fallback model); a permanent one fails at once."""
    if error.retryable and attempt < node.max_total_attempts:
        switching = node.fallback_model is not None and attempt == node.retry.max_attempts
        if switching:
            return Retry(attempt + 1, 0.0)
        local_attempt = (attempt - 1) % node.retry.max_attempts + 1
        delay = retry_delay(node.retry, local_attempt, rng, hint_s=error.retry_after_s)
        return Retry(attempt + 1, delay)
    return Fail(fails_run=node.on_error == OnError.FAIL_RUN)


def run_outcome(graph: Graph, statuses: Mapping[str, NodeStatus]) -> RunStatus | None:
    """The run's final status once every node is final; None while any is not.
    Failures handled by `continue` or `skip_downstream` do not fail the run."""
    if any(statuses.get(n, NodeStatus.WAITING) not in TERMINAL_NODE for n in graph.nodes):
        return None
    if any(
        statuses[n] == NodeStatus.FAILED and graph[n].on_error == OnError.FAIL_RUN
        for n in graph.nodes
    ):
        return RunStatus.FAILED
    if any(statuses[n] == NodeStatus.CANCELLED for n in graph.nodes):
        return RunStatus.CANCELLED
    return RunStatus.SUCCEEDED
