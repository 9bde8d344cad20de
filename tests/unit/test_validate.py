"""Graph validation: every problem at once, each naming the node and the field."""

from __future__ import annotations

import pytest

from agentgraph.core.errors import GraphInvalid, InputInvalid
from agentgraph.core.validate import load_graph, validate_input

TOOLS = ["extract_functions", "detect_issues", "noop"]


def known_model(name: str) -> bool:
    return name == "echo" or name.startswith("gemini-")


def problems_of(document: dict) -> list[str]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document, tools=TOOLS, model_known=known_model)
    return [str(p) for p in caught.value.problems]


def graph(*nodes: dict, **top: object) -> dict:
    return {"name": "g", "defaults": {"model": "echo"}, "nodes": list(nodes), **top}


def test_a_valid_graph_merges_defaults_into_each_node() -> None:
    g = load_graph(
        graph(
            {"id": "a", "tool": "noop"},
            {"id": "b", "after": ["a"], "prompt": "x {{ nodes.a.output }}", "temperature": 0.9},
            defaults={
                "model": "echo",
                "temperature": 0.2,
                "timeout_s": 30,
                "retry": {"max_attempts": 5},
            },
        ),
        tools=TOOLS,
        model_known=known_model,
    )
    assert g["b"].model == "echo"
    assert g["b"].temperature == 0.9
    assert g["a"].timeout_s == 30
    assert g["b"].retry.max_attempts == 5
    assert g["a"].children == ("b",)
    assert g["b"].reads == frozenset({"a"})
    assert g.roots == ["a"] and g.sinks == ["b"]


def test_cycle_unknown_parent_and_bad_template_are_all_reported_together() -> None:
    found = problems_of(
        graph(
            {"id": "a", "after": ["c"], "tool": "noop"},
            {"id": "b", "after": ["a"], "tool": "noop"},
            {"id": "c", "after": ["b"], "tool": "noop"},
            {"id": "summarize", "tool": "noop"},
            {"id": "d", "after": ["sumarize"], "prompt": "{{ nodes.a.output "},
        )
    )
    assert (
        "nodes[4].after: node 'd' waits for unknown node 'sumarize' (did you mean 'summarize'?)"
        in found
    )
    assert any(
        "cycle: a -> b -> c -> a" in p
        or "cycle: b -> c -> a -> b" in p
        or "cycle: c -> a -> b -> c" in p
        for p in found
    )
    assert any(p.startswith("nodes[4].prompt: does not parse") for p in found)


def test_cycle_is_reported_as_its_path() -> None:
    found = problems_of(
        graph(
            {"id": "x", "after": ["y"], "tool": "noop"}, {"id": "y", "after": ["x"], "tool": "noop"}
        )
    )
    assert found == ["nodes[0].after: cycle: x -> y -> x"] or found == [
        "nodes[1].after: cycle: y -> x -> y"
    ]


def test_duplicate_ids_and_self_dependency_are_named() -> None:
    found = problems_of(
        graph({"id": "a", "tool": "noop"}, {"id": "a", "after": ["a"], "tool": "noop"})
    )
    assert "nodes[1].id: duplicate id 'a' (first used by nodes[0])" in found
    assert "nodes[1].after: node 'a' waits for itself" in found


def test_template_may_read_only_ancestors() -> None:
    found = problems_of(
        graph(
            {"id": "a", "tool": "noop"},
            {"id": "b", "tool": "noop"},
            {
                "id": "c",
                "after": ["a"],
                "prompt": "{{ nodes.b.output }} {{ nodes.zz.output }} {{ secrets }}",
            },
        )
    )
    assert (
        "nodes[2].prompt: refers to node 'b', which is not an ancestor of 'c': add it to 'after'"
        in found
    )
    assert any(p.startswith("nodes[2].prompt: refers to unknown node 'zz'") for p in found)
    assert (
        "nodes[2].prompt: refers to 'secrets'; templates may read only 'input' and 'nodes.<id>'"
        in found
    )


def test_when_and_args_are_checked_like_prompts() -> None:
    found = problems_of(
        graph(
            {"id": "a", "tool": "noop", "args": {"x": ["{{ nodes.b.output }}"]}},
            {"id": "b", "tool": "noop", "when": "nodes.a.output >"},
        )
    )
    assert (
        "nodes[0].args.x[0]: refers to node 'b', which is not an ancestor of 'a': add it to 'after'"
        in found
    )
    assert any(p.startswith("nodes[1].when: does not parse") for p in found)


def test_grandparents_are_readable_ancestors() -> None:
    g = load_graph(
        graph(
            {"id": "a", "tool": "noop"},
            {"id": "b", "after": ["a"], "tool": "noop"},
            {"id": "c", "after": ["b"], "prompt": "{{ nodes['a'].output }}"},
        ),
        tools=TOOLS,
        model_known=known_model,
    )
    assert g["c"].reads == frozenset({"a"})


def test_ranges_and_unknown_fields_name_the_field_and_the_value() -> None:
    found = problems_of(
        graph(
            {"id": "a", "tool": "noop", "retry": {"max_attempts": 50}, "timeout_s": 0},
            {"id": "B!", "tool": "noop", "colour": "red"},
        )
    )
    assert (
        "nodes[0].retry.max_attempts: Input should be less than or equal to 20 (found 50)" in found
    )
    assert "nodes[0].timeout_s: Input should be greater than or equal to 1 (found 0)" in found
    assert any(p.startswith("nodes[1].id: String should match pattern") for p in found)
    assert "nodes[1].colour: unknown field" in found


