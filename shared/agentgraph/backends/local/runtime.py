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
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from agentgraph.core.errors import RunStuck
from agentgraph.core.llm_port import LlmProvider
from agentgraph.core.ports import Store, ToolRegistry
from agentgraph.core.records import RunRecord
from agentgraph.core.status import NodeStatus
from agentgraph.engine import LEASE_WATCH_TAG, Engine
from agentgraph.observability import tracing
from agentgraph.tools.run_files import LocalScratch

log = logging.getLogger("agentgraph.local")

# Nodes executed at once. Agents are I/O-bound (a model call waits 1-60 s on the network),
# so the pool is wide and the guard is the per-model cap of the LLM router
# (`agentgraph.llm.DEFAULT_MAX_CONCURRENCY`): a layer of 10 agents takes one round trip,
# not two as it did with 8 workers.
DEFAULT_WORKERS = 64
ON_CHANGE_INTERVAL_S = 0.1  # how often `wait` calls a live view back while a run is busy
# How often a node waiting for approval is read for a decision that another process (the
# `agentgraph approve` of a second terminal) wrote to the same SQLite file.
APPROVAL_POLL_S = 0.2


class _Delivery:
    """Dispatcher and RetryScheduler for one process. `in_flight` counts, per run, the
    messages queued or being handled and the timers armed, so a waiter can tell 'still
    working' from 'nothing left to do' without scanning queues or reading the store."""

    def __init__(self) -> None:
        # Each node-ready carries the trace context it was sent in (None when tracing is
        # off): the workers outlive every run, so a run's trace must travel with its message.
        self.queue: asyncio.Queue[tuple[str, str, int, Any]] = asyncio.Queue()
        self.engine: Engine | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timers: dict[asyncio.TimerHandle, str] = {}
        self.changed = asyncio.Event()
        self.executing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.in_flight: Counter[str] = Counter()
        self._settled: dict[str, tuple[asyncio.Event, int]] = {}
        self._keyed: dict[tuple[str, str, int], asyncio.TimerHandle] = {}
        self.on_approval: Callable[[str, str], Awaitable[None]] | None = None
        self._watching: set[tuple[str, str, int]] = set()
        self._uncounted: set[asyncio.TimerHandle] = set()

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being handled, no timer armed."""
        return not self.in_flight

    def busy_with(self, run_id: str) -> bool:
        """Whether any message or timer of this run is still queued or being handled."""
        return self.in_flight[run_id] > 0

    def watch(self, run_id: str) -> asyncio.Event:
        """An event set whenever this run has nothing in flight (for `LocalRuntime.wait`);
        each `watch` is paired with an `unwatch`."""
        event, waiters = self._settled.get(run_id, (None, 0))
        if event is None:
            event = asyncio.Event()
            if not self.in_flight[run_id]:
                event.set()
        self._settled[run_id] = (event, waiters + 1)
        return event

    def unwatch(self, run_id: str) -> None:
        event, waiters = self._settled.pop(run_id)
        if waiters > 1:
            self._settled[run_id] = (event, waiters - 1)

    def begin(self, run_id: str) -> None:
        self.in_flight[run_id] += 1
        if run_id in self._settled:
            self._settled[run_id][0].clear()

    def end(self, run_id: str) -> None:
        self.in_flight[run_id] -= 1
        if self.in_flight[run_id] <= 0:
            del self.in_flight[run_id]
            if run_id in self._settled:
                self._settled[run_id][0].set()
        self.changed.set()

    def spawn(self, work: Awaitable[Any], run_id: str, name: str) -> None:
        self.begin(run_id)
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, run_id))

    def _done(self, task: asyncio.Task[Any], run_id: str) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
        self.end(run_id)

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self.begin(run_id)
        self.queue.put_nowait((run_id, node_id, attempt, tracing.current_context()))

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        assert self.engine is not None
        self.spawn(
            self.engine.complete(run_id, node_id, status), run_id, f"complete {run_id}/{node_id}"
        )

    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None:
        assert self.engine is not None
        engine = self.engine
        handle: asyncio.TimerHandle

        # A lease watch (engine._watch_lease) is a look at a node another worker runs,
        # not work of the run: a run may end while one is armed, so it is not counted.
        counted = not tag.startswith(LEASE_WATCH_TAG)

        def fire() -> None:
            self.timers.pop(handle, None)
            if self._keyed.get((run_id, node_id, attempt)) is handle:
                del self._keyed[(run_id, node_id, attempt)]
            self.spawn(
                engine.retry(run_id, node_id, attempt),
                run_id,
                f"retry {run_id}/{node_id}#{attempt}",
            )
            if counted:
                self.end(run_id)
            else:
                self._uncounted.discard(handle)

        if counted:
            self.begin(run_id)
        key = (run_id, node_id, attempt)
        self._cancel_timer(key)  # the same delivery armed again replaces the earlier timer
        handle = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), fire)
        self.timers[handle] = run_id
        self._keyed[key] = handle
        if not counted:
            self._uncounted.add(handle)

    def _cancel_timer(self, key: tuple[str, str, int]) -> None:
        handle = self._keyed.pop(key, None)
        if handle is not None and self.timers.pop(handle, None) is not None:
            handle.cancel()
            if handle in self._uncounted:
                self._uncounted.discard(handle)
            else:
                self.end(key[0])

    async def awaiting_approval(self, run_id: str, node_id: str, attempt: int) -> None:
        """ApprovalWatcher: read the node until it is decided (here, or by another process
        on the same file), then send its node-finished and drop its timeout timer. The
        watch counts as in flight, so `wait` knows the run is not stuck but waiting."""
        key = (run_id, node_id, attempt)
        if key not in self._watching:
            self._watching.add(key)
            self.spawn(self._watch_approval(key), run_id, f"approval {run_id}/{node_id}")
            if self.on_approval is not None:
                await self.on_approval(run_id, node_id)

    async def _watch_approval(self, key: tuple[str, str, int]) -> None:
        assert self.engine is not None
        run_id, node_id, attempt = key
        try:
            while True:
                await asyncio.sleep(
                    APPROVAL_POLL_S
                )  # polling: the decision may be another process's
                record = await self.engine.store.get_node(run_id, node_id)
                if (
                    record is None
                    or record.status != NodeStatus.WAITING_APPROVAL
                    or record.attempt != attempt
                ):
                    break
        finally:
            self._watching.discard(key)
        self._cancel_timer(key)
        if record is not None and record.status.terminal:
            await self.engine.complete(run_id, node_id, record.status)

    def cancel_timers(self) -> None:
        for handle, run_id in list(self.timers.items()):
            handle.cancel()
            if handle not in self._uncounted:
                self.end(run_id)
        self.timers.clear()
        self._keyed.clear()
        self._uncounted.clear()


class LocalRuntime:
    """Runs graphs in this process. Use as `async with LocalRuntime(...) as rt:`."""

    def __init__(
        self,
        store: Store,
        llm: LlmProvider,
        tools: ToolRegistry,
        *,
        workers: int = DEFAULT_WORKERS,
        partial_interval_s: float = 0.2,
        on_approval: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.workers = workers
        self._delivery = _Delivery()
        self._delivery.on_approval = on_approval  # told of each node that starts waiting
        self.engine = Engine(
            store,
            self._delivery,
            self._delivery,
            llm,
            tools,
            partial_interval_s=partial_interval_s,
            local_files=True,
            # The runs' files (read_run_file/write_run_file): a folder beside the SQLite
            # file, or AGENTGRAPH_RUN_FILES (tools/run_files.py).
            scratch=LocalScratch.next_to(str(getattr(store, "path", ":memory:"))),
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
        self._delivery.cancel_timers()
        for task in [*self._workers, *self._delivery.tasks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._delivery.tasks, return_exceptions=True)
        self._workers.clear()

    async def _work(self) -> None:
        queue = self._delivery.queue
        while True:
            run_id, node_id, attempt, trace_context = await queue.get()
            with tracing.attached(trace_context):  # the task copies it
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
                self._delivery.end(run_id)

    # ---- the API the CLI and tests use ---------------------------------------------

    async def start(self, document: dict[str, Any], input: Any = None, **kwargs: Any) -> RunRecord:
        """Start a run; with tracing on, its trace's root span (the api request's place)."""
        with tracing.span(f"run {document.get('name', '?')}", kind=tracing.SpanKind.SERVER):
            return await self.engine.start_run(document, input, **kwargs)

    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> RunRecord:
        """Until the run ends. Raises RunStuck if nothing is left to do and the run has
        not ended (that would be a bug: a run must never be left stuck).

        Event-driven: while messages of the run are in flight in this process it sleeps
        until they have all been handled (a run ends in the handler of a message, so it
        cannot have ended here before), and only then reads the run. With `on_change` it
        calls back at least every ON_CHANGE_INTERVAL_S while the run is in flight and
        whenever it settles, for live views: not once per handled message, which cost a
        wake-up (a task and a timer) per message, and not with a read of the run, which
        costs as much as the run record is large."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delivery = self._delivery
        settled = delivery.watch(run_id)
        poll = 0.25 if on_change is None else ON_CHANGE_INTERVAL_S
        try:
            while True:
                wake = settled
                if not delivery.busy_with(run_id):
                    delivery.changed.clear()
                    run = await self.store.get_run(run_id)
                    assert run is not None
                    if run.status.terminal and not delivery.busy_with(run_id):
                        return run
                    if delivery.idle and not run.status.terminal:
                        raise RunStuck(
                            f"run {run_id} is stuck: nothing in flight, status {run.status}"
                        )
                    wake = delivery.changed  # another process may end it; poll on changes
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"run {run_id} did not end within {timeout}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(poll, remaining or poll))
                if on_change is not None:
                    await on_change()
        finally:
            delivery.unwatch(run_id)

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
