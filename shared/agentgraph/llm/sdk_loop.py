"""A thread with an event loop of its own, where an SDK's calls run.

google-genai spends about 2 ms of CPU per call (building the request from pydantic
models, httpx, parsing the answer into pydantic models). On the engine's loop that work
sits on the critical path of every other node: ten agents answered at once finish one
after another, each waiting for the others' parsing, and their claims, commits and
fan-ins wait too. On a loop of its own the SDK's work interleaves with the engine's at
the interpreter's switch points instead of in whole turns, and whatever releases the
GIL on either side (SQLite statements, socket I/O) overlaps; measured on the benchmark's
10x5 graph of Gemini agents (docs/benchmarks.md), parallel efficiency rose in every
interleaved round, by 0.03 to 0.13. The CPU per call is the same: this is not a way to
make the SDK cheaper, only to keep it out of the others' way.

What is guaranteed: the call runs in a copy of the caller's context (its trace span,
log fields), its result or exception is the caller's, and cancelling the caller cancels
the call on the SDK's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SdkLoop:
    """One daemon thread running one event loop, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether a call ever started the thread (closing an unstarted loop is free)."""
        return self._loop is not None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=serve, name=self._name, daemon=True).start()
                started.wait()
                self._loop = loop
            return self._loop

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """`await make()`, run on this loop; `make` is called there."""
        loop = self._running_loop()
        context = contextvars.copy_context()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Future[T]] = []

        def start() -> None:
            if done.cancelled():
                return
            task = asyncio.ensure_future(_awaited(make), loop=loop)
            tasks.append(task)
            task.add_done_callback(lambda finished: _settle(finished, done))

        loop.call_soon_threadsafe(context.run, start)
        try:
            return await asyncio.wrap_future(done)
        except asyncio.CancelledError:
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
            raise

    def to_caller(
        self, callback: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """`callback` (a coroutine function of the caller's loop, e.g. a streamed partial
        that writes to the store) made callable from this loop: it runs on the caller's."""
        caller = asyncio.get_running_loop()

        async def on_caller(value: Any) -> None:
            future = asyncio.run_coroutine_threadsafe(_awaited(lambda: callback(value)), caller)
            await asyncio.wrap_future(future)

        return on_caller

    def close(self) -> None:
        """Stop the loop and its thread (after its calls ended)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _settle(task: asyncio.Future[T], done: concurrent.futures.Future[T]) -> None:
    if done.done():  # the caller was cancelled meanwhile
        return
    try:
        if task.cancelled():
            done.cancel()
        elif task.exception() is not None:
            done.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            done.set_result(task.result())
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by the caller between the check and the set
