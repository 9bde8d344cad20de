"""Agents as tools and agent profiles: what validation accepts and refuses, how a profile
applies to a node, and the pure decisions of delegation and memory."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agentgraph.core import agent_loop, agent_memory, delegation, grow, transitions
from agentgraph.core.errors import DelegationTooDeep, GraphInvalid
from agentgraph.core.llm_port import FunctionCall
from agentgraph.core.model import OnError
from agentgraph.core.records import NodeError, NodeRecord, Step
from agentgraph.core.status import NodeStatus as S
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


# ---- delegation: pure decisions ---------------------------------------------------------------


def lead_graph() -> Any:
    return load_graph(
        graph(
            {"id": "lead", "prompt": "p", "delegates": ["researcher"], "pool": "agents"},
            agents={
                "researcher": {
                    "description": "Finds things.",
                    "system": "You research.",
                    "tools": ["const"],
                    "delegates": ["researcher"],
                }
            },
        ),
        tools=TOOLS,
    )


def test_a_delegate_id_names_its_caller_profile_and_step() -> None:
    assert delegation.child_id("lead", "researcher", 3) == "lead/researcher[3]"
    assert delegation.parse("lead/researcher[3]") == ("lead", "researcher", 3)
    assert delegation.parse("a[2]/b/coder[1]") == ("a[2]/b", "coder", 1)
    assert delegation.parse("lead") is None and delegation.parse("s/inner") is None
    assert delegation.parse("lead/x@2") is None


def test_a_delegate_runs_as_its_profile_with_the_task_as_prompt_and_its_caller_as_child() -> None:
    g = lead_graph()
    child = delegation.node(g["lead"], g, "lead/researcher[1]", "researcher")
    assert child is not None
    assert (child.prompt, child.system, child.model, child.pool) == (
        "{{ task }}",
        "You research.",
        "echo",
        "agents",
    )
    assert (child.parents, child.children, child.delegate_of, child.delegate_depth) == (
        (),
        ("lead",),
        "lead",
        1,
    )
    assert child.tools == ("const",) and child.delegates == ("researcher",)
    assert child.on_error == OnError.CONTINUE and child.reads == frozenset()
    assert delegation.node(g["lead"], g, "lead/nobody[1]", "nobody") is None


def test_each_delegate_profile_is_one_function_taking_a_task() -> None:
    g = lead_graph()
    (spec,) = delegation.declarations(g["lead"], g)
    assert (spec.name, spec.description) == ("researcher", "Finds things.")
    assert spec.parameters["required"] == ["task"]
    assert spec.parameters["properties"]["task"]["type"] == "string"


def test_a_turns_calls_split_into_tool_and_delegate_calls_keeping_their_indexes() -> None:
    g = lead_graph()
    calls = [(1, FunctionCall("const")), (2, FunctionCall("researcher", {"task": "t"}))]
    node = replace(g["lead"], tools=("const",))
    assert delegation.split(node, calls) == ([calls[0]], [calls[1]])


def test_depth_is_capped_at_three() -> None:
    g = lead_graph()
    node = g["lead"]
    for depth in range(delegation.MAX_DELEGATE_DEPTH):
        delegation.check_depth(replace(node, delegate_depth=depth))
    with pytest.raises(DelegationTooDeep, match="at most 3 deep"):
        delegation.check_depth(replace(node, delegate_depth=3))


def test_a_delegates_record_carries_its_task_and_its_turns_siblings() -> None:
    g = lead_graph()
    call = FunctionCall("researcher", {"task": "find x"})
    record = delegation.record(
        "r", g["lead"], 2, call, ["lead/researcher[1]", "lead/researcher[2]"]
    )
    assert (record.node_id, record.status, record.children) == (
        "lead/researcher[2]",
        S.READY,
        ["lead"],
    )
    assert grow.bindings_of(record) == {"task": "find x"}
    assert delegation.siblings_of(record) == ["lead/researcher[1]", "lead/researcher[2]"]
    assert delegation.task_of(FunctionCall("researcher", {"task": " "})) is None


def test_a_delegates_output_or_error_is_the_calls_result() -> None:
    call = FunctionCall("researcher", {"task": "t"}, id="c1")
    done = NodeRecord("r", "lead/researcher[1]", S.SUCCEEDED, [], ["lead"], output="Paris")
    step = delegation.result_step(1, 1, 1, call, done, 5.0)
    assert (step.kind, step.name, step.result, step.error, step.call_id) == (
        "tool",
        "researcher",
        "Paris",
        None,
        "c1",
    )
    failed = replace(done, status=S.FAILED, output=None, error=NodeError("Boom", "it broke", False))
    assert delegation.result_step(1, 1, 1, call, failed, 5.0).error == {
        "type": "Boom",
        "message": "it broke",
    }
    cancelled = replace(done, status=S.CANCELLED, output=None)
    assert delegation.result_step(1, 1, 1, call, cancelled, 5.0).error == {
        "type": "DelegateFailed",
        "message": "the researcher agent ended cancelled",
    }


def test_a_caller_woken_from_its_delegates_is_ready_at_the_same_attempt_with_no_lost_run() -> None:
    waiting = NodeRecord("r", "lead", S.EXPANDED, [], [], attempt=2, executions=2)
    change = transitions.resolve(waiting, S.READY, 9.0, expected=(S.EXPANDED,))
    assert change is not None
    woken = change.applied(waiting)
    assert (woken.status, woken.attempt, woken.executions) == (S.READY, 2, 1)
    assert transitions.lost_executions(woken) == 0
    assert transitions.resolve(woken, S.READY, 9.0, expected=(S.EXPANDED,)) is None


# ---- memory: run ----------------------------------------------------------------------------


def conversation(index: int, node_id: str, prompt: str, answer: str) -> Step:
    turn = Step(0, "model", "m", 1, 1, 0.0, result=agent_loop.model_result(answer, ()))
    return agent_memory.entry(index, node_id, prompt, [turn], 1.0)


def test_memory_sends_earlier_conversations_oldest_first_without_the_nodes_own() -> None:
    entries = [conversation(0, "d@1", "one", "first"), conversation(1, "d@2", "two", "second")]
    turns = agent_memory.history(entries, "d@3", 8_000)
    assert [(t.role, t.text) for t in turns] == [
        ("user", "one"),
        ("model", "first"),
        ("user", "two"),
        ("model", "second"),
    ]
    assert [t.text for t in agent_memory.history(entries, "d@2", 8_000)] == ["one", "first"]


def test_memory_keeps_the_newest_whole_conversations_that_fit_the_budget() -> None:
    entries = [conversation(i, f"d@{i}", "p" * 200, "a" * 200) for i in range(3)]
    assert agent_memory.estimate_tokens("p" * 200) == 50  # 4 characters a token
    kept = agent_memory.history(entries, "d@9", 250)  # 100 tokens each: two fit
    assert len(kept) == 4
    assert agent_memory.history(entries, "d@9", 99) == ()  # not even the newest fits


def test_a_conversation_is_remembered_once_per_node_at_the_next_free_index() -> None:
    entries = [conversation(0, "d@1", "one", "first")]
    assert agent_memory.remembered(entries, "d@1") and not agent_memory.remembered(entries, "d@2")
    assert agent_memory.next_index(entries) == 1 and agent_memory.next_index([]) == 0
    assert agent_memory.key("writer") == "_memory@writer"


def test_show_hangs_a_delegate_under_its_caller_not_under_a_map() -> None:
    from agentgraph.view import _tree_parent, _unit

    delegate = NodeRecord("r", "lead/researcher[1]", S.SUCCEEDED, [], ["lead"])
    item = NodeRecord("r", "s/inner[1]", S.SUCCEEDED, [], ["s/inner"])
    assert _unit(delegate) is None and _tree_parent(delegate) == "lead"
    assert _unit(item) is not None and _tree_parent(item) == "s/inner"
