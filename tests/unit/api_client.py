"""The api over the local SQLite store, called through Starlette's TestClient as a chosen
caller: no server, no cloud. Shared by test_api.py and test_openapi.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from starlette.testclient import TestClient

from agentgraph.api import Api, Caller
from agentgraph.backends.local import SqliteStore
from agentgraph.backends.local.sqlite_owner_activity import SqliteOwnerActivity
from agentgraph.core.errors import AuthError
from agentgraph.core.limits import OwnerLimits
from agentgraph.core.ports import StoredGraph
from agentgraph.core.status import NodeStatus
from agentgraph.engine import Engine
from agentgraph.llm import default_router
from agentgraph.tools import default_registry

ALICE = Caller("alice")
BOB = Caller("bob")
ADMIN = Caller("root", is_admin=True)
# Small, so a test reaches each one with a few requests.
LIMITS = OwnerLimits(runs_per_minute=5, running_runs=50, daily_usd=1.0, daily_tokens=10_000)

GRAPH = {
    "name": "pair",
    "defaults": {"model": "echo"},
    "input": {"type": "object", "required": ["topic"]},
    "nodes": [
        {"id": "a", "prompt": "about {{ input.topic }}"},
        {"id": "b", "after": ["a"], "prompt": "more: {{ nodes.a.output }}"},
    ],
}


# One node, a pure approval gate; carol may decide besides the run's owner.
GATED = {
    "name": "gated",
    "nodes": [
        {"id": "gate", "approval": {"message": "go?", "approvers": ["carol@example.com"]}},
    ],
}


class Transient(Exception):
    """Stands in for a backend failure a retry can fix (the api is told its type)."""


class Dispatched:
    """The engine's Dispatcher and RetryScheduler ports, recording what was sent."""

    def __init__(self) -> None:
        self.ready: list[tuple[str, str, int]] = []
        self.finished: list[tuple[str, str, str]] = []
        self.scheduled: list[tuple[str, str, int, float]] = []

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self.ready.append((run_id, node_id, attempt))

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        self.finished.append((run_id, node_id, str(status)))

    async def schedule(self, run_id: str, node_id: str, attempt: int, at: float) -> None:
        """Only executing a node schedules (a retry, an approval's timeout); the api never
        does, but a test executes a node through the engine to make it wait for approval."""
        self.scheduled.append((run_id, node_id, attempt, at))


class MemoryGraphs:
    """The GraphStore port in a dict, with the same rules as FirestoreGraphs."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], list[StoredGraph]] = {}

    async def save(
        self, owner: str, graph_id: str, definition: dict[str, Any], digest: str
    ) -> tuple[StoredGraph, bool]:
        versions = self.versions.setdefault((owner, graph_id), [])
        if versions and versions[-1].hash == digest:
            return versions[-1], False
        stored = StoredGraph(
            graph_id, len(versions) + 1, definition, digest, owner, 1.0, len(versions) + 1
        )
        versions.append(stored)
        return stored, True

    async def get(
        self, owner: str, graph_id: str, version: int | None = None
    ) -> StoredGraph | None:
        versions = self.versions.get((owner, graph_id)) or []
        if not versions or (version or len(versions)) > len(versions):
            return None
        found = versions[(version or len(versions)) - 1]
        return StoredGraph(
            found.id,
            found.version,
            found.definition,
            found.hash,
            found.owner,
            found.created_at,
            len(versions),
        )


class Failing:
    """Wraps a store so that every call raises `error` (contention, an outage)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


class Client:
    """Calls the api like an HTTP client would, as a chosen caller (`caller`; None means
    no valid token)."""

    def __init__(self, api: Api, http: TestClient, dispatched: Dispatched) -> None:
        self.api = api
        self.http = http
        self.dispatched = dispatched
        self.caller: Caller | None = ALICE

    def authenticate(self, request: Any) -> Caller:
        if self.caller is None:
            raise AuthError("expected the header 'Authorization: Bearer <ID token>'")
        return self.caller

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        chunked: bool = False,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        as_caller: Caller | None = None,
    ) -> httpx.Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        content: Any = data
        if chunked:
            content = iter([data[i : i + 65536] for i in range(0, len(data), 65536)])
        previous = self.caller
        if as_caller is not None:
            self.caller = as_caller
        try:
            return self.http.request(method, path, content=content, headers=headers, params=query)
        finally:
            self.caller = previous

    def waiting_run(self) -> str:
        """A run of GATED whose gate waits for approval (executed through the engine on the
        test client's event loop, as an executor would)."""
        run_id = str(self.call("POST", "/runs", {"graph": GATED}).json()["run_id"])
        self.http.portal.call(self.api.engine.execute, run_id, "gate", 1)  # type: ignore[union-attr]
        return run_id

    def cancelled_run(self) -> str:
        run_id = str(self.call("POST", "/runs", {"graph": GATED}).json()["run_id"])
        self.call("POST", f"/runs/{run_id}/cancel")
        return run_id

    @contextmanager
    def failing(self, error: BaseException) -> Iterator[None]:
        """Every store call (runs and graphs) raises `error` inside the block."""
        store, graphs = self.api.engine.store, self.api.graphs
        self.api.engine.store = Failing(error)  # type: ignore[assignment]
        self.api.graphs = Failing(error)  # type: ignore[assignment]
        try:
            yield
        finally:
            self.api.engine.store, self.api.graphs = store, graphs


@contextmanager
def api_client(limits: OwnerLimits = LIMITS) -> Iterator[Client]:
    store = SqliteStore(":memory:")
    dispatched = Dispatched()
    engine = Engine(
        store,
        dispatched,
        dispatched,
        default_router(),
        default_registry,
        owner_activity=SqliteOwnerActivity(store),
        owner_limits=limits,
    )
    holder: list[Client] = []
    api = Api(
        engine,
        MemoryGraphs(),
        authenticate=lambda request: holder[0].authenticate(request),
        transient=(Transient,),
    )
    with TestClient(api, base_url="http://api.test") as http:
        holder.append(Client(api, http, dispatched))
        yield holder[0]
    store.close()


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])
