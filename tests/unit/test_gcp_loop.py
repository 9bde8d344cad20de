"""The process's one event loop for sync handlers (agentgraph.backends.gcp.loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from agentgraph.backends.gcp import loop


def test_every_handler_thread_runs_on_the_same_loop() -> None:
    async def which() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    with ThreadPoolExecutor(8) as pool:
        loops = set(pool.map(lambda _: loop.run(which(), timeout=5), range(32)))

    assert loops == {loop.get_loop()}
    assert loop.get_loop().is_running()


def test_coroutines_of_many_threads_overlap_on_the_loop() -> None:
    """16 handlers sleeping 0.2 s each take about 0.2 s, not 3.2 s."""
    barrier = threading.Barrier(16)

    async def nap() -> None:
        await asyncio.sleep(0.2)

    def handler(_: int) -> None:
        barrier.wait()
        loop.run(nap(), timeout=5)

    loop.get_loop()
    began = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(handler, range(16)))
    took = time.monotonic() - began
    assert took < 1.5


def test_errors_propagate_and_a_timeout_cancels_the_work() -> None:
    cancelled = threading.Event()

    async def boom() -> None:
        raise ValueError("from the loop")

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(ValueError, match="from the loop"):
        loop.run(boom(), timeout=5)
    with pytest.raises(TimeoutError):
        loop.run(forever(), timeout=0.1)
    assert cancelled.wait(2), "the timed-out coroutine was cancelled, not left running"
