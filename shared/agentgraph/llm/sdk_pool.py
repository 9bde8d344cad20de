"""Worker processes forked from this one, where model calls run off the engine's GIL.

google-genai spends about 2 ms of CPU per call (pydantic request and response models,
httpx). On a thread of its own (`sdk_loop.py`) that CPU still shares one interpreter lock
with the engine, so ten agents answered at once are parsed one after another, and the
engine's claims and commits wait for them. In a forked worker the SDK runs on another
core: the engine's process only pickles the request and the answer (about 0.1 ms).

What is guaranteed:
- A call through the pool is the same `GeminiProvider._call` (same client settings, same
  classification of failures into `LlmError`), run by the worker's copy of the provider
  on the worker's own event loop; its result or `LlmError` is the caller's.
- Cancelling the caller cancels the call in the worker.
- A worker that dies fails its calls in flight with a retryable `LlmError` (the engine
  retries them as it retries a dropped connection), and the pool stops taking calls:
  later calls run in-process.
- Workers are forked by `start` (the runtime calls it when a run with Gemini agents
  starts, so its first calls do not wait for the forks) or on the first call (POSIX
  only), never before: a graph without Gemini agents starts no process. `aclose` ends them; they also end when this process
  does (their socket closes). The pool serves the event loop of its first call; a call
  from another loop, like one after a worker died, raises `PoolUnavailable` and the
  caller makes it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import pickle
import signal
import socket
import struct
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from agentgraph.core.errors import LlmError

_HEADER = struct.Struct("<I")
# The parent's ends of every worker's socket: a worker closes those it inherited, so that
# closing one in the parent is the end of input for its worker alone.
_PARENT_ENDS: weakref.WeakSet[socket.socket] = weakref.WeakSet()
Call = Callable[..., Awaitable[Any]]  # the worker's `_call(request, contents, config)`


MAX_WORKERS = 4  # each worker serves any number of calls at once; more only add startup
CLOSE_TIMEOUT_S = 5.0  # a worker still running this long after its input ended is killed


def can_fork() -> bool:
    return hasattr(os, "fork") and hasattr(socket, "socketpair")


def default_workers() -> int:
    """One worker per core up to MAX_WORKERS on Linux; none on one core (nothing to
    overlap with), nor where forking a process that has threads is not safe (macOS's
    system libraries, hence CPython's own `spawn` default there)."""
    cores = os.cpu_count() or 1
    if cores < 2 or not can_fork() or not sys.platform.startswith("linux"):
        return 0
    return min(cores, MAX_WORKERS)


class SdkPool:
    """`size` forked workers; calls go round-robin to them."""

    def __init__(
        self,
        size: int,
        make_call: Callable[[], Call],
        warm: Callable[[], None] | None = None,
    ) -> None:
        """`make_call` runs in each worker after the fork and returns the function that
        makes one call there (a provider of the worker's own). `warm` runs once here
        before the first fork: what it builds (the SDK's lazily built pydantic
        validators) every worker inherits instead of building it on its first call."""
        self.size = size
        self._make_call = make_call
        self._warm = warm
        self._workers: list[_Worker] = []
        self._next = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.broken = False

    @property
    def started(self) -> bool:
        return bool(self._workers)

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self._workers]

    async def call(self, *args: Any) -> Any:
        """`make_call()(*args)` in a worker. Raises `PoolUnavailable` when the pool cannot
        take calls (the caller then runs the call itself)."""
        if self.broken:
            raise PoolUnavailable("the SDK worker pool stopped")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # the workers' sockets belong to the first loop
            raise PoolUnavailable("the SDK worker pool serves the event loop that started it")
        self.start()
        worker = self._workers[next(self._next) % len(self._workers)]
        return await worker.call(args)

    def start(self) -> None:
        """Fork the workers now if they are not running (idempotent). Raises
        `PoolUnavailable` when no process can be had (calls then run in-process)."""
        if self.broken:
            raise PoolUnavailable("the SDK worker pool stopped")
        if self._workers:
            return
        if self._warm is not None:
            with contextlib.suppress(Exception):  # an optimisation only
                self._warm()
        try:
            for _ in range(self.size):
                self._workers.append(_Worker.fork(self._make_call, self._on_exit))
        except OSError as exc:  # no process to be had: calls stay in-process
            self.broken = True
            raise PoolUnavailable(f"could not start an SDK worker: {exc}") from exc

    def _on_exit(self) -> None:
        self.broken = True

    async def aclose(self) -> None:
        self.broken = True  # later calls run in-process
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.aclose()


class PoolUnavailable(Exception):
    """The pool takes no calls (a worker died): run the call in-process."""


