"""Validation refuses a node timeout_s that the serverless deployment could not honour:
longer than its pool's exec function timeout and Pub/Sub ack deadline allow (less the
time to claim the node and record its result). The local backend keeps its own bound."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.core.errors import GraphInvalid
from agentgraph.core.timeouts import (
    HANDLING_MARGIN_S,
    TimeoutBound,
    ack_deadline_s,
    max_node_timeout_s,
    parse_pool_timeouts,
)
from agentgraph.core.validate import load_graph

SERVERLESS = TimeoutBound({"default": 540, "long": 3600, "short": 60})


def graph(*nodes: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    return {"name": "t", "defaults": {"model": "echo", **defaults}, "nodes": list(nodes)}


def node(node_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "prompt": "hi", **fields}


def problems(document: dict[str, Any], bound: TimeoutBound | None) -> list[tuple[str, Any, str]]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document, timeout_bound=bound)
    return [(p.path, p.node_id, p.message) for p in caught.value.problems]


def test_the_default_pool_allows_its_function_timeout_less_the_handling_margin() -> None:
    assert ack_deadline_s(540) == 540 and max_node_timeout_s(540) == 540 - HANDLING_MARGIN_S
    load_graph(graph(node("a", timeout_s=510)), timeout_bound=SERVERLESS)

    [(path, node_id, message)] = problems(graph(node("a", timeout_s=511)), SERVERLESS)

    assert (path, node_id) == ("nodes[0].timeout_s", "a")
    assert "timeout_s=511" in message and "at most 510 s" in message
    assert "exec-default" in message and "ack deadline 540 s" in message


def test_a_pool_with_a_longer_function_timeout_is_still_bound_by_the_600_s_ack_deadline() -> None:
    assert ack_deadline_s(3600) == 600
    load_graph(graph(node("a", timeout_s=570, pool="long")), timeout_bound=SERVERLESS)
    [(path, _, message)] = problems(graph(node("a", timeout_s=571, pool="long")), SERVERLESS)
    assert path == "nodes[0].timeout_s" and "ack deadline 600 s" in message


def test_a_default_timeout_too_long_for_a_pool_is_reported_once_on_defaults() -> None:
    document = graph(node("a", pool="short"), node("b", pool="short"), node("c"), timeout_s=100)
    found = problems(document, SERVERLESS)
    assert [(path, node_id) for path, node_id, _ in found] == [("defaults.timeout_s", None)]
    assert "pool 'short'" in found[0][2] and "at most 30 s" in found[0][2]


def test_a_pool_the_deployment_does_not_name_gets_the_default_function_timeout() -> None:
    [(path, _, message)] = problems(graph(node("a", pool="other", timeout_s=600)), SERVERLESS)
    assert path == "nodes[0].timeout_s" and "at most 510 s" in message


def test_the_local_backend_keeps_the_schema_bound_of_an_hour() -> None:
    load_graph(graph(node("a", timeout_s=3600)))
    [(path, node_id, _)] = problems(graph(node("a", timeout_s=3601)), None)
    assert (path, node_id) == ("nodes[0].timeout_s", "a")


def test_pool_timeouts_are_read_as_infra_writes_them() -> None:
    assert parse_pool_timeouts("default=540, big=900") == {"default": 540.0, "big": 900.0}
    assert parse_pool_timeouts("") == {}
    with pytest.raises(ValueError):
        parse_pool_timeouts("default")
    with pytest.raises(ValueError):
        parse_pool_timeouts("default=soon")
    assert TimeoutBound.from_env({"X": "big=900"}, "X").max_for("big") == 570
    assert TimeoutBound.from_env({}, "X").max_for("default") == 510
