"""The embedded backend: one process, an asyncio worker pool, real timers, SQLite state.

The engine is the same one the Cloud Functions run; only the delivery differs. node-ready
goes to a queue served by `workers` coroutines (so independent branches really overlap),
node-finished starts the fan-in as its own task, and a retry is a timer on the loop.
Nothing here is durable: durability is the store's, which is why a killed process can
be resumed from the SQLite file alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentgraph.engine import Engine
from agentgraph.ports import LlmProvider, RunRecord, Store, ToolRegistry
from agentgraph.status import NodeStatus

log = logging.getLogger("agentgraph.local")


class _Delivery:
    """Dispatcher and RetryScheduler for one process; `pending` counts work in flight so
    a waiter can tell 'still working' from 'nothing left to do'."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        self.engine: Engine | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        self.changed = asyncio.Event()
        self.executing: dict[tuple[str, str], asyncio.Task[None]] = {}

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being handled, no timer armed."""
        return self.queue.empty() and not self.tasks and not self.timers and not self.executing

    def busy_with(self, run_id: str) -> bool:
        """Whether any message or timer of this run is still queued or being handled."""
        queued = any(item[0] == run_id for item in self.queue._queue)  # type: ignore[attr-defined]
        return (
            queued
            or bool(self.timers)
            or any(
                task.get_name().split(" ", 1)[-1].startswith(run_id + "/") for task in self.tasks
            )
        )

    def spawn(self, work: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
        self.changed.set()

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self.queue.put_nowait((run_id, node_id, attempt))

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        assert self.engine is not None
        self.spawn(self.engine.complete(run_id, node_id, status), f"complete {run_id}/{node_id}")

    async def schedule(self, run_id: str, node_id: str, attempt: int, at: float) -> None:
        assert self.engine is not None
        engine = self.engine
        handle: asyncio.TimerHandle

        def fire() -> None:
            self.timers.discard(handle)
            self.spawn(
                engine.retry(run_id, node_id, attempt), f"retry {run_id}/{node_id}#{attempt}"
            )

        handle = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), fire)
        self.timers.add(handle)


class LocalRuntime:
    """Runs graphs in this process. Use as `async with LocalRuntime(...) as rt:`."""

    def __init__(
        self,
        store: Store,
        llm: LlmProvider,
        tools: ToolRegistry,
        *,
        workers: int = 8,
        partial_interval_s: float = 0.2,
    ) -> None:
        self.store = store
        self.workers = workers
        self._delivery = _Delivery()
        self.engine = Engine(
            store, self._delivery, self._delivery, llm, tools, partial_interval_s=partial_interval_s
        )
        self._delivery.engine = self.engine
        self._workers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> LocalRuntime:
        self._workers = [
            asyncio.create_task(self._work(), name=f"worker-{i}") for i in range(self.workers)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the workers and timers. Nodes in flight stay `running` in the store, so
        `resume` redoes them; nothing is half-written because every write is one commit."""
        for handle in self._delivery.timers:
            handle.cancel()
        self._delivery.timers.clear()
        for task in [*self._workers, *self._delivery.tasks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._delivery.tasks, return_exceptions=True)
        self._workers.clear()

    async def _work(self) -> None:
        queue = self._delivery.queue
        while True:
            run_id, node_id, attempt = await queue.get()
            task = asyncio.create_task(self.engine.execute(run_id, node_id, attempt))
            self._delivery.executing[(run_id, node_id)] = task
            try:
                await task
            except asyncio.CancelledError:
                if task.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    await self.store.resolve_node(
                        run_id,
                        node_id,
                        NodeStatus.CANCELLED,
                        time.time(),
                        reason="cancelled while running",
                        expected=(NodeStatus.RUNNING,),
                    )
                else:
                    raise
            except Exception:
                log.exception("executing %s/%s#%d failed", run_id, node_id, attempt)
            finally:
                self._delivery.executing.pop((run_id, node_id), None)
                queue.task_done()
                self._delivery.changed.set()

    # ---- the API the CLI and tests use ---------------------------------------------

    async def start(self, document: dict[str, Any], input: Any = None, **kwargs: Any) -> RunRecord:
        return await self.engine.start_run(document, input, **kwargs)

    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> RunRecord:
        """Until the run ends. Raises RuntimeError if nothing is left to do and the run has
        not ended (that would be a bug: a run must never be left stuck)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self.store.get_run(run_id)
            assert run is not None
            in_flight = self._delivery.busy_with(run_id) or any(
                key[0] == run_id for key in self._delivery.executing
            )
            if run.status.terminal and not in_flight:
                return run
            if self._delivery.idle and not run.status.terminal:
                raise RuntimeError(f"run {run_id} is stuck: nothing in flight, status {run.status}")
            self._delivery.changed.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"run {run_id} did not end within {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._delivery.changed.wait(), timeout=min(0.25, remaining or 0.25)
                )
            if on_change is not None:
                await on_change()

    async def run(self, document: dict[str, Any], input: Any = None, **kwargs: Any) -> RunRecord:
        run = await self.start(document, input, **kwargs)
        return await self.wait(run.run_id)

    async def cancel(self, run_id: str) -> bool:
        """Cancel the run and interrupt its nodes running in this process."""
        changed = await self.engine.cancel(run_id)
        for (task_run, _node), task in list(self._delivery.executing.items()):
            if task_run == run_id:
                task.cancel()
        return changed

    async def resume(self, run_id: str) -> RunRecord:
        return await self.engine.resume(run_id)
