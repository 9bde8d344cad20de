"""Reads bounded by what is asked, through the api and the Python client: GET /runs/{id}
answers one page of nodes and says how to get the next; the client follows the pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentgraph.api.routes import MAX_NODES_PAGE, NODES_PAGE
from agentgraph.client import Client as ApiClient
from tests.unit.api_client import GRAPH, Client, api_client, code

WIDE = {
    "name": "wide",
    "defaults": {"model": "echo"},
    "nodes": [{"id": f"n{i}", "prompt": "hi"} for i in range(5)],
}


@pytest.fixture
def client() -> Iterator[Client]:
    with api_client() as made:
        yield made


def test_get_run_answers_a_page_of_nodes_and_names_the_next_page(client: Client) -> None:
    run_id = client.call("POST", "/runs", {"graph": WIDE}).json()["run_id"]

    pages = [client.call("GET", f"/runs/{run_id}?nodes_limit=2").json()]
    while pages[-1]["next_nodes_after"] is not None:
        after = pages[-1]["next_nodes_after"]
        pages.append(client.call("GET", f"/runs/{run_id}?nodes_limit=2&nodes_after={after}").json())

    assert [[n["id"] for n in p["nodes"]] for p in pages] == [["n0", "n1"], ["n2", "n3"], ["n4"]]
    assert all(p["status"] == "running" and p["counts"] == {"ready": 5} for p in pages)


def test_without_paging_parameters_a_small_run_comes_whole_with_no_next_page(
    client: Client,
) -> None:
    run_id = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}).json()[
        "run_id"
    ]
    body = client.call("GET", f"/runs/{run_id}").json()
    assert [n["id"] for n in body["nodes"]] == ["a", "b"] and body["next_nodes_after"] is None
    assert NODES_PAGE == 100


@pytest.mark.parametrize(
    "query",
    ["nodes_limit=0", f"nodes_limit={MAX_NODES_PAGE + 1}", "nodes_after=-1", "nodes_after=x"],
)
def test_a_page_size_or_cursor_out_of_range_is_a_400_naming_the_parameter(
    client: Client, query: str
) -> None:
    run_id = client.call("POST", "/runs", {"graph": WIDE}).json()["run_id"]
    response = client.call("GET", f"/runs/{run_id}?{query}")
    assert response.status_code == 400 and code(response) == "invalid_request"
    assert response.json()["error"]["details"][0]["path"] == f"query.{query.split('=')[0]}"


def _page(nodes: list[str], after: int | None) -> dict[str, Any]:
    usage = {"calls": 0}
    return {
        "run_id": "r1",
        "graph": "g",
        "status": "succeeded",
        "created_at": 1.0,
        "usage": usage,
        "counts": {"succeeded": 3},
        "nodes": [
            {"id": n, "status": "succeeded", "attempts": 1, "executions": 1, "usage": usage}
            for n in nodes
        ],
        "next_nodes_after": after,
    }


async def test_the_client_follows_the_node_pages_and_returns_every_node() -> None:
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        after = request.url.params.get("nodes_after")
        page = {None: _page(["a", "b"], 1), "1": _page(["c"], None)}[after]
        return httpx.Response(200, json=page)

    async def no_sleep(_: float) -> None:
        return None

    async with ApiClient(
        "http://api.test", transport=httpx.MockTransport(handler), sleep=no_sleep, listen=False
    ) as api:
        run = await api.get("r1", nodes_limit=2)
    assert [n.id for n in run.nodes] == ["a", "b", "c"] and run.next_nodes_after is None
    assert asked == [{"nodes_limit": "2"}, {"nodes_limit": "2", "nodes_after": "1"}]