class _Worker:
    """One forked process and the parent's end of its socket."""

    def __init__(self, pid: int, sock: socket.socket, on_exit: Callable[[], None]) -> None:
        self.pid = pid
        self._sock = sock
        self._on_exit = on_exit
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def fork(cls, make_call: Callable[[], Call], on_exit: Callable[[], None]) -> _Worker:
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            _serve(child, make_call, [parent, *_PARENT_ENDS])
        child.close()
        _PARENT_ENDS.add(parent)
        return cls(pid, parent, on_exit)

    async def _open(self) -> asyncio.StreamWriter:
        if self._writer is None:
            if self._opened is None:
                self._loop = asyncio.get_running_loop()
                self._opened = opened = self._loop.create_future()
                try:
                    reader, writer = await asyncio.open_connection(sock=self._sock)
                except BaseException as exc:
                    opened.set_exception(exc)
                    raise
                self._writer = writer
                self._reader_task = asyncio.ensure_future(self._read(reader))
                opened.set_result(None)
            else:
                await self._opened
        assert self._writer is not None
        return self._writer

    async def call(self, args: tuple[Any, ...]) -> Any:
        writer = await self._open()
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        writer.write(_frame(("call", call_id, args)))
        try:
            return await future
        except asyncio.CancelledError:
            if not writer.is_closing():
                writer.write(_frame(("cancel", call_id, None)))
            raise
        finally:
            self._pending.pop(call_id, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await _read_frame(reader)
                if message is None:
                    break
                outcome, call_id, value = message
                future = self._pending.get(call_id)
                if future is None or future.done():
                    continue
                if outcome == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(_error(value))
        finally:
            self._on_exit()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        LlmError(
                            "the Gemini SDK worker process ended during the call",
                            type="WorkerExited",
                            retryable=True,
                        )
                    )

    async def aclose(self) -> None:
        """End of input for the worker (it exits), then reap it. From a loop other than
        the one the socket was opened on, the socket is closed directly."""
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._loop is loop:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            if self._reader_task is not None:
                with contextlib.suppress(Exception):
                    await self._reader_task
        else:
            self._sock.close()
        reaped = loop.run_in_executor(None, _reap, self.pid)
        try:
            await asyncio.wait_for(asyncio.shield(reaped), CLOSE_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await reaped


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    try:
        header = await reader.readexactly(_HEADER.size)
        return pickle.loads(await reader.readexactly(_HEADER.unpack(header)[0]))
    except asyncio.IncompleteReadError:
        return None


def _error(fields: dict[str, Any]) -> LlmError:
    return LlmError(fields.pop("message"), **fields)


def _error_fields(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, LlmError):
        return {
            "message": exc.message,
            "type": exc.type,
            "retryable": exc.retryable,
            "http_status": exc.http_status,
            "retry_after_s": exc.retry_after_s,
        }
    return {
        "message": f"Gemini call failed in the SDK worker: {type(exc).__name__}: {exc}",
        "type": type(exc).__name__,
        "retryable": False,
    }


def _serve(sock: socket.socket, make_call: Callable[[], Call], inherited: list[Any]) -> None:
    """The worker's whole life: a fresh event loop answering calls until the parent's end
    of the socket closes. Whatever it inherited stays untouched: the parent's objects are
    frozen out of the garbage collector (no finalizer of theirs, e.g. a SQLite
    connection's, runs here), stdin, stdout and stderr become /dev/null (a reader of the
    parent's output sees its end when the parent ends), the parent's signal wake-up is
    dropped, and `os._exit` skips atexit hooks and buffered output."""
    code = 0
    try:
        gc.freeze()
        with contextlib.suppress(ValueError):  # forked from a thread other than main
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; EOF ends us
        for end in inherited:
            end.close()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(null, 2)
        asyncio.events._set_running_loop(None)  # the parent's loop was running at fork
        asyncio.run(_answer(sock, make_call()))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


async def _answer(sock: socket.socket, call: Call) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    running: dict[int, asyncio.Task[None]] = {}

    async def one(call_id: int, args: tuple[Any, ...]) -> None:
        try:
            message: tuple[str, int, Any] = ("ok", call_id, await call(*args))
        except asyncio.CancelledError:
            return
        except Exception as exc:
            message = ("error", call_id, _error_fields(exc))
        finally:
            running.pop(call_id, None)
        writer.write(_frame(message))

    while True:
        message = await _read_frame(reader)
        if message is None:
            break
        kind, call_id, args = message
        if kind == "cancel":
            task = running.get(call_id)
            if task is not None:
                task.cancel()
        else:
            running[call_id] = asyncio.ensure_future(one(call_id, args))
    for task in list(running.values()):
        task.cancel()
