"""Contract: what every backend does with a run. Same tests, every backend."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from agentgraph.core.errors import GraphInvalid, InputInvalid
from agentgraph.core.status import NodeStatus, RunStatus

from .conftest import Harness

S = NodeStatus


def graph(*nodes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "contract", "defaults": {"model": "echo"}, "nodes": list(nodes), **top}


def const(
    node_id: str, value: Any = None, after: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": node_id,
        "after": after or [],
        "tool": "const",
        "args": {"value": value, "key": node_id},
        **extra,
    }


async def test_diamond_runs_every_node_once_and_returns_the_sink_output(harness: Harness) -> None:
    run = await harness.run(
        graph(
            const("a", 1),
            {"id": "b", "after": ["a"], "prompt": "b saw {{ nodes.a.output }}"},
            const("c", "{{ nodes.a.output + 1 }}", ["a"]),
            {
                "id": "d",
                "after": ["b", "c"],
                "prompt": "{{ nodes.b.output }} and {{ nodes.c.output }}",
            },
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"d": "b saw 1 and 2"}
    assert harness.calls == {"a": 1, "c": 1}
    nodes = await harness.nodes(run.run_id)
    assert {n.status for n in nodes.values()} == {S.SUCCEEDED}
    assert all(n.executions == 1 for n in nodes.values())


async def test_no_node_starts_before_all_its_parents_have_finished(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {"id": "slow", "tool": "sleep", "args": {"seconds": 0.2, "key": "slow"}},
            {"id": "fast", "tool": "sleep", "args": {"seconds": 0.01, "key": "fast"}},
            const("join", after=["slow", "fast"]),
        )
    )
    nodes = await harness.nodes(run.run_id)
    for parent in ("slow", "fast"):
        assert nodes["join"].started_at >= nodes[parent].finished_at  # type: ignore[operator]


async def test_a_child_with_many_parents_runs_exactly_once_after_all_of_them(
    harness: Harness,
) -> None:
    parents = [const(f"p{i}", i) for i in range(40)]
    run = await harness.run(
        graph(
            *parents,
            {
                "id": "sum",
                "after": [p["id"] for p in parents],
                "tool": "const",
                "args": {
                    "key": "sum",
                    "value": "{{ " + " + ".join(f"nodes.p{i}.output" for i in range(40)) + " }}",
                },
            },
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"sum": sum(range(40))}
    assert harness.calls["sum"] == 1
    assert await harness.store.get_arrival_count(run.run_id, "sum") == 40


async def test_independent_branches_run_at_the_same_time(harness: Harness) -> None:
    branches = [{"id": f"s{i}", "tool": "hold", "args": {"key": "branch"}} for i in range(4)]
    started = await harness.start(graph(*branches))
    # None of them can finish before the test lets them: all four running is the proof.
    await harness.until(
        started.run_id, lambda n: all(node.status == S.RUNNING for node in n.values())
    )
    harness.release("branch")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and harness.calls["branch"] == 4


async def test_a_false_condition_skips_the_node_and_descendants_with_no_other_parent(
    harness: Harness,
) -> None:
    run = await harness.run(
        graph(
            const("a", 0),
            const("gated", after=["a"], when="nodes.a.output > 0"),
            const("after_gated", after=["gated"]),
            const("other", after=["a"]),
            const("join", "joined", after=["after_gated", "other"]),
        )
    )
    nodes = await harness.nodes(run.run_id)
    assert (nodes["gated"].status, nodes["gated"].skip_reason) == (S.SKIPPED, "condition_false")
    assert (nodes["after_gated"].status, nodes["after_gated"].skip_reason) == (
        S.SKIPPED,
        "parents_skipped",
    )
    assert nodes["join"].status == S.SUCCEEDED  # one parent succeeded
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"join": "joined"}


async def test_a_root_condition_reads_the_input(harness: Harness) -> None:
    run = await harness.run(
        graph(const("maybe", 1, when="input.go"), const("always", 2)), {"go": False}
    )
    nodes = await harness.nodes(run.run_id)
    assert nodes["maybe"].status == S.SKIPPED and nodes["always"].status == S.SUCCEEDED
    assert run.outputs == {"always": 2}


async def test_fail_run_failure_fails_the_run_and_cancels_what_has_not_started(
    harness: Harness,
) -> None:
    started = await harness.start(
        graph(
            {"id": "bad", "tool": "boom", "args": {"message": "disk full"}},
            {"id": "slow", "tool": "hold", "args": {"key": "slow", "value": 1}},
            const("after_bad", after=["bad"]),
            const("after_slow", after=["slow"]),
        )
    )
    # `slow` is still running when the failure has spread; only then may it finish.
    await harness.until_run(started.run_id, lambda r: r.status == RunStatus.FAILED)
    harness.release("slow")
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.FAILED
    assert nodes["slow"].status == S.SUCCEEDED  # what was running finishes its call
    assert run.error and run.error["node_id"] == "bad" and run.error["message"] == "disk full"
    assert nodes["bad"].error.type == "ValueError"  # type: ignore[union-attr]
    assert nodes["after_bad"].status == S.CANCELLED
    assert nodes["after_slow"].status == S.CANCELLED
    assert "after_bad" not in harness.calls and "after_slow" not in harness.calls


async def test_continue_lets_children_read_the_error_and_the_run_succeeds(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {"id": "bad", "tool": "boom", "args": {"message": "no data"}, "on_error": "continue"},
            {
                "id": "handler",
                "after": ["bad"],
                "prompt": "recovering from {{ nodes.bad.error.type }}: {{ nodes.bad.error.message }}",
            },
        )
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"handler": "recovering from ValueError: no data"}


async def test_skip_downstream_skips_every_descendant_but_not_other_branches(
    harness: Harness,
) -> None:
    run = await harness.run(
        graph(
            {"id": "optional", "tool": "boom", "on_error": "skip_downstream"},
            const("ok", 1),
            const("child", after=["optional", "ok"]),
            const("grandchild", after=["child", "ok"]),
            const("sibling", 2, after=["ok"]),
        )
    )
    nodes = await harness.nodes(run.run_id)
    assert nodes["child"].skip_reason == "upstream_failed"
    assert nodes["grandchild"].skip_reason == "upstream_failed"
    assert nodes["sibling"].status == S.SUCCEEDED
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"sibling": 2}


async def test_a_retryable_failure_is_retried_with_growing_delays(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "flaky",
                "tool": "flaky",
                "args": {"key": "flaky", "failures": 3, "value": "finally"},
                "retry": {
                    "max_attempts": 5,
                    "initial_delay_s": 0.1,
                    "multiplier": 2,
                    "jitter": False,
                },
            }
        )
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"flaky": "finally"}
    node = (await harness.nodes(run.run_id))["flaky"]
    assert node.attempt == 4 and harness.calls["flaky"] == 4
    starts = [
        e.at
        for e in await harness.events(run.run_id)
        if e.node_id == "flaky" and e.status == "running"
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 3
    for gap, delay in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert gap >= delay
    retries = [e for e in await harness.events(run.run_id) if e.kind == "retry"]
    assert [e.attempt for e in retries] == [1, 2, 3]


async def test_retries_stop_after_max_attempts_with_the_last_error(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "flaky",
                "tool": "flaky",
                "args": {"key": "flaky", "failures": 10},
                "retry": {"max_attempts": 3, "initial_delay_s": 0.01, "jitter": False},
            }
        )
    )
    node = (await harness.nodes(run.run_id))["flaky"]
    assert run.status == RunStatus.FAILED
    assert node.status == S.FAILED and node.attempt == 3 and harness.calls["flaky"] == 3
    assert node.error is not None and node.error.retryable and node.error.attempt == 3
    assert "transient failure 3 of 10" in node.error.message


async def test_a_permanent_failure_is_not_retried(harness: Harness) -> None:
    run = await harness.run(graph({"id": "bad", "tool": "boom", "retry": {"max_attempts": 5}}))
    assert run.status == RunStatus.FAILED and harness.calls["boom"] == 1


async def test_a_node_past_its_timeout_fails_with_a_retryable_timeout(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {
                "id": "slow",
                "tool": "sleep",
                "args": {"seconds": 5},
                "timeout_s": 1,
                "retry": {"max_attempts": 2, "initial_delay_s": 0.01},
                "on_error": "continue",
            }
        )
    )
    node = (await harness.nodes(run.run_id))["slow"]
    assert node.status == S.FAILED and node.attempt == 2
    assert node.error is not None and node.error.type == "Timeout" and node.error.retryable


async def test_an_oversized_output_fails_the_node_with_a_clear_error(harness: Harness) -> None:
    run = await harness.run(
        graph({"id": "big", "tool": "blob", "args": {"size": 11 * 1024 * 1024}})
    )
    node = (await harness.nodes(run.run_id))["big"]
    assert run.status == RunStatus.FAILED
    assert (
        node.error is not None
        and node.error.type == "OutputTooLarge"
        and "the limit is" in node.error.message
    )


async def test_cancelling_mid_run_cancels_unstarted_nodes_and_ends_the_run(
    harness: Harness,
) -> None:
    started = await harness.start(
        graph(
            {"id": "long", "tool": "hold", "args": {"key": "long"}},
            const("next", after=["long"]),
        )
    )
    await harness.until(started.run_id, lambda n: n["long"].status == S.RUNNING)
    assert await harness.engine.cancel(started.run_id)
    harness.release("long")  # the running call finishes after the cancel
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.CANCELLED
    assert nodes["next"].status == S.CANCELLED and "next" not in harness.calls
    assert not await harness.engine.cancel(started.run_id)  # already ended


async def test_an_invalid_graph_or_input_writes_nothing(harness: Harness) -> None:
    with pytest.raises(GraphInvalid):
        await harness.start(graph(const("a", after=["missing"])))
    with pytest.raises(InputInvalid):
        await harness.start(graph(const("a"), input={"type": "object", "required": ["x"]}), {})
    assert await harness.store.list_runs() == []


async def test_the_same_idempotency_key_returns_the_same_run(harness: Harness) -> None:
    document = graph(const("a", 1))
    first = await harness.start(document, idempotency_key="k1", owner="alice")
    again = await harness.start(document, idempotency_key="k1", owner="alice")
    other = await harness.start(document, idempotency_key="k1", owner="bob")
    assert again.run_id == first.run_id and other.run_id != first.run_id
    await harness.wait(first.run_id)
    await harness.wait(other.run_id)
    assert harness.calls["a"] == 2


async def test_a_duplicate_node_ready_delivery_executes_once(harness: Harness) -> None:
    started = await harness.start(
        graph({"id": "a", "tool": "sleep", "args": {"seconds": 0.1, "key": "a"}})
    )
    await asyncio.gather(*(harness.engine.execute(started.run_id, "a", 1) for _ in range(3)))
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and harness.calls["a"] == 1


async def test_a_duplicate_node_finished_delivery_enqueues_the_child_once(harness: Harness) -> None:
    run = await harness.run(graph(const("a", 1), const("b", 2), const("child", after=["a", "b"])))
    for _ in range(3):
        await harness.engine.complete(run.run_id, "a", S.SUCCEEDED)
        await harness.engine.complete(run.run_id, "b", S.SUCCEEDED)
    await harness.wait(run.run_id)
    assert harness.calls["child"] == 1
    readies = [
        e for e in await harness.events(run.run_id) if e.node_id == "child" and e.status == "ready"
    ]
    assert len(readies) == 1


class _DiesBeforeSending:
    """A dispatcher whose process dies once, right before sending a message about `node_id`:
    the decision is written, the message it owes is not, the delivery is not acked."""

    def __init__(self, inner: Any, node_id: str) -> None:
        self.inner, self.node_id, self.died = inner, node_id, False

    def _die_once(self, node_id: str) -> None:
        if node_id == self.node_id and not self.died:
            self.died = True
            raise ConnectionResetError(f"the process died before sending about {node_id!r}")

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self._die_once(node_id)
        await self.inner.node_ready(run_id, node_id, attempt, pool)

    async def node_finished(self, run_id: str, node_id: str, status: S) -> None:
        self._die_once(node_id)
        await self.inner.node_finished(run_id, node_id, status)


async def test_a_redelivered_node_finished_sends_what_a_crash_after_a_skip_lost(
    harness: Harness,
) -> None:
    harness.engine.dispatcher = _DiesBeforeSending(harness.engine.dispatcher, "child")
    started = await harness.start(
        graph(
            const("a", 1),
            const("child", 2, ["a"], when="nodes.a.output == 2"),
            const("tail", 3, ["child"]),
            const("other", 4, ["a"]),
            const("sink", 5, ["tail", "other"]),
        )
    )
    await harness.until(started.run_id, lambda n: n["child"].status == S.SKIPPED)
    await harness.engine.complete(started.run_id, "a", S.SUCCEEDED)  # the redelivery
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"sink": 5}
    assert nodes["tail"].status == S.SKIPPED and harness.calls["other"] == 1


async def test_a_node_decided_ready_whose_node_ready_a_crash_lost_is_recovered(
    harness: Harness,
) -> None:
    harness.engine.dispatcher = _DiesBeforeSending(harness.engine.dispatcher, "child")
    started = await harness.start(graph(const("a", 1), const("child", 2, ["a"])))
    await harness.until(started.run_id, lambda n: n["child"].status == S.READY)
    await harness.crash()
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"child": 2}
    assert harness.calls["child"] == 1


async def test_repeating_a_request_whose_first_try_died_before_dispatch_runs_the_roots(
    harness: Harness,
) -> None:
    harness.engine.dispatcher = _DiesBeforeSending(harness.engine.dispatcher, "a")
    document = graph(const("a", 1), const("b", 2, ["a"]))
    with pytest.raises(ConnectionResetError):
        await harness.start(document, idempotency_key="k", owner="alice")
    again = await harness.start(document, idempotency_key="k", owner="alice")
    run = await harness.wait(again.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"b": 2}
    assert harness.calls["a"] == 1


async def test_a_crash_mid_run_resumes_without_rerunning_finished_nodes(harness: Harness) -> None:
    started = await harness.start(
        graph(
            const("first", 1),
            {
                "id": "slow",
                "after": ["first"],
                "tool": "hold",
                "args": {"key": "slow", "value": 2},
            },
            const("last", "{{ nodes.first.output + nodes.slow.output }}", ["slow"]),
        )
    )
    await harness.until(started.run_id, lambda n: n["slow"].status == S.RUNNING)
    await harness.crash()  # `slow` dies mid-call: it cannot have returned yet
    harness.release("slow")  # its repeat returns at once
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"last": 3}
    assert harness.calls["first"] == 1 and harness.calls["last"] == 1
    assert harness.calls["slow"] == 2 and nodes["slow"].executions == 2  # the repeat is counted
    assert any(e.message and "repeated" in e.message for e in await harness.events(run.run_id))


async def test_usage_totals_of_the_run_are_the_sum_of_its_nodes(harness: Harness) -> None:
    run = await harness.run(
        graph(
            {"id": "a", "prompt": "one two three"},
            {"id": "b", "after": ["a"], "prompt": "{{ nodes.a.output }} four"},
        )
    )
    nodes = await harness.nodes(run.run_id)
    assert run.usage.input_tokens == sum(n.usage.input_tokens for n in nodes.values()) == 7
    assert run.usage.calls == 2


async def test_the_timeline_records_every_status_change_in_order(harness: Harness) -> None:
    run = await harness.run(graph(const("a"), const("b", after=["a"])))
    lines = [(e.node_id, e.status) for e in await harness.events(run.run_id)]
    assert lines == [
        (None, "running"),
        ("a", "running"),
        ("a", "succeeded"),
        ("b", "ready"),
        ("b", "running"),
        ("b", "succeeded"),
        (None, "succeeded"),
    ]


async def test_recovering_a_run_that_ended_cancels_nodes_left_running(harness: Harness) -> None:
    started = await harness.start(
        graph(
            {"id": "bad", "after": ["gate"], "tool": "boom"},
            const("gate"),
            {"id": "slow", "tool": "hold", "args": {"key": "slow"}},  # never released
        )
    )
    await harness.until(
        started.run_id, lambda n: n["bad"].status == S.FAILED and n["slow"].status == S.RUNNING
    )
    await harness.until_run(started.run_id, lambda r: r.status == RunStatus.FAILED)
    await harness.crash()
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    # gcp: the cancel comes with the redelivered node-ready, after the run already ended
    await harness.until(run.run_id, lambda n: n["slow"].status != S.RUNNING)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.FAILED and harness.calls["slow"] == 1
    assert (
        nodes["slow"].status == S.CANCELLED
        and nodes["slow"].skip_reason == "run ended while it was running"
    )


async def test_a_forged_node_finished_changes_nothing(harness: Harness) -> None:
    """node-finished is a hint: the fan-in follows the stored node, so a message saying a
    running node failed neither fails the run nor decides its child."""
    started = await harness.start(
        graph(
            {"id": "long", "tool": "sleep", "args": {"seconds": 0.5, "key": "long"}},
            const("next", after=["long"]),
        )
    )
    await harness.until(started.run_id, lambda n: n["long"].status == S.RUNNING)
    await harness.engine.complete(started.run_id, "long", S.FAILED)
    await harness.engine.complete(started.run_id, "next", S.FAILED)
    nodes = await harness.nodes(started.run_id)
    assert nodes["next"].status == S.WAITING
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert harness.calls["next"] == 1


async def test_a_node_whose_workers_keep_dying_fails_after_max_takeovers(
    harness: Harness,
) -> None:
    """A crash loop ends: the second lost worker is one more than `max_takeovers: 1`
    allows, so the node fails with "worker lost" instead of being run (and billed) again."""
    started = await harness.start(
        graph(
            {
                "id": "doomed",
                "tool": "hold",
                "args": {"key": "doomed"},
                "retry": {"max_attempts": 1, "max_takeovers": 1},
            },
            const("after", after=["doomed"]),
        )
    )
    for executions in (1, 2):  # the first worker dies; so does the one that took over
        await harness.until(
            started.run_id,
            lambda n, e=executions: n["doomed"].status == S.RUNNING and n["doomed"].executions == e,
        )
        await harness.crash()
        await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)

    assert run.status == RunStatus.FAILED
    doomed = nodes["doomed"]
    assert doomed.status == S.FAILED and doomed.error is not None
    assert doomed.error.type == "WorkerLost" and "lost 2 times" in doomed.error.message
    # Never a third execution (the second may die before its call starts).
    assert 1 <= harness.calls["doomed"] <= 2 and doomed.executions == 2
    assert nodes["after"].status == S.CANCELLED


async def test_a_long_node_renews_its_short_lease_while_it_works(harness: Harness) -> None:
    """A dead worker is noticed a lease after it stops renewing, whatever the node's
    timeout_s; a live one renews (a heartbeat), so it is not taken over for being slow."""
    harness.engine.lease_s = 0.6
    started = await harness.start(
        graph({"id": "long", "tool": "hold", "args": {"key": "long"}, "timeout_s": 600})
    )
    await harness.until(started.run_id, lambda n: n["long"].status == S.RUNNING)
    first = (await harness.nodes(started.run_id))["long"]
    assert first.lease_until is not None and first.lease_until <= first.started_at + 0.6 + 1e-6
    await harness.until(
        started.run_id, lambda n: (n["long"].lease_until or 0) > (first.lease_until or 0)
    )
    harness.release("long")
    run = await harness.wait(started.run_id)
    nodes = await harness.nodes(run.run_id)
    assert run.status == RunStatus.SUCCEEDED and nodes["long"].executions == 1
    assert harness.calls["long"] == 1


async def test_a_redelivery_that_finds_a_dead_workers_live_lease_takes_the_node_over_when_it_lapses(
    harness: Harness,
) -> None:
    """The worker dies mid-call; its node-ready comes again while the lease it stopped
    renewing still runs (Pub/Sub redelivers what a killed function never acked). That
    delivery cannot claim, so it watches the lease: when it lapses the node is taken over,
    a lease after the last heartbeat, with no sweep and no resume."""
    harness.engine.lease_s = 2.0
    started = await harness.start(graph({"id": "long", "tool": "hold", "args": {"key": "long"}}))
    await harness.until(started.run_id, lambda n: n["long"].status == S.RUNNING)
    await harness.crash()
    await harness.restart()
    lease = (await harness.nodes(started.run_id))["long"].lease_until
    assert lease is not None and lease > harness.engine.clock()  # still live

    await harness.engine.execute(started.run_id, "long", 1)  # the redelivered node-ready
    await harness.until(started.run_id, lambda n: n["long"].executions == 2)
    harness.release("long")
    run = await harness.wait(started.run_id)

    long = (await harness.nodes(run.run_id))["long"]
    assert run.status == RunStatus.SUCCEEDED
    assert long.executions == 2 and long.attempt == 1 and long.started_at is not None
    assert long.started_at >= lease  # not before the dead worker's lease ran out
    assert harness.calls["long"] == 2
