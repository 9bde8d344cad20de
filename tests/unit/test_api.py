"""The HTTP API as a pure request → response mapping: routes, status codes, error bodies,
idempotency and who may see what. Runs on the local SQLite store; no server, no cloud."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentgraph.api import (
    MAX_BODY_BYTES,
    Api,
    ApiRequest,
    ApiResponse,
    Headers,
    StoredGraph,
    canonical_hash,
)
from agentgraph.backends.gcp.auth import Caller
from agentgraph.backends.local import SqliteStore
from agentgraph.core.errors import AuthError, Forbidden
from agentgraph.core.status import NodeStatus
from agentgraph.engine import Engine
from agentgraph.llm import default_router
from agentgraph.tools import default_registry

ALICE = Caller("alice")
BOB = Caller("bob")
ADMIN = Caller("root", is_admin=True)

GRAPH = {
    "name": "pair",
    "defaults": {"model": "echo"},
    "input": {"type": "object", "required": ["topic"]},
    "nodes": [
        {"id": "a", "prompt": "about {{ input.topic }}"},
        {"id": "b", "after": ["a"], "prompt": "more: {{ nodes.a.output }}"},
    ],
}


class Dispatched:
    """The engine's Dispatcher and RetryScheduler ports, recording what was sent."""

    def __init__(self) -> None:
        self.ready: list[tuple[str, str, int]] = []
        self.finished: list[tuple[str, str, str]] = []

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self.ready.append((run_id, node_id, attempt))

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        self.finished.append((run_id, node_id, str(status)))

    async def schedule(self, run_id: str, node_id: str, attempt: int, at: float) -> None:
        raise AssertionError("the API never schedules retries")


class MemoryGraphs:
    """The GraphStore port in a dict, with the same rules as FirestoreGraphs."""

    def __init__(self) -> None:
        self.versions: dict[str, list[StoredGraph]] = {}

    async def save(
        self, graph_id: str, definition: dict[str, Any], digest: str, owner: str, admin: bool
    ) -> tuple[StoredGraph, bool]:
        versions = self.versions.setdefault(graph_id, [])
        if versions and versions[0].owner != owner and not admin:
            raise Forbidden(f"graph {graph_id!r} belongs to another user")
        if versions and versions[-1].hash == digest:
            return versions[-1], False
        stored = StoredGraph(
            graph_id,
            len(versions) + 1,
            definition,
            digest,
            versions[0].owner if versions else owner,
            1.0,
            len(versions) + 1,
        )
        versions.append(stored)
        return stored, True

    async def get(self, graph_id: str, version: int | None = None) -> StoredGraph | None:
        versions = self.versions.get(graph_id) or []
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


class Client:
    """Calls the Api like an HTTP client would, as a chosen caller."""

    def __init__(self, api: Api, dispatched: Dispatched) -> None:
        self.api = api
        self.dispatched = dispatched
        self.caller: Caller | None = ALICE

    def authenticate(self, request: ApiRequest) -> Caller:
        if self.caller is None:
            raise AuthError("expected the header 'Authorization: Bearer <ID token>'")
        return self.caller

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        content_length: int | None = None,
        as_caller: Caller | None = None,
    ) -> ApiResponse:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        previous = self.caller
        if as_caller is not None:
            self.caller = as_caller
        try:
            return await self.api.handle(
                ApiRequest(
                    method,
                    path,
                    Headers(headers or {}),
                    query or {},
                    io.BytesIO(data),
                    len(data) if content_length is None else content_length,
                )
            )
        finally:
            self.caller = previous


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    store = SqliteStore(":memory:")
    dispatched = Dispatched()
    engine = Engine(store, dispatched, dispatched, default_router(), default_registry)
    holder: list[Client] = []
    api = Api(
        engine,
        MemoryGraphs(),
        authenticate=lambda request: holder[0].authenticate(request),
        openapi={"openapi": "3.1.0"},
    )
    holder.append(Client(api, dispatched))
    yield holder[0]
    store.close()


def codes(response: ApiResponse) -> str:
    return str(response.body["error"]["code"])


# ---- POST /runs ------------------------------------------------------------------------------


