"""The SDK's own loop (llm/sdk_loop.py): a call there is the caller's call in all but the
thread it runs on: its result, its exception, its context, its cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from agentgraph.llm.sdk_loop import SdkLoop

WHO = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
def sdk_loop() -> Iterator[SdkLoop]:
    loop = SdkLoop("test-sdk")
    yield loop
    loop.close()


async def test_the_call_runs_on_another_thread_and_returns_its_result(sdk_loop: SdkLoop) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert await sdk_loop.call(where) == "test-sdk"


async def test_the_call_sees_the_callers_context(sdk_loop: SdkLoop) -> None:
    WHO.set("the engine's node")

    async def who() -> str:
        return WHO.get()

    assert await sdk_loop.call(who) == "the engine's node"


async def test_the_calls_exception_is_raised_to_the_caller_unchanged(sdk_loop: SdkLoop) -> None:
    class Refused(Exception):
        pass

    async def refuse() -> None:
        raise Refused("no")

    with pytest.raises(Refused, match="no"):
        await sdk_loop.call(refuse)


async def test_cancelling_the_caller_cancels_the_call_on_the_sdk_loop(sdk_loop: SdkLoop) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.ensure_future(sdk_loop.call(forever))
    await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await asyncio.to_thread(cancelled.wait, 10)


async def test_two_calls_run_at_once_and_call_back_on_the_callers_loop(sdk_loop: SdkLoop) -> None:
    both = asyncio.Event()  # of the caller's loop: set from the SDK loop through to_caller
    arrived: list[int] = []

    async def note(index: int) -> None:
        arrived.append(index)
        if len(arrived) == 2:
            both.set()

    on_caller = sdk_loop.to_caller(note)

    async def meet(index: int) -> int:
        await on_caller(index)
        return index

    assert sorted(
        await asyncio.gather(sdk_loop.call(lambda: meet(1)), sdk_loop.call(lambda: meet(2)))
    ) == [1, 2]
    assert both.is_set()


async def test_a_callback_made_for_the_caller_runs_on_the_callers_thread(sdk_loop: SdkLoop) -> None:
    threads: list[str] = []

    async def record(value: str) -> None:
        threads.append(threading.current_thread().name)

    on_caller = sdk_loop.to_caller(record)

    async def stream() -> None:
        await on_caller("partial")

    await sdk_loop.call(stream)
    assert threads == [threading.current_thread().name]
