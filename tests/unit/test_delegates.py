"""Agents as tools and agent profiles: what validation accepts and refuses, how a profile
applies to a node, and the pure decisions of delegation and memory."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.core import grow
from agentgraph.core.errors import GraphInvalid
from agentgraph.core.validate import load_graph

TOOLS = ["const", "noop"]


def graph(*nodes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "g", "defaults": {"model": "echo"}, "nodes": list(nodes), **top}


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document, tools=TOOLS)
    return [str(p) for p in caught.value.problems]


def test_a_profiles_tools_and_max_turns_apply_to_a_node_that_uses_it() -> None:
    g = load_graph(
        graph(
            {"id": "x", "agent": "helper", "prompt": "p"},
            agents={"helper": {"tools": ["const"], "max_turns": 4, "memory": "run"}},
        ),
        tools=TOOLS,
    )
    node = grow.with_profile(g["x"], g, "helper")
    assert (node.tools, node.max_turns, node.memory, node.profile) == (
        ("const",),
        4,
        "run",
        "helper",
    )


def test_a_profiles_tools_are_validated_like_a_nodes() -> None:
    found = problems(
        graph({"id": "x", "prompt": "p"}, agents={"h": {"tools": ["cnst", "noop", "noop"]}})
    )
    assert any(
        "agents.h.tools[0]" in p and "unknown tool 'cnst'" in p and "'const'" in p for p in found
    )
    assert any("agents.h.tools[2]" in p and "listed twice" in p for p in found)


def test_delegates_must_be_profiles_named_like_node_ids_and_not_tools() -> None:
    found = problems(
        graph(
            {"id": "x", "prompt": "p", "tools": ["noop"], "delegates": ["researcher", "noop"]},
            agents={
                "researchr": {"model": "echo"},
                "Upper": {"model": "echo"},
                "noop": {"model": "echo"},
                "lead": {"delegates": ["Upper"]},
            },
        )
    )
    assert any("nodes[0].delegates[0]" in p and "did you mean 'researchr'" in p for p in found)
    assert any("nodes[0].delegates[1]" in p and "both a tool and a delegate" in p for p in found)
    assert any("agents.lead.delegates[0]" in p and "named like a node id" in p for p in found)


def test_delegates_are_for_agent_nodes() -> None:
    found = problems(graph({"id": "x", "tool": "noop", "delegates": ["a"]}, agents={"a": {}}))
    assert any("'delegates' is for agent nodes" in p for p in found)


def test_a_delegate_cycle_between_profiles_is_allowed_the_depth_cap_bounds_it() -> None:
    g = load_graph(
        graph(
            {"id": "x", "prompt": "p", "delegates": ["a"]},
            agents={"a": {"delegates": ["b"]}, "b": {"delegates": ["a"]}},
        )
    )
    assert g["x"].delegates == ("a",)
