"""The HTTP api survives untrusted callers: schemathesis generates requests from the api's
own contract (functions/openapi.yaml, the committed document) and sends them to the api
function running as a real process (functions-framework, as deployed) on the emulator
stack, and every answer must be one the document promises.

Each operation of the document is one test. Requests are made in both generation modes:
valid ones (positive) and ones that break the schema (negative: wrong types, missing
fields, values out of range), because untrusted callers send both. Every response is held
to schemathesis' own checks: no 5xx (`not_a_server_error`), a documented status
(`status_code_conformance`), a documented content type (`content_type_conformance`),
a body that fits its schema (`response_schema_conformance`), documented headers
(`response_headers_conformance`), invalid data refused with a 4xx
(`negative_data_rejection`), and the other checks schemathesis enables by default, except:

- `ignored_auth`: the stack runs with AGENTGRAPH_AUTH=off (every caller is the admin
  "local"), so a request without a token, or with a wrong one, is served on purpose
  instead of being a 401. For the same reason no `Authorization` header is generated
  (`with_security_parameters=False`): a missing or mangled token is no invalid data
  here. Authentication is specified in tests/unit/test_auth.py.
- `positive_data_acceptance`: a request that fits the schema can still be refused on
  purpose with a documented 4xx: a graph whose nodes the document leaves as free-form
  objects (they are validated node by node, core/validate.py) or that is no valid DAG
  (400), a `graph_id` or run id that does not exist (404). Status and body conformance
  still hold every such answer, and the last test below sends requests that must succeed.

Bounded and deterministic: derandomized, EXAMPLES_PER_OPERATION generated cases per
operation plus schemathesis' coverage phase (boundary values from the schema, a fixed set):
the same ~930 requests on every run, in under a minute here.

The functions run in a project of their own on the session's emulators (like
test_functions_e2e.py), so the runs the fuzzer starts reach nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from emulator import harness
from emulator.stack import Stack

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PROJECT = "fuzz-agentgraph"
OPENAPI_YAML = Path(__file__).parents[2] / "functions" / "openapi.yaml"
EXAMPLES_PER_OPERATION = 40

schema = schemathesis.openapi.from_path(OPENAPI_YAML)
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_OPERATION,
    deterministic=True,
    with_security_parameters=False,
)
EXCLUDED_CHECKS = [ignored_auth, positive_data_acceptance]  # why: the module docstring


@pytest.fixture(scope="module")
def stack(
    emulator_stack: harness.EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Every function on the session's emulators (no second set of emulators), in a
    project of its own. Not test_functions_e2e.py's stack: that one's tests read its
    function logs and count executions, which the fuzzer's requests and runs would join."""
    with Stack(
        emulators=emulator_stack,
        project=PROJECT,
        log_dir=tmp_path_factory.mktemp("fuzz-logs"),
        sweep_every_s=None,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as made:
        yield made


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_one_the_document_promises(
    case: schemathesis.Case, stack: Stack, session: requests.Session
) -> None:
    case.call_and_validate(
        base_url=stack.api_url,
        session=session,
        excluded_checks=EXCLUDED_CHECKS,
        timeout=60,
    )


# ---- the answers only real runs and graphs give ----------------------------------------------

# Generated ids name no run or graph, and a generated graph is no valid DAG, so the fuzzer
# alone sees mostly 4xx. These requests make real ones and hold every success answer to
# the same checks: the document's status, content type, headers and body schema.
GRAPH = {
    "name": "fuzz-echo",
    "defaults": {"model": "echo"},
    "input": {"type": "object", "required": ["topic"]},
    "nodes": [
        {"id": "a", "prompt": "about {{ input.topic }}"},
        {"id": "b", "after": ["a"], "prompt": "more: {{ nodes.a.output }}"},
    ],
}


def test_the_answers_about_real_runs_and_graphs_are_the_documented_ones(
    stack: Stack, session: requests.Session
) -> None:
    def call(operation_id: str, status: int, **parts: Any) -> dict[str, Any]:
        case = schema.find_operation_by_id(operation_id).Case(**parts)
        response = case.call_and_validate(
            base_url=stack.api_url, session=session, excluded_checks=EXCLUDED_CHECKS, timeout=60
        )
        assert response.status_code == status, response.text
        return dict(response.json())

    json_body = {"media_type": "application/json"}
    call("createGraph", 201, body=GRAPH, **json_body)
    call("createGraph", 200, body=GRAPH, media_type="application/yaml")
    call("createGraph", 201, body={**GRAPH, "description": "v2"}, **json_body)
    call("getGraph", 200, path_parameters={"graph_id": "fuzz-echo"})
    call("getGraph", 200, path_parameters={"graph_id": "fuzz-echo"}, query={"version": 1})

    inline = {"graph": GRAPH, "input": {"topic": "owls"}}
    key = {"Idempotency-Key": "fuzz-key-1"}
    run_id = call("createRun", 201, body=inline, headers=key)["run_id"]
    call("createRun", 200, body=inline, headers=key)
    call("createRun", 409, body={**inline, "input": {"topic": "cats"}}, headers=key)
    stored = call("createRun", 201, body={"graph_id": "fuzz-echo", "input": {"topic": "t"}})
    call("createRun", 400, body={"graph_id": "fuzz-echo", "input": {}})

    for some_run in (run_id, stored["run_id"]):
        call("getRun", 200, path_parameters={"run_id": some_run})
        call("getRunEvents", 200, path_parameters={"run_id": some_run}, query={"after": 1})
        call("cancelRun", 200, path_parameters={"run_id": some_run})
        call("getRun", 200, path_parameters={"run_id": some_run})
    listed = call("listRuns", 200, query={"limit": 10})
    assert {run_id, stored["run_id"]} <= {r["run_id"] for r in listed["runs"]}
