"""One persistent event loop per process, for running engine coroutines from sync handlers.

Flask and functions-framework call handlers on worker threads with no event loop, but the
Firestore, Pub/Sub and Cloud Tasks async clients bind their gRPC channels to the loop of
their first call. `asyncio.run` per request would give every request a new loop, and the
cached clients would then fail (or be rebuilt cold on every call, which is the latency
killer). So every coroutine runs on ONE loop in a daemon thread that lives as long as the
process, and handler threads wait for their result.

The loop is created on first use, not at import: functions-framework imports the source
in gunicorn's master and forks the worker, and a thread does not survive a fork. A change
of process id (a fork after first use) starts a fresh loop in the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's loop, started on first use (and again after a fork)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or not _loop.is_running():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="agentgraph-loop", daemon=True).start()
            ready.wait()
            _loop, _pid = loop, os.getpid()
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the process loop and wait for its result from this (non-loop) thread.

    Exceptions propagate to the caller unchanged. On timeout the coroutine is cancelled
    before TimeoutError is raised, so no work continues behind a request that has failed.
    """
    loop = get_loop()
    if _in_loop_thread(loop):
        coro.close()
        raise RuntimeError("loop.run() called from the loop thread itself: await instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"no result within {timeout} s") from None


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
