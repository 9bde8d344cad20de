"""The OpenAPI document is generated from the route table and the body models: the file in
functions/ is exactly what the generator makes, it lists every route served, and every
answer it documents is one the api really gives."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from agentgraph.api import ENDPOINTS, MAX_BODY_BYTES
from agentgraph.api.openapi import document, openapi_path, to_yaml
from agentgraph.core.errors import Contention
from tests.unit.api_client import GRAPH, LIMITS, Client, api_client

OPENAPI_YAML = Path(__file__).parents[2] / "functions" / "openapi.yaml"
DOCUMENT = document(ENDPOINTS)


@pytest.fixture
def client() -> Iterator[Client]:
    with api_client() as made:
        yield made


def test_functions_openapi_yaml_is_the_generated_document() -> None:
    assert OPENAPI_YAML.read_text() == to_yaml(DOCUMENT), (
        "functions/openapi.yaml is out of date: run `make openapi`"
    )


def test_the_document_lists_exactly_the_routes_served(client: Client) -> None:
    documented = {
        (method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item
    }
    served = {
        (method, openapi_path(route.path))
        for route in client.api.app.routes  # type: ignore[attr-defined]
        for method in route.methods - {"HEAD"}
    }

    assert documented == served
    assert DOCUMENT["openapi"] == "3.1.0"
    assert client.call("GET", "/openapi.json").json() == DOCUMENT


def test_every_schema_is_valid_json_schema_and_every_ref_resolves() -> None:
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises SchemaError naming the fault

    refs = set(re.findall(r"'\$ref': '#/components/(\w+)/(\w+)'", repr(DOCUMENT)))
    assert refs, "the document refers to its components"
    missing = {(kind, name) for kind, name in refs if name not in DOCUMENT["components"][kind]}
    assert not missing


# ---- every documented answer, produced --------------------------------------------------------

Request = tuple[str, str, Any]  # method, path, JSON body


def _run_id(c: Client) -> str:
    return str(c.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}).json()["run_id"])


def _stored_graph(c: Client) -> str:
    c.call("POST", "/graphs", GRAPH)
    return str(GRAPH["name"])


# The request that succeeds, after whatever it needs exists.
HAPPY: dict[str, Callable[[Client], Request]] = {
    "createRun": lambda c: ("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}),
    "listRuns": lambda c: ("GET", "/runs", None),
    "getRun": lambda c: ("GET", f"/runs/{_run_id(c)}", None),
    "getRunEvents": lambda c: ("GET", f"/runs/{_run_id(c)}/events", None),
    "getNodeSteps": lambda c: ("GET", f"/runs/{_run_id(c)}/nodes/a/steps", None),
    "cancelRun": lambda c: ("POST", f"/runs/{_run_id(c)}/cancel", None),
    "createGraph": lambda c: ("POST", "/graphs", GRAPH),
    "getGraph": lambda c: ("GET", f"/graphs/{_stored_graph(c)}", None),
    "approveNode": lambda c: ("POST", f"/runs/{c.waiting_run()}/nodes/gate/approve", {}),
    "rejectNode": lambda c: ("POST", f"/runs/{c.waiting_run()}/nodes/gate/reject", {}),
    "redriveRun": lambda c: ("POST", f"/runs/{c.cancelled_run()}/redrive", None),
    "health": lambda c: ("GET", "/healthz", None),
    "openapi": lambda c: ("GET", "/openapi.json", None),
}


def _twice(method: str, path: str, body: Any, **headers: str) -> Callable[[Client], httpx.Response]:
    def call(c: Client) -> httpx.Response:
        c.call(method, path, body, headers=headers)
        return c.call(method, path, body, headers=headers)

    return call


RUN = {"graph": GRAPH, "input": {"topic": "t"}}
NO_TOPIC = {"graph": GRAPH, "input": {}}

# Answers that need a request of their own (the others: see `produce`).
SPECIFIC: dict[tuple[str, int], Callable[[Client], httpx.Response]] = {
    ("createRun", 200): _twice("POST", "/runs", RUN, **{"Idempotency-Key": "k"}),
    ("createRun", 400): lambda c: c.call("POST", "/runs", NO_TOPIC),
    ("createRun", 404): lambda c: c.call("POST", "/runs", {"graph_id": "nope", "input": {}}),
    ("createRun", 429): lambda c: [
        c.call("POST", "/runs", RUN) for _ in range(LIMITS.runs_per_minute + 1)
    ][-1],
    ("createRun", 409): lambda c: (
        c.call("POST", "/runs", RUN, headers={"Idempotency-Key": "k"}),
        c.call("POST", "/runs", {**RUN, "input": {"topic": "u"}}, headers={"Idempotency-Key": "k"}),
    )[1],
    ("listRuns", 400): lambda c: c.call("GET", "/runs", query={"limit": "0"}),
    ("getRun", 400): lambda c: c.call("GET", f"/runs/{_run_id(c)}", query={"nodes_limit": "0"}),
    ("getRun", 404): lambda c: c.call("GET", "/runs/nope"),
    ("getRunEvents", 400): lambda c: c.call(
        "GET", f"/runs/{_run_id(c)}/events", query={"after": "-1"}
    ),
    ("getRunEvents", 404): lambda c: c.call("GET", "/runs/nope/events"),
    ("getNodeSteps", 404): lambda c: c.call("GET", f"/runs/{_run_id(c)}/nodes/nope/steps"),
    ("cancelRun", 404): lambda c: c.call("POST", "/runs/nope/cancel"),
    ("createGraph", 200): _twice("POST", "/graphs", GRAPH),
    ("createGraph", 400): lambda c: c.call("POST", "/graphs", {"name": "x", "nodes": []}),
    ("getGraph", 400): lambda c: c.call("GET", "/graphs/pair", query={"version": "x"}),
    ("getGraph", 404): lambda c: c.call("GET", "/graphs/nope"),
    ("approveNode", 400): lambda c: c.call(
        "POST", f"/runs/{c.waiting_run()}/nodes/gate/approve", {"comment": 5}
    ),
    ("approveNode", 404): lambda c: c.call("POST", "/runs/nope/nodes/gate/approve"),
    ("approveNode", 409): lambda c: _decided_twice(c, "reject", "approve"),
    ("rejectNode", 400): lambda c: c.call(
        "POST", f"/runs/{c.waiting_run()}/nodes/gate/reject", {"payload": 1}
    ),
    ("rejectNode", 404): lambda c: c.call("POST", "/runs/nope/nodes/gate/reject"),
    ("rejectNode", 409): lambda c: _decided_twice(c, "approve", "reject"),
    ("redriveRun", 404): lambda c: c.call("POST", "/runs/nope/redrive"),
    ("redriveRun", 409): lambda c: c.call("POST", f"/runs/{_run_id(c)}/redrive"),
}


def _decided_twice(c: Client, first: str, then: str) -> httpx.Response:
    run_id = c.waiting_run()
    c.call("POST", f"/runs/{run_id}/nodes/gate/{first}")
    return c.call("POST", f"/runs/{run_id}/nodes/gate/{then}")


def produce(c: Client, operation: str, status: int) -> httpx.Response:
    """A response of `operation` with `status`, from the request that should give it."""
    if (operation, status) in SPECIFIC:
        return SPECIFIC[operation, status](c)
    method, path, body = HAPPY[operation](c)
    if status == 401:
        c.caller = None
    if status == 413:
        too_big = {"Content-Length": str(MAX_BODY_BYTES + 1)}
        return c.call(method, path, raw=b"{}", headers=too_big)
    if status == 503:
        with c.failing(Contention("the document kept changing")):
            return c.call(method, path, body)
    return c.call(method, path, body)


DOCUMENTED = [
    (operation["operationId"], int(status))
    for item in DOCUMENT["paths"].values()
    for operation in item.values()
    for status in operation["responses"]
]


@pytest.mark.parametrize(("operation", "status"), DOCUMENTED)
def test_every_documented_answer_is_one_the_api_gives(
    client: Client, operation: str, status: int
) -> None:
    response = produce(client, operation, status)

    assert response.status_code == status, response.text
    if status >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}
