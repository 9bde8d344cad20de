"""Templates and conditions are sandboxed, strict, and keep native types in tool args."""

from __future__ import annotations

import pytest

from agentgraph.core.errors import TemplateProblem
from agentgraph.core.templates import condition_holds, references, render, render_value

CONTEXT = {
    "input": {"code": "x = 1", "n": 3},
    "nodes": {"a": {"output": {"count": 2, "names": ["f", "g"]}}},
}


def test_single_expression_args_keep_their_type() -> None:
    assert render_value({"names": "{{ nodes.a.output.names }}", "n": "{{ input.n }}"}, CONTEXT) == {
        "names": ["f", "g"],
        "n": 3,
    }


def test_mixed_text_renders_to_a_string_with_json_for_containers() -> None:
    assert render("names: {{ nodes.a.output.names }}", CONTEXT) == 'names: ["f", "g"]'


def test_missing_values_are_errors_not_empty_strings() -> None:
    with pytest.raises(TemplateProblem, match="has no attribute 'missing'"):
        render("{{ input.missing }}", CONTEXT)


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(TemplateProblem, match="unsafe"):
        render("{{ input.__class__.__mro__ }}", CONTEXT)
    with pytest.raises(TemplateProblem):
        condition_holds("().__class__.__bases__[0].__subclasses__()", CONTEXT)


def test_conditions_evaluate_to_booleans() -> None:
    assert condition_holds("nodes.a.output.count > 0", CONTEXT)
    assert not condition_holds("input.n > 5", CONTEXT)


def test_references_are_found_statically_in_both_notations() -> None:
    refs = references("{{ nodes.a.output }} {% for x in nodes['b-c'].output %}{{ x }}{% endfor %}")
    assert refs.nodes == {"a", "b-c"} and not refs.uses_input and not refs.other_names
    assert references("nodes[input.k].output", expression=True).dynamic_node_access


def test_a_field_named_like_a_dict_method_reads_the_field() -> None:
    output = {"items": ["a", "b"], "keys": 2, "values": "v", "update": True}
    values = {"nodes": {"plan": {"output": output}}}
    assert render_value("{{ nodes.plan.output.items }}", values) == ["a", "b"]
    assert render_value("{{ nodes.plan.output.keys }}", values) == 2
    assert render("{{ nodes.plan.output.values }}", values) == "v"
    assert condition_holds("nodes.plan.output.update", values) is True


def test_dict_methods_still_work_on_mappings_without_such_a_field() -> None:
    values = {"input": {"a": 1, "b": 2}}
    assert render("{% for k, v in input.items() %}{{ k }}={{ v }};{% endfor %}", values) == (
        "a=1;b=2;"
    )
    assert render_value("{{ input.get('c', 3) }}", values) == 3