async def test_post_runs_creates_the_run_and_dispatches_its_root(client: Client) -> None:
    response = await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "owls"}})

    assert response.status == 201, response.body
    run_id = response.body["run_id"]
    assert response.headers["Location"] == f"/runs/{run_id}"
    assert response.body["status"] == "running"
    assert response.body["owner"] == "alice"
    assert client.dispatched.ready == [(run_id, "a", 1)]


async def test_same_idempotency_key_and_body_give_the_same_run(client: Client) -> None:
    body = {"graph": GRAPH, "input": {"topic": "owls"}}
    key = {"Idempotency-Key": "4f1d-key"}
    first = await client.call("POST", "/runs", body, headers=key)
    # Same JSON, other key order and spacing: the canonical hash is the same.
    again = await client.call(
        "POST",
        "/runs",
        raw=json.dumps(dict(reversed(body.items())), indent=2).encode(),
        headers=key,
    )

    assert (first.status, again.status) == (201, 200)
    assert again.body["run_id"] == first.body["run_id"]
    # The root is still unclaimed (nothing executes here), so the repeat sends its node-ready
    # again, in case the first request died before sending it; executing claims it once.
    assert client.dispatched.ready == [(first.body["run_id"], "a", 1)] * 2


async def test_same_idempotency_key_with_another_body_is_a_conflict(client: Client) -> None:
    key = {"Idempotency-Key": "k-1"}
    await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "owls"}}, headers=key)
    response = await client.call(
        "POST", "/runs", {"graph": GRAPH, "input": {"topic": "cats"}}, headers=key
    )

    assert response.status == 409
    assert codes(response) == "idempotency_conflict"


async def test_idempotency_keys_are_per_caller(client: Client) -> None:
    body = {"graph": GRAPH, "input": {"topic": "owls"}}
    key = {"Idempotency-Key": "shared"}
    mine = await client.call("POST", "/runs", body, headers=key)
    theirs = await client.call("POST", "/runs", body, headers=key, as_caller=BOB)

    assert (mine.status, theirs.status) == (201, 201)
    assert mine.body["run_id"] != theirs.body["run_id"]


async def test_a_bad_idempotency_key_is_a_400(client: Client) -> None:
    response = await client.call(
        "POST",
        "/runs",
        {"graph": GRAPH, "input": {"topic": "x"}},
        headers={"Idempotency-Key": "a b"},
    )
    assert response.status == 400
    assert response.body["error"]["details"][0]["path"] == "headers.Idempotency-Key"


async def test_an_invalid_graph_lists_every_problem_with_its_path(client: Client) -> None:
    broken = {
        "name": "Bad Name",
        "nodes": [
            {"id": "a", "prompt": "x", "model": "echo", "after": ["c"]},
            {"id": "b", "tool": "no_such_tool", "after": ["zzz"]},
            {"id": "c", "prompt": "y", "model": "echo", "after": ["a"]},
            {"id": "d", "prompt": "z", "model": "echo", "temperature": 9},
        ],
    }
    response = await client.call("POST", "/runs", {"graph": broken, "input": {}})

    assert response.status == 400
    assert codes(response) == "invalid_graph"
    details = response.body["error"]["details"]
    paths = {d["path"] for d in details}
    assert "graph.name" in paths
    assert "graph.nodes[1].after" in paths  # unknown parent
    assert "graph.nodes[1].tool" in paths  # unknown tool
    assert "graph.nodes[3].temperature" in paths  # out of range
    assert any("cycle" in d["message"] for d in details)
    assert response.body["error"]["message"].startswith(f"invalid graph: {len(details)} problems")
    assert client.dispatched.ready == [], "nothing was started"


async def test_an_invalid_input_lists_every_problem(client: Client) -> None:
    graph = {**GRAPH, "input": {"type": "object", "required": ["topic", "depth"]}}
    response = await client.call("POST", "/runs", {"graph": graph, "input": {}})

    assert response.status == 400
    assert codes(response) == "invalid_input"
    messages = [d["message"] for d in response.body["error"]["details"]]
    assert any("'topic'" in m for m in messages) and any("'depth'" in m for m in messages)


