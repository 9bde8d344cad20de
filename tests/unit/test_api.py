"""The HTTP api, called through Starlette's TestClient: routes, status codes, error bodies,
idempotency and who may see what. Runs on the local SQLite store; no server, no cloud."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agentgraph.api import ENDPOINTS, MAX_BODY_BYTES, Caller, canonical_hash
from agentgraph.api.openapi import document
from agentgraph.core.errors import Contention
from tests.unit.api_client import ADMIN, BOB, GRAPH, Client, Transient, api_client, code


@pytest.fixture
def client() -> Iterator[Client]:
    with api_client() as made:
        yield made


# ---- POST /runs ------------------------------------------------------------------------------


def test_post_runs_creates_the_run_and_dispatches_its_root(client: Client) -> None:
    response = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "owls"}})

    assert response.status_code == 201, response.json()
    run_id = response.json()["run_id"]
    assert response.headers["Location"] == f"/runs/{run_id}"
    assert response.json()["status"] == "running"
    assert response.json()["owner"] == "alice"
    assert client.dispatched.ready == [(run_id, "a", 1)]


def test_same_idempotency_key_and_body_give_the_same_run(client: Client) -> None:
    body = {"graph": GRAPH, "input": {"topic": "owls"}}
    key = {"Idempotency-Key": "4f1d-key"}
    first = client.call("POST", "/runs", body, headers=key)
    # Same JSON, other key order and spacing: the canonical hash is the same.
    again = client.call(
        "POST",
        "/runs",
        raw=json.dumps(dict(reversed(body.items())), indent=2).encode(),
        headers=key,
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["run_id"] == first.json()["run_id"]
    # The root is still unclaimed (nothing executes here), so the repeat sends its node-ready
    # again, in case the first request died before sending it; executing claims it once.
    assert client.dispatched.ready == [(first.json()["run_id"], "a", 1)] * 2


def test_same_idempotency_key_with_another_body_is_a_conflict(client: Client) -> None:
    key = {"Idempotency-Key": "k-1"}
    client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "owls"}}, headers=key)
    response = client.call(
        "POST", "/runs", {"graph": GRAPH, "input": {"topic": "cats"}}, headers=key
    )

    assert response.status_code == 409
    assert code(response) == "idempotency_conflict"


def test_an_unknown_graph_id_and_a_reused_key_are_answers_the_document_lists(
    client: Client,
) -> None:
    """Found by tests/system/test_api_fuzz.py: POST /runs answered 404 (an unknown
    graph_id) and 409 (a key reused with another body) but documented neither."""
    unknown = client.call("POST", "/runs", {"graph_id": "am0"})
    key = {"Idempotency-Key": "k-2"}
    client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "owls"}}, headers=key)
    reused = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "x"}}, headers=key)
    documented = document(ENDPOINTS)["paths"]["/runs"]["post"]["responses"]

    assert (unknown.status_code, reused.status_code) == (404, 409)
    assert {"404", "409"} <= set(documented)


def test_idempotency_keys_are_per_caller(client: Client) -> None:
    body = {"graph": GRAPH, "input": {"topic": "owls"}}
    key = {"Idempotency-Key": "shared"}
    mine = client.call("POST", "/runs", body, headers=key)
    theirs = client.call("POST", "/runs", body, headers=key, as_caller=BOB)

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["run_id"] != theirs.json()["run_id"]


def test_a_bad_idempotency_key_is_a_400(client: Client) -> None:
    response = client.call(
        "POST",
        "/runs",
        {"graph": GRAPH, "input": {"topic": "x"}},
        headers={"Idempotency-Key": "a b"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["path"] == "headers.Idempotency-Key"


def test_an_invalid_graph_lists_every_problem_with_its_path(client: Client) -> None:
    broken = {
        "name": "Bad Name",
        "nodes": [
            {"id": "a", "prompt": "x", "model": "echo", "after": ["c"]},
            {"id": "b", "tool": "no_such_tool", "after": ["zzz"]},
            {"id": "c", "prompt": "y", "model": "echo", "after": ["a"]},
            {"id": "d", "prompt": "z", "model": "echo", "temperature": 9},
        ],
    }
    response = client.call("POST", "/runs", {"graph": broken, "input": {}})

    assert response.status_code == 400
    assert code(response) == "invalid_graph"
    details = response.json()["error"]["details"]
    paths = {d["path"] for d in details}
    assert "graph.name" in paths
    assert "graph.nodes[1].after" in paths  # unknown parent
    assert "graph.nodes[1].tool" in paths  # unknown tool
    assert "graph.nodes[3].temperature" in paths  # out of range
    assert any("cycle" in d["message"] for d in details)
    assert response.json()["error"]["message"].startswith(f"invalid graph: {len(details)} problems")
    assert client.dispatched.ready == [], "nothing was started"


def test_an_invalid_input_lists_every_problem(client: Client) -> None:
    graph = {**GRAPH, "input": {"type": "object", "required": ["topic", "depth"]}}
    response = client.call("POST", "/runs", {"graph": graph, "input": {}})

    assert response.status_code == 400
    assert code(response) == "invalid_input"
    messages = [d["message"] for d in response.json()["error"]["details"]]
    assert any("'topic'" in m for m in messages) and any("'depth'" in m for m in messages)


def test_a_malformed_body_is_a_400_naming_each_field(client: Client) -> None:
    not_json = client.call("POST", "/runs", raw=b"{nope")
    both = client.call("POST", "/runs", {"graph": GRAPH, "graph_id": "pair", "extra": 1})
    array = client.call("POST", "/runs", [1, 2])

    assert [r.status_code for r in (not_json, both, array)] == [400, 400, 400]
    assert "not valid JSON" in not_json.json()["error"]["details"][0]["message"]
    paths = [d["path"] for d in both.json()["error"]["details"]]
    assert "extra" in paths and "body" in paths
    assert "found an array" in array.json()["error"]["details"][0]["message"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(client: Client) -> None:
    declared = client.call(
        "POST", "/runs", raw=b"{}", headers={"Content-Length": str(MAX_BODY_BYTES + 1)}
    )
    chunked = client.call("POST", "/runs", raw=b" " * (MAX_BODY_BYTES + 1), chunked=True)

    assert (declared.status_code, chunked.status_code) == (413, 413)
    assert code(declared) == code(chunked) == "payload_too_large"


def test_runs_from_a_stored_graph_use_the_latest_or_the_asked_version(
    client: Client,
) -> None:
    v1 = client.call("POST", "/graphs", GRAPH)
    v2 = client.call(
        "POST", "/graphs", {**GRAPH, "description": "second"}, headers={"Idempotency-Key": "x"}
    )
    assert (v1.status_code, v1.json()["version"], v2.json()["version"]) == (201, 1, 2)

    latest = client.call("POST", "/runs", {"graph_id": "pair", "input": {"topic": "a"}})
    pinned = client.call(
        "POST", "/runs", {"graph_id": "pair", "version": 1, "input": {"topic": "a"}}
    )
    missing = client.call(
        "POST", "/runs", {"graph_id": "pair", "version": 9, "input": {"topic": "a"}}
    )

    assert (latest.status_code, pinned.status_code, missing.status_code) == (201, 201, 404)


def test_a_stored_subgraph_is_inlined_into_the_run_when_it_starts(client: Client) -> None:
    client.call("POST", "/graphs", GRAPH)
    outer = {
        "name": "outer",
        "defaults": {"model": "echo"},
        "nodes": [{"id": "sub", "graph": "pair@1"}, {"id": "unknown", "graph": "nope"}],
    }
    invalid = client.call("POST", "/runs", {"graph": outer})
    assert invalid.status_code == 400
    assert "'nope', which was not resolved" in json.dumps(invalid.json())

    outer["nodes"] = outer["nodes"][:1]
    created = client.call("POST", "/runs", {"graph": outer, "input": {"topic": "t"}})
    assert created.status_code == 201, created.json()
    run = client.call("GET", f"/runs/{created.json()['run_id']}").json()
    assert [(n["id"], n["status"]) for n in run["nodes"]] == [("sub", "ready")]


# ---- GET /runs/{id}, cancel, events, list ------------------------------------------------------


def test_get_run_returns_the_run_and_its_nodes(client: Client) -> None:
    created = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    response = client.call("GET", f"/runs/{created.json()['run_id']}")

    assert response.status_code == 200
    assert [(n["id"], n["status"]) for n in response.json()["nodes"]] == [
        ("a", "ready"),
        ("b", "waiting"),
    ]


def test_another_callers_run_is_not_found_and_cannot_be_cancelled(client: Client) -> None:
    created = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    run_id = created.json()["run_id"]

    peek = client.call("GET", f"/runs/{run_id}", as_caller=BOB)
    cancel = client.call("POST", f"/runs/{run_id}/cancel", as_caller=BOB)
    events = client.call("GET", f"/runs/{run_id}/events", as_caller=BOB)
    unknown = client.call("GET", "/runs/no-such-run", as_caller=BOB)
    admin = client.call("GET", f"/runs/{run_id}", as_caller=ADMIN)

    assert [r.status_code for r in (peek, cancel, events)] == [404, 404, 404]
    assert peek.json() == {
        **unknown.json(),
        "error": {**unknown.json()["error"], "message": f"no run with id {run_id!r}"},
    }, "the same answer as for a run that does not exist"
    assert admin.status_code == 200
    owned = client.call("GET", f"/runs/{run_id}")
    assert owned.json()["status"] == "running", "bob's cancel changed nothing"


def test_cancel_ends_the_run_and_is_idempotent(client: Client) -> None:
    created = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    run_id = created.json()["run_id"]

    first = client.call("POST", f"/runs/{run_id}/cancel")
    second = client.call("POST", f"/runs/{run_id}/cancel")
    run = client.call("GET", f"/runs/{run_id}")

    assert (first.status_code, first.json()["cancelled"]) == (200, True)
    assert (second.status_code, second.json()["cancelled"]) == (200, False)
    assert run.json()["status"] == "cancelled"
    assert {n["status"] for n in run.json()["nodes"]} == {"cancelled"}


def test_events_follow_a_run(client: Client) -> None:
    created = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    run_id = created.json()["run_id"]
    client.call("POST", f"/runs/{run_id}/cancel")

    events = client.call("GET", f"/runs/{run_id}/events").json()["events"]
    later = client.call("GET", f"/runs/{run_id}/events", query={"after": str(events[0]["seq"])})

    assert events[0]["kind"] == "run_status"
    assert later.json()["events"] == events[1:]


def test_list_runs_shows_only_the_callers_runs(client: Client) -> None:
    client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}, as_caller=BOB)

    mine = client.call("GET", "/runs")
    everyone = client.call("GET", "/runs", as_caller=ADMIN)
    bad = client.call("GET", "/runs", query={"limit": "0"})

    assert [r["owner"] for r in mine.json()["runs"]] == ["alice"]
    assert len(everyone.json()["runs"]) == 2
    assert bad.status_code == 400


@pytest.mark.parametrize("value", ["", "+5", " 5", "5_0", "\u0665", "1e3", "5.0"])
def test_an_integer_query_parameter_takes_only_ascii_digits(client: Client, value: str) -> None:
    """Found by tests/system/test_api_fuzz.py: `?limit=` (empty) answered 200 although the
    document says integer; `int()` also took `+5`, ` 5`, `5_0` and other digits."""
    run_id = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}).json()[
        "run_id"
    ]
    client.call("POST", "/graphs", GRAPH)

    answers = [
        client.call("GET", "/runs", query={"limit": value}),
        client.call("GET", f"/runs/{run_id}/events", query={"after": value}),
        client.call("GET", "/graphs/pair", query={"version": value}),
    ]

    assert [(r.status_code, code(r)) for r in answers] == [(400, "invalid_request")] * 3
    assert client.call("GET", "/runs", query={"limit": "5"}).status_code == 200


# ---- graphs ------------------------------------------------------------------------------------


def test_post_graphs_validates_versions_and_dedupes(client: Client) -> None:
    first = client.call("POST", "/graphs", GRAPH)
    same = client.call("POST", "/graphs", GRAPH)
    invalid = client.call("POST", "/graphs", {"name": "pair", "nodes": [{"id": "a"}]})
    bobs = client.call("POST", "/graphs", {**GRAPH, "description": "mine"}, as_caller=BOB)

    assert (first.status_code, first.json()["id"], first.json()["version"]) == (201, "pair", 1)
    assert first.json()["hash"] == canonical_hash(GRAPH)
    assert (same.status_code, same.json()["version"]) == (200, 1)
    assert invalid.status_code == 400 and code(invalid) == "invalid_graph"
    # Names are per owner: Bob's "pair" is his own first version, Alice's is untouched.
    assert (bobs.status_code, bobs.json()["version"]) == (201, 1)
    alices = client.call("GET", "/graphs/pair").json()["definition"]
    assert "description" not in alices


def test_post_graphs_accepts_yaml(client: Client) -> None:
    text = b"name: tiny\nnodes:\n  - id: a\n    model: echo\n    prompt: hi\n"
    response = client.call(
        "POST", "/graphs", raw=text, headers={"Content-Type": "application/yaml"}
    )
    fetched = client.call("GET", "/graphs/tiny")

    assert response.status_code == 201
    assert fetched.json()["definition"]["nodes"][0]["prompt"] == "hi"


def test_get_graph_by_version_and_visibility(client: Client) -> None:
    client.call("POST", "/graphs", GRAPH)
    client.call("POST", "/graphs", {**GRAPH, "description": "v2"})

    latest = client.call("GET", "/graphs/pair")
    first = client.call("GET", "/graphs/pair", query={"version": "1"})
    hidden = client.call("GET", "/graphs/pair", as_caller=BOB)
    bad = client.call("GET", "/graphs/pair", query={"version": "x"})

    assert (latest.json()["version"], latest.json()["latest_version"]) == (2, 2)
    assert latest.json()["definition"]["description"] == "v2"
    assert "description" not in first.json()["definition"]
    assert hidden.status_code == 404
    assert bad.status_code == 400


# ---- routing and auth -----------------------------------------------------------------------


def test_unknown_routes_are_404_and_wrong_methods_405(client: Client) -> None:
    nowhere = client.call("GET", "/nowhere")
    delete = client.call("DELETE", "/runs")
    put = client.call("PUT", "/runs/abc/cancel")

    assert nowhere.status_code == 404 and code(nowhere) == "not_found"
    assert delete.status_code == 405 and delete.headers["Allow"] == "GET, POST"
    assert put.status_code == 405 and put.headers["Allow"] == "POST"


def test_health_and_openapi_need_no_token_but_runs_do(client: Client) -> None:
    client.caller = None

    health = client.call("GET", "/healthz")
    spec = client.call("GET", "/openapi.json")
    runs = client.call("GET", "/runs")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (spec.status_code, spec.json()["openapi"]) == (200, "3.1.0")
    assert runs.status_code == 401
    assert runs.headers["WWW-Authenticate"] == "Bearer"


def test_errors_are_json_with_code_message_and_details(client: Client) -> None:
    response = client.call("GET", "/runs/nope")

    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert response.headers["Content-Type"] == "application/json"


def test_head_answers_like_get_without_a_body(client: Client) -> None:
    created = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}})
    head = client.call("HEAD", f"/runs/{created.json()['run_id']}")
    health = client.call("HEAD", "/healthz")

    assert (head.status_code, health.status_code) == (200, 200)
    assert head.content == b""


def test_a_trailing_slash_names_the_same_route(client: Client) -> None:
    assert client.call("GET", "/runs/").status_code == 200
    assert client.call("GET", "/healthz/").json() == {"status": "ok"}


def test_the_consoles_api_prefix_names_the_same_route(client: Client) -> None:
    # Firebase Hosting forwards the console's /api/** to the api with the prefix kept.
    assert client.call("GET", "/api/runs").status_code == 200
    assert client.call("GET", "/api/healthz").json() == {"status": "ok"}
    assert client.call("GET", "/apirnus").status_code == 404


def test_an_id_that_cannot_exist_is_no_route(client: Client) -> None:
    response = client.call("GET", "/runs/" + "x" * 129)

    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("no route GET /runs/xxx")


def test_contention_and_transient_failures_are_503_with_retry_after(client: Client) -> None:
    with client.failing(Contention("the run kept changing")):
        busy = client.call("GET", "/runs")
    with client.failing(Transient("firestore unavailable")):
        down = client.call("POST", "/runs", {"graph_id": "pair", "input": {}})

    assert (busy.status_code, code(busy), busy.headers["Retry-After"]) == (503, "contention", "1")
    assert (down.status_code, code(down), down.headers["Retry-After"]) == (503, "unavailable", "1")
    assert "firestore" not in down.text, "the backend's message stays in the logs"


def test_an_unexpected_failure_is_a_500_without_its_details(client: Client) -> None:
    with client.failing(RuntimeError("secret stack detail")):
        response = client.call("GET", "/runs")

    assert (response.status_code, code(response)) == (500, "internal")
    assert "secret" not in response.text


def test_the_steps_of_a_node_are_served_in_order_to_whoever_may_see_the_run(
    client: Client,
) -> None:
    import asyncio

    from agentgraph.core.records import Step, Usage

    run_id = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}).json()[
        "run_id"
    ]
    store = client.api.engine.store
    turn = Step(
        0, "model", "echo", 1, 1, 1.5, 4, result={"text": "", "calls": []}, usage=Usage(calls=1)
    )
    call = Step(1, "tool", "word_count", 1, 1, 1.6, 2, arguments={"text": "a b"}, result=2)
    for step in (call, turn):
        assert asyncio.run(store.append_step(run_id, "a", step))

    page = client.call("GET", f"/runs/{run_id}/nodes/a/steps").json()

    assert page["run_id"] == run_id and page["node_id"] == "a"
    assert [(s["index"], s["kind"], s["name"]) for s in page["steps"]] == [
        (0, "model", "echo"),
        (1, "tool", "word_count"),
    ]
    assert page["steps"][1]["arguments"] == {"text": "a b"} and page["steps"][1]["result"] == 2
    assert client.call("GET", f"/runs/{run_id}/nodes/b/steps").json()["steps"] == []
    assert client.call("GET", f"/runs/{run_id}/nodes/a/steps", as_caller=BOB).status_code == 404
    missing = client.call("GET", f"/runs/{run_id}/nodes/zz/steps")
    assert missing.status_code == 404 and code(missing) == "not_found"
    assert client.call("GET", f"/runs/{run_id}/nodes/Bad%20Id/steps").status_code == 404


# ---- approvals and redrive ------------------------------------------------------------------

CAROL = Caller("carol-uid", email="carol@example.com")


def test_the_owner_approves_a_waiting_node_and_its_output_records_the_decision(
    client: Client,
) -> None:
    run_id = client.waiting_run()
    response = client.call(
        "POST", f"/runs/{run_id}/nodes/gate/approve", {"comment": "fine", "payload": {"v": 2}}
    )

    assert response.status_code == 200, response.json()
    node = response.json()["node"]
    assert node["status"] == "succeeded"
    assert node["output"]["decision"] == "approved"
    assert node["output"]["by"] == "alice"
    assert (node["output"]["comment"], node["output"]["payload"]) == ("fine", {"v": 2})
    assert (run_id, "gate", "succeeded") in client.dispatched.finished


def test_a_listed_approver_may_decide_a_run_they_do_not_own(client: Client) -> None:
    run_id = client.waiting_run()
    response = client.call("POST", f"/runs/{run_id}/nodes/gate/reject", as_caller=CAROL)

    assert response.status_code == 200, response.json()
    assert response.json()["node"]["status"] == "failed"
    assert response.json()["node"]["output"]["by"] == "carol@example.com"
    assert response.json()["node"]["error"]["type"] == "ApprovalRejected"


def test_anyone_else_is_told_the_run_does_not_exist(client: Client) -> None:
    run_id = client.waiting_run()
    bob = client.call("POST", f"/runs/{run_id}/nodes/gate/approve", as_caller=BOB)
    unverified = client.call(
        "POST", f"/runs/{run_id}/nodes/gate/approve", as_caller=Caller("carol@example.com-not")
    )

    assert (bob.status_code, code(bob)) == (404, "not_found")
    assert unverified.status_code == 404
    node = client.call("GET", f"/runs/{run_id}").json()["nodes"][0]
    assert node["status"] == "waiting_approval", "their requests changed nothing"


def test_the_same_decision_again_is_the_same_answer_and_another_is_a_conflict(
    client: Client,
) -> None:
    run_id = client.waiting_run()
    first = client.call("POST", f"/runs/{run_id}/nodes/gate/approve", {"comment": "a"})
    again = client.call("POST", f"/runs/{run_id}/nodes/gate/approve", {"comment": "b"})
    other = client.call("POST", f"/runs/{run_id}/nodes/gate/reject")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert (other.status_code, code(other)) == (409, "approval_conflict")
    assert "already approved by alice" in other.json()["error"]["message"]


def test_an_unknown_node_is_not_found_and_a_node_without_approval_a_conflict(
    client: Client,
) -> None:
    run_id = client.waiting_run()
    unknown = client.call("POST", f"/runs/{run_id}/nodes/nope/approve")
    plain = client.call("POST", "/runs", {"graph": GRAPH, "input": {"topic": "t"}}).json()
    no_step = client.call("POST", f"/runs/{plain['run_id']}/nodes/a/approve")

    assert (unknown.status_code, code(unknown)) == (404, "not_found")
    assert (no_step.status_code, code(no_step)) == (409, "approval_conflict")


def test_redrive_runs_again_the_items_of_a_map_its_cancel_stopped(client: Client) -> None:
    mapped = {
        "name": "mapped",
        "defaults": {"model": "echo"},
        "nodes": [{"id": "each", "map": "input.things", "prompt": "{{ item }}"}],
    }
    started = client.call("POST", "/runs", {"graph": mapped, "input": {"things": ["x", "y"]}})
    run_id = started.json()["run_id"]
    client.http.portal.call(client.api.engine.execute, run_id, "each", 1)  # type: ignore[union-attr]
    client.call("POST", f"/runs/{run_id}/cancel")
    sent = len(client.dispatched.ready)
    redriven = client.call("POST", f"/runs/{run_id}/redrive")

    assert redriven.status_code == 200, redriven.json()
    assert redriven.json()["redriven"] is True
    assert redriven.json()["nodes_to_run"] == ["each", "each[0]", "each[1]"]
    assert client.dispatched.ready[sent:] == [(run_id, "each[0]", 1), (run_id, "each[1]", 1)]


def test_redrive_runs_a_cancelled_run_again_and_refuses_a_running_one(client: Client) -> None:
    run_id = client.cancelled_run()
    redriven = client.call("POST", f"/runs/{run_id}/redrive")
    again = client.call("POST", f"/runs/{run_id}/redrive")
    other = client.call("POST", f"/runs/{run_id}/redrive", as_caller=BOB)

    assert redriven.status_code == 200, redriven.json()
    assert redriven.json()["status"] == "running"
    assert (redriven.json()["redriven"], redriven.json()["nodes_to_run"]) == (True, ["gate"])
    assert (run_id, "gate", 1) in client.dispatched.ready
    assert (again.status_code, code(again)) == (409, "redrive_conflict")
    assert other.status_code == 404
