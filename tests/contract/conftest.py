"""The backend-neutral harness the contract tests drive.

Each backend fixture yields a `Harness`: start/wait/cancel runs, inspect records, and
simulate a crash of everything in flight followed by recovery. A new backend is done
when `tests/contract/` passes on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.engine import Engine
from agentgraph.errors import RetryableToolError
from agentgraph.llm import default_router
from agentgraph.ports import Event, NodeRecord, RunRecord, Store
from agentgraph.tools import Registry, default_registry

# "firestore": the same LocalRuntime (in-process delivery) on FirestoreStore, against the
# Firestore emulator; each test gets its own emulator project, so a clean database.
BACKENDS = ["local", pytest.param("firestore", marks=pytest.mark.emulator)]


@dataclass
class Harness:
    """What a contract test needs from a backend."""

    name: str
    engine: Engine
    store: Store
    tools: Registry
    calls: Counter[str] = field(default_factory=Counter)
    _wait: Callable[[str, float], Awaitable[RunRecord]] | None = None
    _crash: Callable[[], Awaitable[None]] | None = None
    _recover: Callable[[str], Awaitable[None]] | None = None

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
        deadline = time.monotonic() + timeout
        while not check(await self.nodes(run_id)):
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.01)

    async def crash(self) -> None:
        """Everything in flight dies at once, the way a process or function dies."""
        assert self._crash is not None
        await self._crash()

    async def recover(self, run_id: str) -> None:
        """Fresh workers pick the run up (local: `resume`; cloud: the sweeper)."""
        assert self._recover is not None
        await self._recover(run_id)


def scripted_tools(calls: Counter[str]) -> Registry:
    """Tools whose behaviour the tests choose through their args; every call is counted."""
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
        await asyncio.sleep(seconds)
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
    else:  # pragma: no cover - other backends register themselves here
        pytest.fail(f"unknown backend {request.param}")


async def _local(tmp_path: Path) -> AsyncIterator[Harness]:
    calls: Counter[str] = Counter()
    tools = scripted_tools(calls)
    db = tmp_path / "runs.db"
    holder: dict[str, LocalRuntime] = {}
    stores: list[SqliteStore] = []

    async def open_runtime() -> LocalRuntime:
        stores.append(SqliteStore(db))
        runtime = LocalRuntime(
            stores[-1], default_router(), tools, workers=8, partial_interval_s=0.0
        )
        await runtime.__aenter__()
        holder["rt"] = runtime
        h.engine, h.store = runtime.engine, runtime.store
        return runtime

    async def wait(run_id: str, timeout: float) -> RunRecord:
        return await holder["rt"].wait(run_id, timeout=timeout)

    async def crash() -> None:
        await holder["rt"].close()

    async def recover(run_id: str) -> None:
        await open_runtime()
        await holder["rt"].resume(run_id)

    h = Harness("local", None, None, tools, calls, wait, crash, recover)  # type: ignore[arg-type]
    await open_runtime()
    yield h
    await holder["rt"].close()
    for store in stores:
        store.close()


async def _firestore(project: str) -> AsyncIterator[Harness]:
    from google.cloud import firestore
    from test_utils.system import EmulatorCreds

    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    calls: Counter[str] = Counter()
    tools = scripted_tools(calls)
    client = firestore.AsyncClient(project=project, credentials=EmulatorCreds())
    holder: dict[str, LocalRuntime] = {}

    async def open_runtime() -> LocalRuntime:
        runtime = LocalRuntime(
            FirestoreStore(client), default_router(), tools, workers=8, partial_interval_s=0.0
        )
        await runtime.__aenter__()
        holder["rt"] = runtime
        h.engine, h.store = runtime.engine, runtime.store
        return runtime

    async def wait(run_id: str, timeout: float) -> RunRecord:
        return await holder["rt"].wait(run_id, timeout=timeout)

    async def crash() -> None:
        await holder["rt"].close()

    async def recover(run_id: str) -> None:
        await open_runtime()
        await holder["rt"].resume(run_id)

    h = Harness("firestore", None, None, tools, calls, wait, crash, recover)  # type: ignore[arg-type]
    await open_runtime()
    yield h
    await holder["rt"].close()
    await client._firestore_api.transport.close()