def test_node_must_be_exactly_one_of_tool_or_agent() -> None:
    found = problems_of(graph({"id": "a", "tool": "noop", "prompt": "hi"}, {"id": "b"}))
    assert sum("exactly one of 'tool'" in p for p in found) == 2


def test_unknown_tool_and_model_are_rejected_with_suggestions() -> None:
    found = problems_of(
        graph(
            {"id": "a", "tool": "extract_function"}, {"id": "b", "prompt": "hi", "model": "gpt-4"}
        )
    )
    assert any(
        p.startswith(
            "nodes[0].tool: unknown tool 'extract_function' (did you mean 'extract_functions'?)"
        )
        for p in found
    )
    assert (
        "nodes[1].model: unknown model 'gpt-4': expected a Gemini model (gemini-...) or 'echo'"
        in found
    )


def test_agent_without_any_model_is_rejected() -> None:
    found = problems_of({"name": "g", "nodes": [{"id": "a", "prompt": "hi"}]})
    assert found == ["nodes[0].model: an agent node needs a model (here or in 'defaults')"]


def test_a_bad_graph_name_is_reported_with_the_pattern() -> None:
    found = problems_of({"name": "Bad Name", "nodes": [{"id": "a", "tool": "noop"}]})
    assert any(p.startswith("name: String should match pattern") for p in found)


def test_a_graph_over_the_node_limit_is_refused_alone_before_the_costly_checks() -> None:
    found = problems_of(
        {"name": "Bad Name", "nodes": [{"id": f"n{i}", "tool": "noop"} for i in range(2001)]}
    )
    assert found == ["nodes: has 2,001 nodes; the limit is 2,000"]


def test_invalid_input_schema_is_reported() -> None:
    found = problems_of(graph({"id": "a", "tool": "noop"}, input={"type": "nonsense"}))
    assert any(p.startswith("input.type: not a valid JSON Schema") for p in found)


def test_run_input_is_checked_against_the_graph_schema() -> None:
    g = load_graph(
        graph(
            {"id": "a", "tool": "noop"},
            input={
                "type": "object",
                "required": ["code"],
                "properties": {"code": {"type": "string"}, "n": {"type": "integer"}},
            },
        ),
        tools=TOOLS,
    )
    validate_input(g, {"code": "x"})
    with pytest.raises(InputInvalid) as caught:
        validate_input(g, {"n": "three"})
    messages = [str(p) for p in caught.value.problems]
    assert "input: 'code' is a required property" in messages
    assert "input.n: 'three' is not of type 'integer'" in messages


def test_oversized_input_is_rejected_before_anything_runs() -> None:
    g = load_graph(graph({"id": "a", "tool": "noop"}), tools=TOOLS)
    with pytest.raises(InputInvalid, match="the limit is"):
        validate_input(g, {"blob": "x" * (11 * 1024 * 1024)})


# ---- approval ---------------------------------------------------------------------------------


def test_an_approval_node_and_a_pure_gate_are_valid() -> None:
    g = load_graph(
        graph(
            {"id": "a", "tool": "noop"},
            {
                "id": "b",
                "after": ["a"],
                "prompt": "draft",
                "approval": {
                    "message": "send {{ output }} from {{ nodes.a.output }}?",
                    "timeout_s": 600,
                    "approvers": ["ann@example.com", "uid-7"],
                },
            },
            {"id": "gate", "after": ["b"], "approval": {"message": "go?"}},
        ),
        tools=TOOLS,
        model_known=known_model,
    )
    assert g["b"].kind == "agent" and g["gate"].kind == "gate"
    assert g["b"].approval is not None and g["b"].approval.timeout_s == 600
    assert g["b"].reads == frozenset({"a"})
    assert g["gate"].approval is not None and g["gate"].approval.timeout_s == 86400


def test_approval_settings_are_checked_and_named() -> None:
    found = problems_of(
        graph(
            {"id": "a", "tool": "noop", "approval": {"timeout_s": 5}},
            {"id": "b", "tool": "noop", "approval": {"message": "x", "timeout_s": 0.5}},
            {"id": "c", "tool": "noop", "approval": {"message": "x", "timeout_s": 3e6}},
            {"id": "d", "tool": "noop", "approval": {"message": "x", "approvers": ["a b"]}},
            {"id": "e", "tool": "noop", "approval": {"message": "{{ secret }}"}},
            {"id": "f", "tool": "noop", "approval": {"message": "{{ nodes.g.output }}"}},
            {"id": "g", "tool": "noop"},
        )
    )
    text = "\n".join(found)
    assert "nodes[0].approval.message" in text and "Field required" in text
    assert "nodes[1].approval.timeout_s" in text
    assert "nodes[2].approval.timeout_s" in text
    assert "'a b' is not a principal" in text
    assert "nodes[4].approval.message: refers to 'secret'" in text
    assert "nodes[5].approval.message: refers to node 'g', which is not an ancestor" in text


def test_a_node_with_neither_work_nor_approval_is_still_refused() -> None:
    assert any("exactly one of 'tool'" in p for p in problems_of(graph({"id": "a"})))
