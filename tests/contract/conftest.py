"""The backend-neutral harness the contract tests drive.

Each backend fixture yields a `Harness`: start/wait/cancel runs, inspect records, and
simulate a crash of everything in flight followed by recovery. A new backend is done
when `tests/contract/` passes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.errors import RetryableToolError
from agentgraph.core.ports import Store
from agentgraph.core.records import Event, NodeRecord, RunRecord
from agentgraph.core.status import NodeStatus
from agentgraph.engine import Engine
from agentgraph.llm import default_router
from agentgraph.tools import Registry, default_registry
from emulator.harness import EmulatorStack

# "firestore": the same LocalRuntime (in-process delivery) on FirestoreStore, against the
# Firestore emulator; each test gets its own emulator project, so a clean database.
# "gcp": production wiring (FirestoreStore + PubSubDispatcher + CloudTasksRetries) with the
# messages travelling through the Pub/Sub and Cloud Tasks emulators to the function
# handlers, which run in the test process (tests/contract/gcp_delivery.py).
BACKENDS = [
    "local",
    pytest.param("firestore", marks=pytest.mark.emulator),
    pytest.param("gcp", marks=pytest.mark.emulator),
]

# How long the gcp sweeper leaves a ready or retrying node alone (production: 60 s, so a
# message merely in flight is not re-sent); recover() lets this much time pass at once.
SWEEP_GRACE_S = 0.5


class WatchedStore:
    """A backend's store that sets `changed` after every write it makes (every method but
    the reads), so a test waits for a condition on the store's state by re-checking it
    once per write instead of polling: the state changes only through these writes."""

    _READS = ("get_", "list_", "stale_")

    def __init__(self, inner: Store, changed: asyncio.Event) -> None:
        self._inner = inner
        self._changed = changed

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith(self._READS) or not inspect.iscoroutinefunction(attribute):
            return attribute

        async def write(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            finally:
                self._changed.set()

        return write


def watched(store: Store, changed: asyncio.Event) -> Store:
    return cast(Store, WatchedStore(store, changed))


@dataclass
class Harness:
    """What a contract test needs from a backend."""

    name: str
    engine: Engine
    store: Store
    tools: Registry
    calls: Counter[str] = field(default_factory=Counter)
    gates: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _wait: Callable[[str, float], Awaitable[RunRecord]] | None = None
    _crash: Callable[[], Awaitable[None]] | None = None
    _recover: Callable[[str], Awaitable[None]] | None = None
    _restart: Callable[[], Awaitable[None]] | None = None

    async def start(self, document: dict[str, Any], input: Any = None, **kwargs: Any) -> RunRecord:
        return await self.engine.start_run(document, input, **kwargs)

    async def wait(self, run_id: str, timeout: float = 30) -> RunRecord:
        assert self._wait is not None
        return await self._wait(run_id, timeout)

    async def run(self, document: dict[str, Any], input: Any = None, **kwargs: Any) -> RunRecord:
        started = await self.start(document, input, **kwargs)
        return await self.wait(started.run_id)

    async def nodes(self, run_id: str) -> dict[str, NodeRecord]:
        return {n.node_id: n for n in await self.store.list_nodes(run_id)}

    async def events(self, run_id: str) -> list[Event]:
        return await self.store.list_events(run_id)

    async def until(
        self, run_id: str, check: Callable[[dict[str, NodeRecord]], bool], timeout: float = 10
    ) -> None:
        """Until `check` holds for the run's nodes (re-checked after every store write)."""

        async def holds() -> bool:
            return check(await self.nodes(run_id))

        await self._eventually(holds, timeout)

    async def until_run(
        self, run_id: str, check: Callable[[RunRecord], bool], timeout: float = 10
    ) -> None:
        """Until `check` holds for the run record (re-checked after every store write)."""

        async def holds() -> bool:
            run = await self.store.get_run(run_id)
            return run is not None and check(run)

        await self._eventually(holds, timeout)

    async def eventually(self, holds: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
        """Until `holds()` is true (re-checked after every store write)."""
        await self._eventually(holds, timeout)

    async def _eventually(self, holds: Callable[[], Awaitable[bool]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()  # before reading: a write after the read wakes us
            if await holds():
                return
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"condition not reached within {timeout} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def release(self, key: str) -> None:
        """Let every `hold` tool call with this key return."""
        self.gates[key].set()

    async def crash(self) -> None:
        """Everything in flight dies at once, the way a process or function dies."""
        assert self._crash is not None
        await self._crash()

    async def recover(self, run_id: str) -> None:
        """Fresh workers pick the run up (local: `resume`; cloud: the sweeper)."""
        assert self._recover is not None
        await self._recover(run_id)

    async def restart(self) -> None:
        """Fresh workers come up after a crash, and nothing else: no resume, no sweep,
        no time skipped. Only what the backend redelivers by itself reaches them."""
        assert self._restart is not None
        await self._restart()


def scripted_tools(calls: Counter[str], gates: defaultdict[str, asyncio.Event]) -> Registry:
    """Tools whose behaviour the tests choose through their args; every call is counted.
    `hold` returns only once the test releases its key (`Harness.release`)."""
    tools = default_registry.child()

    @tools.tool
    def const(value: Any = None, key: str = "const") -> Any:
        calls[key] += 1
        return value

    @tools.tool
    def flaky(key: str, failures: int, value: Any = "ok") -> Any:
        calls[key] += 1
        if calls[key] <= failures:
            raise RetryableToolError(f"{key}: transient failure {calls[key]} of {failures}")
        return value

    @tools.tool
    def boom(key: str = "boom", message: str = "it broke") -> Any:
        calls[key] += 1
        raise ValueError(message)

    @tools.tool
    async def sleep(seconds: float, key: str = "sleep", value: Any = None) -> Any:
        calls[key] += 1
        await asyncio.sleep(seconds)  # the sleep is the behaviour: a tool that takes a while
        return value

    @tools.tool
    async def hold(key: str, value: Any = None) -> Any:
        calls[key] += 1
        await gates[key].wait()
        return value

    @tools.tool
    def blob(size: int) -> str:
        return "x" * size

    return tools


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "local":
        async for h in _local(tmp_path):
            yield h
    elif request.param == "firestore":
        request.getfixturevalue("emulator_stack")
        async for h in _firestore(request.getfixturevalue("unique_name")("contract")):
            yield h
    elif request.param == "gcp":
        stack = request.getfixturevalue("emulator_stack")
        unique_name = request.getfixturevalue("unique_name")
        async for h in _gcp(stack, unique_name("contract"), unique_name("retries")):
            yield h
    else:  # pragma: no cover - other backends register themselves here
        pytest.fail(f"unknown backend {request.param}")


async def _in_process(name: str, make_store: Callable[[], Store]) -> AsyncIterator[Harness]:
    """A store with LocalRuntime's in-process delivery. A crash closes the runtime with
    everything in flight; recovery is a new runtime (and store) resuming the run."""
    calls: Counter[str] = Counter()
    gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
    changed = asyncio.Event()
    tools = scripted_tools(calls, gates)
    runtimes: list[LocalRuntime] = []

    async def open_runtime() -> None:
        runtime = LocalRuntime(
            watched(make_store(), changed),
            default_router(),
            tools,
            workers=8,
            partial_interval_s=0.0,
        )
        await runtime.__aenter__()
        runtimes.append(runtime)
        h.engine, h.store = runtime.engine, runtime.store

    async def wait(run_id: str, timeout: float) -> RunRecord:
        return await runtimes[-1].wait(run_id, timeout=timeout)

    async def crash() -> None:
        await runtimes[-1].close()

    async def recover(run_id: str) -> None:
        await open_runtime()
        await runtimes[-1].resume(run_id)

    h = Harness(name, None, None, tools, calls, gates, changed, wait, crash, recover, open_runtime)  # type: ignore[arg-type]
    await open_runtime()
    yield h
    await runtimes[-1].close()


async def _local(tmp_path: Path) -> AsyncIterator[Harness]:
    stores: list[SqliteStore] = []

    def make_store() -> SqliteStore:
        stores.append(SqliteStore(tmp_path / "runs.db"))
        return stores[-1]

    async for h in _in_process("local", make_store):
        yield h
    for store in stores:
        store.close()


async def _firestore(project: str) -> AsyncIterator[Harness]:
    from google.cloud import firestore
    from test_utils.system import EmulatorCreds

    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    client = firestore.AsyncClient(project=project, credentials=EmulatorCreds())
    async for h in _in_process("firestore", lambda: FirestoreStore(client)):
        yield h
    await client._firestore_api.transport.close()


async def _gcp(stack: EmulatorStack, project: str, queue: str) -> AsyncIterator[Harness]:
    """The engine as `open_engine()` builds it, on a project of its own on the emulators.

    wait: until the run has ended and no delivery of it is being handled.
    crash: every function instance dies mid-line (tests/contract/gcp_delivery.py).
    recover: what production does, with the waiting cut short: time passes until the dead
    executors' leases have expired (and the sweeper's grace), fresh instances come up and
    receive the redeliveries, and the sweeper re-dispatches what is stale.
    """
    from google.cloud import firestore
    from test_utils.system import EmulatorCreds

    from agentgraph.backends.gcp import handlers
    from agentgraph.backends.gcp.cloud_tasks_retries import CloudTasksRetries
    from agentgraph.backends.gcp.firestore_store import FirestoreStore
    from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher

    from .gcp_delivery import Clock, Delivery, WallClockRetries

    calls: Counter[str] = Counter()
    gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
    tools = scripted_tools(calls, gates)
    h = Harness("gcp", None, None, tools, calls, gates)  # type: ignore[arg-type]
    delivery = Delivery(
        project,
        pubsub_host=stack.pubsub.host,
        tasks_host=stack.tasks.host,
        location=stack.location,
        queue=queue,
        # Looked up per delivery: after `recover` the fresh instance's engine handles it.
        execute=lambda message: handlers.execute(h.engine, message),
        complete=lambda message: handlers.complete(h.engine, message),
        retry=lambda body: handlers.retry(h.engine, body),
    )
    client = firestore.AsyncClient(project=project, credentials=EmulatorCreds())
    dispatcher = PubSubDispatcher(project)  # its publisher honours PUBSUB_EMULATOR_HOST
    retries = CloudTasksRetries(
        project, stack.location, delivery.endpoint.url, queue=queue, emulator_host=stack.tasks.host
    )
    clock = Clock()

    def new_engine() -> Engine:
        """A fresh function instance: a new store and engine (no cached leases or graphs)
        on the process's clients."""
        engine = Engine(
            watched(FirestoreStore(client), h.changed),
            dispatcher,
            WallClockRetries(retries, clock),
            default_router(),
            tools,
            clock=clock.now,
            partial_interval_s=0.0,
            sweep_grace_s=SWEEP_GRACE_S,
            fanin_inline=True,  # as deployed (agentgraph.backends.gcp)
        )
        h.engine, h.store = engine, engine.store
        return engine

    async def wait(run_id: str, timeout: float) -> RunRecord:
        deadline = time.monotonic() + timeout
        while True:
            run = await h.store.get_run(run_id)
            assert run is not None, f"run {run_id} does not exist"
            if run.status.terminal and not delivery.in_flight.busy_with(run_id):
                return run
            if time.monotonic() > deadline:
                statuses = {n: r.status.value for n, r in (await h.nodes(run_id)).items()}
                raise TimeoutError(
                    f"run {run_id} did not end within {timeout} s: {run.status.value}, "
                    f"nodes {statuses}"
                )
            await delivery.in_flight.wait_change(0.05)

    async def recover(run_id: str) -> None:
        leases = [
            n.lease_until
            for n in await h.store.list_nodes(run_id)
            if n.status == NodeStatus.RUNNING and n.lease_until is not None
        ]
        clock.advance(max([*leases, clock.now()]) - clock.now() + SWEEP_GRACE_S + 0.01)
        engine = new_engine()
        delivery.start()
        await engine.sweep()

    def close_publisher() -> None:
        publisher = dispatcher.publisher
        dispatcher.close()  # sends what is batched, stops the batch thread
        publisher.transport.close()

    async def restart() -> None:
        new_engine()
        delivery.start()

    h._wait, h._crash, h._recover, h._restart = wait, delivery.crash, recover, restart
    try:
        await delivery.open()
        new_engine()
        yield h
    finally:
        await delivery.close()
        await asyncio.to_thread(close_publisher)
        if retries._client is not None:
            await retries._client.transport.close()
        await client._firestore_api.transport.close()