async def test_a_malformed_body_is_a_400_naming_each_field(client: Client) -> None:
    not_json = await client.call("POST", "/runs", raw=b"{nope")
    both = await client.call("POST", "/runs", {"graph": GRAPH, "graph_id": "pair", "extra": 1})
    array = await client.call("POST", "/runs", [1, 2])

    assert [r.status for r in (not_json, both, array)] == [400, 400, 400]
    assert "not valid JSON" in not_json.body["error"]["details"][0]["message"]
    paths = [d["path"] for d in both.body["error"]["details"]]
    assert "extra" in paths and "body" in paths
    assert "found an array" in array.body["error"]["details"][0]["message"]


async def test_a_body_over_the_limit_is_refused_before_it_is_read(client: Client) -> None:
    declared = await client.call("POST", "/runs", raw=b"{}", content_length=MAX_BODY_BYTES + 1)
    chunked = await client.call("POST", "/runs", raw=b" " * (MAX_BODY_BYTES + 1))

    assert (declared.status, chunked.status) == (413, 413)
    assert codes(declared) == "payload_too_large"


async def test_runs_from_a_stored_graph_use_the_latest_or_the_asked_version(
    client: Client,
) -> None:
    v1 = await client.call("POST", "/graphs", GRAPH)
    v2 = await client.call(
        "POST", "/graphs", {**GRAPH, "description": "second"}, headers={"Idempotency-Key": "x"}
    )
    assert (v1.status, v1.body["version"], v2.body["version"]) == (201, 1, 2)

    latest = await client.call("POST", "/runs", {"graph_id": "pair", "input": {"topic": "a"}})
    pinned = await client.call(
        "POST", "/runs", {"graph_id": "pair", "version": 1, "input": {"topic": "a"}}
    )
    missing = await client.call(
        "POST", "/runs", {"graph_id": "pair", "version": 9, "input": {"topic": "a"}}
    )

    assert (latest.status, pinned.status, missing.status) == (201, 201, 404)


# ---- GET /runs/{id}, cancel, events, list ------------------------------------------------------


async def test_get_run_returns_the_run_and_its_nodes(client: Client) -> None:
    created = await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    response = await client.call("GET", f"/runs/{created.body['run_id']}")

    assert response.status == 200
    assert [(n["id"], n["status"]) for n in response.body["nodes"]] == [
        ("a", "ready"),
        ("b", "waiting"),
    ]


async def test_another_callers_run_is_not_found_and_cannot_be_cancelled(client: Client) -> None:
    created = await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    run_id = created.body["run_id"]

    peek = await client.call("GET", f"/runs/{run_id}", as_caller=BOB)
    cancel = await client.call("POST", f"/runs/{run_id}/cancel", as_caller=BOB)
    events = await client.call("GET", f"/runs/{run_id}/events", as_caller=BOB)
    unknown = await client.call("GET", "/runs/no-such-run", as_caller=BOB)
    admin = await client.call("GET", f"/runs/{run_id}", as_caller=ADMIN)

    assert [r.status for r in (peek, cancel, events)] == [404, 404, 404]
    assert peek.body == {
        **unknown.body,
        "error": {**unknown.body["error"], "message": f"no run with id {run_id!r}"},
    }, "the same answer as for a run that does not exist"
    assert admin.status == 200
    owned = await client.call("GET", f"/runs/{run_id}")
    assert owned.body["status"] == "running", "bob's cancel changed nothing"


async def test_cancel_ends_the_run_and_is_idempotent(client: Client) -> None:
    created = await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    run_id = created.body["run_id"]

    first = await client.call("POST", f"/runs/{run_id}/cancel")
    second = await client.call("POST", f"/runs/{run_id}/cancel")
    run = await client.call("GET", f"/runs/{run_id}")

    assert (first.status, first.body["cancelled"]) == (200, True)
    assert (second.status, second.body["cancelled"]) == (200, False)
    assert run.body["status"] == "cancelled"
    assert {n["status"] for n in run.body["nodes"]} == {"cancelled"}


async def test_events_follow_a_run(client: Client) -> None:
    created = await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    run_id = created.body["run_id"]
    await client.call("POST", f"/runs/{run_id}/cancel")

    events = (await client.call("GET", f"/runs/{run_id}/events")).body["events"]
    later = await client.call(
        "GET", f"/runs/{run_id}/events", query={"after": str(events[0]["seq"])}
    )

    assert events[0]["kind"] == "run_status"
    assert later.body["events"] == events[1:]


