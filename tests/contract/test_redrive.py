"""Contract: redrive. A failed or cancelled run starts again from where it stopped:
succeeded nodes keep their outputs and are not run again; failed, cancelled, never-run
nodes and those skipped because of the failure run again with fresh attempts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentgraph.core.errors import RedriveConflict
from agentgraph.core.status import NodeStatus, RunStatus

from .conftest import Harness
from .test_run_semantics import const, graph

S = NodeStatus


def flaky_pipeline() -> dict[str, Any]:
    """a -> b (fails while the test says so) -> c; a -> d (independent); c, d -> e."""
    return graph(
        const("a", 1),
        {"id": "b", "after": ["a"], "tool": "switch", "args": {"key": "b"}},
        const("c", "{{ nodes.b.output }}", ["b"]),
        const("d", 4, ["a"]),
        const("e", "{{ nodes.c.output }}+{{ nodes.d.output }}", ["c", "d"]),
    )


@pytest.fixture
def switch(harness: Harness) -> dict[str, bool]:
    """A tool that fails (permanently) until the test flips `broken` off: the fix."""
    state = {"broken": True}

    @harness.tools.tool
    def switch(key: str) -> str:
        harness.calls[key] += 1
        if state["broken"]:
            raise ValueError(f"{key} is broken")
        return "fixed"

    return state


async def test_redriving_a_failed_run_reruns_only_what_did_not_succeed(
    harness: Harness, switch: dict[str, bool]
) -> None:
    run = await harness.run(flaky_pipeline())
    assert run.status == RunStatus.FAILED
    before = await harness.nodes(run.run_id)
    assert before["b"].status == S.FAILED
    assert before["c"].status == S.CANCELLED
    ran_once = dict(harness.calls)

    switch["broken"] = False
    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven
    assert set(again) == {"b", "c", "e"} | ({"d"} if before["d"].status != S.SUCCEEDED else set())
    run = await harness.wait(run.run_id)

    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"e": "fixed+4"}
    assert run.error is None
    assert harness.calls["a"] == 1, "a succeeded: it is not run again"
    assert harness.calls["d"] == 1
    assert harness.calls["b"] == ran_once["b"] + 1
    nodes = await harness.nodes(run.run_id)
    assert {n.status for n in nodes.values()} == {S.SUCCEEDED}
    assert nodes["b"].attempt == 1 and nodes["b"].executions == 1  # a fresh attempt
    assert sum(run.counts.values()) == len(nodes) == run.counts["succeeded"]


async def test_redriving_a_cancelled_run_runs_what_was_cancelled(harness: Harness) -> None:
    started = await harness.start(
        graph(
            const("a", 1),
            {"id": "slow", "after": ["a"], "tool": "hold", "args": {"key": "slow", "value": 2}},
            const("b", "{{ nodes.slow.output }}", ["slow"]),
        )
    )
    await harness.until(started.run_id, lambda nodes: nodes["slow"].status == S.RUNNING)
    await harness.engine.cancel(started.run_id)
    harness.release("slow")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.CANCELLED
    await harness.until(started.run_id, lambda nodes: nodes["slow"].status.terminal)

    redriven, again = await harness.engine.redrive(run.run_id)
    assert redriven and "b" in again and "a" not in again
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"b": 2}
    assert harness.calls["a"] == 1


async def test_redriving_a_running_or_succeeded_run_is_a_conflict(harness: Harness) -> None:
    run = await harness.run(graph(const("a", 1)))
    with pytest.raises(RedriveConflict, match="is succeeded"):
        await harness.engine.redrive(run.run_id)
    started = await harness.start(graph({"id": "h", "tool": "hold", "args": {"key": "h"}}))
    with pytest.raises(RedriveConflict, match="is running"):
        await harness.engine.redrive(started.run_id)
    harness.release("h")
    await harness.wait(started.run_id)


async def test_a_repeated_redrive_changes_nothing_more(
    harness: Harness, switch: dict[str, bool]
) -> None:
    run = await harness.run(flaky_pipeline())
    switch["broken"] = False
    first, second = await asyncio_gather(
        harness.engine.redrive(run.run_id), harness.engine.redrive(run.run_id)
    )
    assert sorted([first[0], second[0]]) == [False, True]
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert harness.calls["c"] == 1 and harness.calls["e"] == 1
    with pytest.raises(RedriveConflict):
        await harness.engine.redrive(run.run_id)


async def test_a_redrive_cut_short_before_the_run_is_running_is_finished_by_another(
    harness: Harness, switch: dict[str, bool]
) -> None:
    """A crash after the nodes were reset but before the run was set running leaves a
    failed run whose nodes wait: nothing moves, and the next redrive finishes the job."""
    run = await harness.run(flaky_pipeline())
    store: Any = harness.store
    inner = getattr(store, "_inner", store)
    original = type(inner).redrive_run

    async def resets_only(self: Any, run_id: str, resets: Any, now: float) -> bool:
        # the node half of a redrive: resetting then failing the run back is what a crash
        # before the run's write leaves (a failed run with reset nodes)
        await original(self, run_id, resets, now)
        await self.set_run_status(run_id, (RunStatus.RUNNING,), RunStatus.FAILED, now)
        raise ConnectionError("died before the run was written")

    type(inner).redrive_run = resets_only
    try:
        with pytest.raises(ConnectionError):
            await harness.engine.redrive(run.run_id)
    finally:
        type(inner).redrive_run = original
    cut_short = await harness.nodes(run.run_id)
    assert (cut_short["b"].status, cut_short["b"].attempt) == (S.READY, 1)
    assert cut_short["c"].status == S.WAITING
    assert (await harness.store.get_run(run.run_id)).status == RunStatus.FAILED  # type: ignore[union-attr]
    switch["broken"] = False
    redriven, _ = await harness.engine.redrive(run.run_id)
    assert redriven
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert harness.calls["a"] == 1


@contextlib.contextmanager
def redrive_after_next_read(harness: Harness) -> Iterator[list[str]]:
    """The next read of a run's summary answers the run as it was, and a redrive of it
    commits before the reader goes on: a stale reader racing a redrive. Yields the nodes
    the redrive runs again."""
    store: Any = harness.store
    inner = getattr(store, "_inner", store)
    original = type(inner).get_run_summary
    again: list[str] = []
    done: list[bool] = []

    async def read_then_redriven(self: Any, run_id: str, *, counts: bool = True) -> Any:
        summary = await original(self, run_id, counts=counts)
        if not done:
            done.append(True)
            again.extend((await harness.engine.redrive(run_id))[1])
        return summary

    type(inner).get_run_summary = read_then_redriven
    try:
        yield again
    finally:
        type(inner).get_run_summary = original


async def test_a_stale_message_of_the_ended_run_leaves_what_a_redrive_made_ready(
    harness: Harness, switch: dict[str, bool]
) -> None:
    """An engine that ended a run cancels a ready node it is then asked to run ("start
    nothing new"), deciding on the run's status as it read it. A redrive committing between
    that read and the cancel has made the node ready again: the cancel must not apply, or
    the redriven run waits forever behind a cancelled node."""
    run = await harness.run(flaky_pipeline())
    assert run.status == RunStatus.FAILED
    harness.engine._ended.put(run.run_id, None)  # this process ended it (it may have)
    switch["broken"] = False
    with redrive_after_next_read(harness) as again:
        await harness.engine.execute(run.run_id, "b", 1)  # b's first node-ready, again
    assert "b" in again
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"e": "fixed+4"}


async def test_a_takeover_in_an_ended_run_runs_if_a_redrive_came_between(
    harness: Harness, switch: dict[str, bool]
) -> None:
    """A takeover (its executor died mid-attempt) in a run that has ended is cancelled, on
    the run's status as read; a redrive committing between that read and the cancel
    leaves the running node to the redriven run, which waits for it: it must run."""
    run = await harness.run(flaky_pipeline())
    now = time.time()
    assert await harness.store.redrive_run(run.run_id, {"b": S.READY}, now)
    assert await harness.store.claim_node(run.run_id, "b", 1, now, now + 0.05)  # then died
    assert await harness.store.set_run_status(
        run.run_id, (RunStatus.RUNNING,), RunStatus.FAILED, now
    )
    await asyncio.sleep(0.1)  # its lease lapses
    harness.engine._ended.pop(run.run_id)  # ended elsewhere: this process reads it first
    switch["broken"] = False
    with redrive_after_next_read(harness) as again:
        await harness.engine.execute(run.run_id, "b", 1)  # the takeover
    assert again and "b" not in again  # running: the redrive leaves it to its executor
    run = await harness.wait(run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"e": "fixed+4"}


async def test_a_ready_node_of_a_run_that_has_ended_is_cancelled_not_run(
    harness: Harness, switch: dict[str, bool]
) -> None:
    """The other side of the test above: with the run still ended when the cancel is
    written, the node-ready starts nothing."""
    run = await harness.run(flaky_pipeline())
    calls = harness.calls["b"]
    now = time.time()
    assert await harness.store.redrive_run(run.run_id, {"b": S.READY}, now)
    assert await harness.store.set_run_status(
        run.run_id, (RunStatus.RUNNING,), RunStatus.FAILED, now
    )  # b is ready in a run that failed again before b's node-ready arrived
    harness.engine._ended.put(run.run_id, None)  # this process ended it
    switch["broken"] = False
    await harness.engine.execute(run.run_id, "b", 1)
    b = (await harness.nodes(run.run_id))["b"]
    assert (b.status, b.skip_reason) == (S.CANCELLED, "run_ended")
    assert harness.calls["b"] == calls


async def asyncio_gather(*calls: Any) -> list[Any]:
    return list(await asyncio.gather(*calls))
