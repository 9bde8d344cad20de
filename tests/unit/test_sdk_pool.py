"""The SDK's worker processes (llm/sdk_pool.py): a call there is the caller's call in all
but the process it runs in: its result, its classified failure, its cancellation; a dead
worker fails its calls retryably and sends later calls back in-process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentgraph.core.errors import LlmError
from agentgraph.llm import sdk_pool
from agentgraph.llm.sdk_pool import PoolUnavailable, SdkPool

pytestmark = pytest.mark.skipif(not sdk_pool.can_fork(), reason="the pool forks (POSIX)")


def _worker_calls() -> Any:
    """What each forked worker runs: one function, told what to do by its arguments."""
    cancelled = asyncio.Event()

    async def call(what: str, value: Any = None) -> Any:
        if what == "pid":
            return os.getpid()
        if what == "echo":
            return value
        if what == "llm_error":
            raise LlmError("quota", type="RESOURCE_EXHAUSTED", retryable=True, retry_after_s=7.0)
        if what == "bug":
            raise KeyError("oops")
        if what == "die":
            os._exit(3)
        if what == "wait_forever":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        if what == "was_cancelled":
            await asyncio.wait_for(cancelled.wait(), timeout=30)
            return True
        raise AssertionError(what)

    return call


@pytest.fixture
async def pool() -> AsyncIterator[SdkPool]:
    warmed: list[int] = []
    started = SdkPool(2, _worker_calls, warm=lambda: warmed.append(os.getpid()))
    yield started
    await started.aclose()
    assert warmed in ([], [os.getpid()])  # once, here, before the first fork


async def test_calls_run_in_other_processes_round_robin_and_return_their_results(
    pool: SdkPool,
) -> None:
    assert not pool.started
    pids = {await pool.call("pid") for _ in range(4)}
    assert pool.started
    assert len(pids) == 2 and os.getpid() not in pids
    assert await pool.call("echo", {"text": "hi", "n": (1, 2)}) == {"text": "hi", "n": (1, 2)}


async def test_concurrent_calls_each_get_their_own_answer(pool: SdkPool) -> None:
    answers = await asyncio.gather(*(pool.call("echo", n) for n in range(50)))
    assert answers == list(range(50))


async def test_an_llm_error_in_the_worker_reaches_the_caller_with_its_classification(
    pool: SdkPool,
) -> None:
    with pytest.raises(LlmError) as caught:
        await pool.call("llm_error")
    error = caught.value
    assert (error.message, error.type, error.retryable, error.retry_after_s) == (
        "quota",
        "RESOURCE_EXHAUSTED",
        True,
        7.0,
    )


async def test_any_other_exception_is_a_permanent_llm_error_naming_it(pool: SdkPool) -> None:
    with pytest.raises(LlmError) as caught:
        await pool.call("bug")
    assert caught.value.type == "KeyError"
    assert not caught.value.retryable
    assert "oops" in caught.value.message
    assert await pool.call("echo", "still serving") == "still serving"


async def test_cancelling_the_caller_cancels_the_call_in_the_worker() -> None:
    pool = SdkPool(1, _worker_calls)
    try:
        waiting = asyncio.ensure_future(pool.call("wait_forever"))
        assert await pool.call("echo", "started") == "started"  # the worker took both
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await pool.call("was_cancelled") is True
    finally:
        await pool.aclose()


async def test_a_dead_worker_fails_its_calls_retryably_and_later_calls_go_in_process() -> None:
    pool = SdkPool(1, _worker_calls)
    try:
        with pytest.raises(LlmError) as caught:
            await pool.call("die")
        assert caught.value.type == "WorkerExited"
        assert caught.value.retryable
        assert pool.broken
        with pytest.raises(PoolUnavailable):
            await pool.call("echo", 1)
    finally:
        await pool.aclose()


async def test_close_ends_every_worker() -> None:
    pool = SdkPool(2, _worker_calls)
    pids = {await pool.call("pid") for _ in range(2)}
    await pool.aclose()
    for pid in pids:
        with pytest.raises(ChildProcessError):  # exited and reaped
            os.waitpid(pid, os.WNOHANG)


def test_the_pool_serves_only_the_event_loop_that_started_it() -> None:
    pool = SdkPool(1, _worker_calls)

    async def first() -> int:
        pid: int = await pool.call("pid")
        return pid

    async def second() -> None:
        with pytest.raises(PoolUnavailable):
            await pool.call("pid")

    try:
        assert asyncio.run(first()) != os.getpid()
        asyncio.run(second())
    finally:
        asyncio.run(pool.aclose())


@pytest.mark.parametrize(
    ("cores", "platform", "workers"),
    [(1, "linux", 0), (2, "linux", 2), (3, "linux", 3), (64, "linux", 4), (8, "darwin", 0)],
)
def test_default_workers_one_per_core_up_to_four_on_linux_only(
    monkeypatch: pytest.MonkeyPatch, cores: int, platform: str, workers: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(sdk_pool.sys, "platform", platform)
    assert sdk_pool.default_workers() == workers
