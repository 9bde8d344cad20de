"""The api facing callers it does not trust: per-owner limits, bombs in bodies, ids the
store reserves. Through Starlette's TestClient on the local store (tests/unit/api_client.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from functions_framework.aio import create_asgi_app
from starlette.testclient import TestClient

from agentgraph.backends.gcp import functions as glue
from agentgraph.core import names
from agentgraph.core.limits import OwnerLimits
from tests.unit.api_client import ADMIN, BOB, GRAPH, api_client, code

RUN = {"graph": GRAPH, "input": {"topic": "owls"}}
FUNCTIONS_MAIN = Path(__file__).parents[2] / "functions" / "main.py"


def test_the_61st_run_in_a_minute_gets_429_with_retry_after_naming_the_limit() -> None:
    with api_client(OwnerLimits(runs_per_minute=60, running_runs=1000)) as client:
        answers = [client.call("POST", "/runs", RUN).status_code for _ in range(60)]
        refused = client.call("POST", "/runs", RUN)
        other_owner = client.call("POST", "/runs", RUN, as_caller=BOB)
        admin = client.call("POST", "/runs", RUN, as_caller=ADMIN)

    assert answers == [201] * 60
    assert refused.status_code == 429
    assert (
        code(refused) == "limit_exceeded"
        and "runs_per_minute" in refused.json()["error"]["message"]
    )
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other_owner.status_code == 201  # limits are per owner
    assert admin.status_code == 201  # admins are not limited


def test_too_many_running_runs_get_429() -> None:
    with api_client(OwnerLimits(running_runs=2)) as client:
        first = [client.call("POST", "/runs", RUN).status_code for _ in range(2)]
        third = client.call("POST", "/runs", RUN)
    assert first == [201, 201]
    assert third.status_code == 429 and "running_runs" in third.json()["error"]["message"]


def test_a_yaml_alias_bomb_is_a_400_naming_the_body() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 9)}]\n" for c in "bcdefghi"
    )
    with api_client() as client:
        response = client.call(
            "POST", "/graphs", raw=bomb.encode(), headers={"Content-Type": "application/yaml"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["path"] == "body"
    assert "aliases" in response.json()["error"]["details"][0]["message"]


def test_json_nested_100000_deep_is_a_400_not_a_500() -> None:
    with api_client() as client:
        response = client.call("POST", "/runs", raw=("[" * 100_000 + "]" * 100_000).encode())
    assert response.status_code == 400
    assert "nested deeper" in response.json()["error"]["details"][0]["message"]


def test_a_10000_node_graph_is_refused_by_its_size_alone() -> None:
    nodes = [{"id": f"n{i}", "tool": "noop"} for i in range(10_000)]
    with api_client() as client:
        response = client.call("POST", "/runs", {"graph": {"name": "big", "nodes": nodes}})
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [d["path"] for d in details] == ["graph.nodes"]


def test_a_template_the_sandbox_would_refuse_is_refused_before_the_run() -> None:
    graph = {
        "name": "sneaky",
        "defaults": {"model": "echo"},
        "nodes": [{"id": "a", "prompt": "{{ ''.__class__.__mro__ }}"}],
    }
    with api_client() as client:
        response = client.call("POST", "/runs", {"graph": graph})
        runs = client.call("GET", "/runs").json()["runs"]
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["path"] == "graph.nodes[0].prompt"
    assert runs == []


def test_ids_the_store_reserves_are_404_before_any_lookup() -> None:
    with api_client() as client:
        answers = {
            path: client.call("GET", path).status_code
            for path in ("/runs/__poison__", "/runs/__x__/events", "/graphs/__x__")
        }
    assert answers == {"/runs/__poison__": 404, "/runs/__x__/events": 404, "/graphs/__x__": 404}


def test_an_unknown_tool_is_named_without_listing_the_registered_ones() -> None:
    graph = {"name": "g", "nodes": [{"id": "a", "tool": "rm_rf"}]}
    with api_client() as client:
        response = client.call("POST", "/runs", {"graph": graph})
    message = json.dumps(response.json())
    assert response.status_code == 400 and "unknown tool 'rm_rf'" in message
    assert "known tools" not in message


async def test_a_setup_failure_answers_without_the_exception_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.requests import Request

    from agentgraph.backends.gcp import functions

    def broken() -> None:
        raise RuntimeError("cannot read /secrets/gemini-key at 10.0.0.7")

    monkeypatch.setattr(functions, "open_api", broken)
    request = Request({"type": "http", "method": "GET", "path": "/runs", "headers": []})
    response = await functions.http_api(request)

    assert response.status_code == 500
    assert b"secrets" not in response.body and b"10.0.0.7" not in response.body
    assert "cannot read /secrets/gemini-key" in caplog.text  # the operator still learns it


def test_a_path_with_a_newline_gets_the_apis_json_404_through_functions_framework(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by tests/system/test_api_fuzz.py: functions-framework's own router (`.*`)
    did not match a path with an encoded newline and answered a text/plain 404, so the
    request never reached the api. Served here as deployed: functions/main.py under the
    framework's ASGI app, with the api over the local store."""
    with api_client() as client:
        monkeypatch.setattr(glue, "open_api", lambda: client.api)
        app = create_asgi_app(names.ENTRY_API, str(FUNCTIONS_MAIN))
        with TestClient(app) as http:
            response = http.get("/runs/a%0Ab")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert code(response) == "not_found"