async def test_list_runs_shows_only_the_callers_runs(client: Client) -> None:
    await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    await client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}, as_caller=BOB)

    mine = await client.call("GET", "/runs")
    everyone = await client.call("GET", "/runs", as_caller=ADMIN)
    bad = await client.call("GET", "/runs", query={"limit": "0"})

    assert [r["owner"] for r in mine.body["runs"]] == ["alice"]
    assert len(everyone.body["runs"]) == 2
    assert bad.status == 400


# ---- graphs ------------------------------------------------------------------------------------


async def test_post_graphs_validates_versions_and_dedupes(client: Client) -> None:
    first = await client.call("POST", "/graphs", GRAPH)
    same = await client.call("POST", "/graphs", GRAPH)
    invalid = await client.call("POST", "/graphs", {"name": "pair", "nodes": [{"id": "a"}]})
    taken = await client.call("POST", "/graphs", {**GRAPH, "description": "mine"}, as_caller=BOB)

    assert (first.status, first.body["id"], first.body["version"]) == (201, "pair", 1)
    assert first.body["hash"] == canonical_hash(GRAPH)
    assert (same.status, same.body["version"]) == (200, 1)
    assert invalid.status == 400 and codes(invalid) == "invalid_graph"
    assert taken.status == 403


async def test_post_graphs_accepts_yaml(client: Client) -> None:
    text = b"name: tiny\nnodes:\n  - id: a\n    model: echo\n    prompt: hi\n"
    response = await client.call(
        "POST", "/graphs", raw=text, headers={"Content-Type": "application/yaml"}
    )
    fetched = await client.call("GET", "/graphs/tiny")

    assert response.status == 201
    assert fetched.body["definition"]["nodes"][0]["prompt"] == "hi"


async def test_get_graph_by_version_and_visibility(client: Client) -> None:
    await client.call("POST", "/graphs", GRAPH)
    await client.call("POST", "/graphs", {**GRAPH, "description": "v2"})

    latest = await client.call("GET", "/graphs/pair")
    first = await client.call("GET", "/graphs/pair", query={"version": "1"})
    hidden = await client.call("GET", "/graphs/pair", as_caller=BOB)
    bad = await client.call("GET", "/graphs/pair", query={"version": "x"})

    assert (latest.body["version"], latest.body["latest_version"]) == (2, 2)
    assert latest.body["definition"]["description"] == "v2"
    assert "description" not in first.body["definition"]
    assert hidden.status == 404
    assert bad.status == 400


# ---- routing and auth -----------------------------------------------------------------------


async def test_unknown_routes_are_404_and_wrong_methods_405(client: Client) -> None:
    nowhere = await client.call("GET", "/nowhere")
    delete = await client.call("DELETE", "/runs")
    put = await client.call("PUT", "/runs/abc/cancel")

    assert nowhere.status == 404 and codes(nowhere) == "not_found"
    assert delete.status == 405 and delete.headers["Allow"] == "GET, POST"
    assert put.status == 405 and put.headers["Allow"] == "POST"


async def test_health_and_openapi_need_no_token_but_runs_do(client: Client) -> None:
    client.caller = None

    health = await client.call("GET", "/healthz")
    spec = await client.call("GET", "/openapi.json")
    runs = await client.call("GET", "/runs")

    assert (health.status, health.body) == (200, {"status": "ok"})
    assert spec.body == {"openapi": "3.1.0"}
    assert runs.status == 401
    assert runs.headers["WWW-Authenticate"] == "Bearer"


async def test_errors_are_json_with_code_message_and_details(client: Client) -> None:
    response = await client.call("GET", "/runs/nope")

    assert set(response.body) == {"error"}
    assert set(response.body["error"]) == {"code", "message", "details"}
    assert json.loads(response.json_bytes()) == response.body


def test_the_openapi_document_describes_exactly_the_routes_served() -> None:
    import re
    from pathlib import Path

    import yaml

    from agentgraph import api as api_module

    spec = yaml.safe_load((Path(__file__).parents[2] / "functions" / "openapi.yaml").read_text())
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = {
        (route.method, re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.pattern.pattern[1:-1]))
        for route in api_module._ROUTES
    }

    assert spec["openapi"] == "3.1.0"
    assert documented == served
