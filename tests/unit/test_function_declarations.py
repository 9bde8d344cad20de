"""Registered tools become function declarations, and a model's arguments are checked
against the tool's signature before it runs (tools/declarations.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentgraph.core.errors import GraphInvalid
from agentgraph.core.validate import load_graph
from agentgraph.tools.declarations import declaration, invoke


def word_count(text: str, minimum: int = 1, tags: list[str] | None = None) -> int:
    """Count the words of a text.

    Longer explanation that the model does not need.

    Args:
        text: the text whose words are counted
        minimum: words shorter than this are not counted
    """
    return len([w for w in text.split() if len(w) >= minimum])


async def fetch(url, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    return url


def test_a_declaration_has_the_name_the_docstrings_summary_and_a_schema_of_the_parameters() -> None:
    spec = declaration("word_count", word_count)
    assert spec.name == "word_count"
    assert spec.description == "Count the words of a text."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "the text whose words are counted"},
            "minimum": {
                "type": "integer",
                "default": 1,
                "description": "words shorter than this are not counted",
            },
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["text"],
    }


def test_a_parameter_without_a_hint_takes_any_value_and_a_tool_without_docstring_is_named() -> None:
    spec = declaration("fetch", fetch)
    assert spec.description == "The tool fetch."
    assert spec.parameters["properties"]["url"] == {}
    assert spec.parameters["required"] == ["url"]


def test_arguments_are_converted_by_the_signature_before_the_tool_runs() -> None:
    assert asyncio.run(invoke(word_count, {"text": "a bb ccc", "minimum": "2"})) == 2
    assert asyncio.run(invoke(fetch, {"url": "u"})) == "u"


def test_wrong_arguments_raise_a_type_error_naming_each_problem() -> None:
    with pytest.raises(TypeError) as caught:
        asyncio.run(invoke(word_count, {"txt": "a", "minimum": "many"}))
    message = str(caught.value)
    assert message.startswith("invalid arguments: ")
    assert "text: Missing required argument" in message
    assert "minimum: Input should be a valid integer" in message


def agent(**extra: Any) -> dict[str, Any]:
    return {"id": "a", "model": "echo", "prompt": "p", **extra}


def problems(document: dict[str, Any], tools: list[str] | None = None) -> list[str]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document, tools=tools)
    return [str(p) for p in caught.value.problems]


def test_tools_must_be_registered_and_the_problem_names_the_field() -> None:
    found = problems(
        {"name": "g", "nodes": [agent(tools=["word_count", "wrod_count"])]}, ["word_count"]
    )
    assert found == ["nodes[0].tools[1]: unknown tool 'wrod_count' (did you mean 'word_count'?)"]


def test_tools_in_defaults_are_checked_as_the_defaults_field() -> None:
    document = {"name": "g", "defaults": {"tools": ["nope"]}, "nodes": [agent()]}
    assert problems(document, ["word_count"]) == ["defaults.tools[0]: unknown tool 'nope'"]


def test_a_tool_listed_twice_is_a_problem() -> None:
    found = problems({"name": "g", "nodes": [agent(tools=["t", "t"])]}, ["t"])
    assert found == ["nodes[0].tools[1]: tool 't' is listed twice"]


def test_max_turns_is_between_1_and_100() -> None:
    for bad in (0, 101):
        (found,) = problems({"name": "g", "nodes": [agent(tools=["t"], max_turns=bad)]}, ["t"])
        assert found.startswith("nodes[0].max_turns:")


def test_tools_are_for_agent_nodes_only() -> None:
    node = {"id": "a", "tool": "t", "tools": ["t"]}
    (found,) = problems({"name": "g", "nodes": [node]}, ["t"])
    assert "'tools', 'max_turns' and 'on_max_turns' are for agent nodes" in found


def test_an_agent_inherits_tools_and_turn_settings_from_defaults() -> None:
    document = {
        "name": "g",
        "defaults": {"tools": ["t"], "max_turns": 3, "on_max_turns": "return_last"},
        "nodes": [agent(), {"id": "b", "tool": "t", "after": ["a"]}],
    }
    graph = load_graph(document, tools=["t"])
    assert (graph["a"].tools, graph["a"].max_turns, graph["a"].on_max_turns) == (
        ("t",),
        3,
        "return_last",
    )
    assert graph["b"].tools == ()
    plain = load_graph({"name": "g", "nodes": [agent()]})
    assert (plain["a"].tools, plain["a"].max_turns, plain["a"].on_max_turns) == ((), 10, "fail")
