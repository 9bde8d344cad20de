"""Runs that grow: the format's validation, instance ids, and the pure decisions of
core/grow.py (what a controller adds, how it ends)."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.core import grow, stored_subgraphs
from agentgraph.core.errors import ExpansionError, GraphInvalid, UnknownAgent
from agentgraph.core.graph import Graph
from agentgraph.core.records import NodeError, NodeRecord
from agentgraph.core.status import NodeStatus
from agentgraph.core.validate import MAX_NESTING, load_graph

S = NodeStatus


def graph(*nodes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "g", "defaults": {"model": "echo"}, "nodes": list(nodes), **top}


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document)
    return [str(p) for p in caught.value.problems]


def tool(node_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "tool": "t", **extra}


# ---- validation -------------------------------------------------------------------------------


def test_map_item_and_index_are_readable_only_where_the_node_maps() -> None:
    found = problems(graph(tool("a"), {"id": "b", "after": ["a"], "prompt": "{{ item }}"}))
    assert found == [
        "nodes[1].prompt: refers to 'item'; templates may read only 'input' and 'nodes.<id>'"
    ]
    load_graph(
        graph(
            tool("a"),
            {
                "id": "b",
                "after": ["a"],
                "map": "nodes.a.output",
                "prompt": "{{ item }} {{ index }}",
            },
        )
    )


def test_a_map_expression_reads_only_ancestors_and_not_its_own_item() -> None:
    found = problems(graph(tool("a"), {"id": "b", "map": "{{ nodes.a.output }}", "prompt": "x"}))
    assert found == [
        "nodes[1].map: refers to node 'a', which is not an ancestor of 'b': add it to 'after'"
    ]
    found = problems(graph({"id": "b", "map": "item", "prompt": "x"}))
    assert found == [
        "nodes[0].map: refers to 'item'; templates may read only 'input' and 'nodes.<id>'"
    ]


def test_a_map_expression_that_does_not_parse_is_named() -> None:
    found = problems(graph({"id": "b", "map": "input.(", "prompt": "x"}))
    assert len(found) == 1 and found[0].startswith("nodes[0].map: does not parse")


def test_a_loop_needs_max_iterations_of_at_most_1000() -> None:
    missing = problems(graph({"id": "l", "loop": {"until": "output"}, "prompt": "x"}))
    assert missing == ["nodes[0].loop.max_iterations: Field required"]
    too_many = problems(
        graph({"id": "l", "loop": {"until": "output", "max_iterations": 1001}, "prompt": "x"})
    )
    assert too_many == [
        "nodes[0].loop.max_iterations: Input should be less than or equal to 1000 (found 1001)"
    ]


def test_until_reads_the_iteration_output_and_loop_but_no_nodes() -> None:
    found = problems(
        graph(
            tool("a"),
            {
                "id": "l",
                "after": ["a"],
                "loop": {"until": "nodes.a.output and item", "max_iterations": 3},
                "prompt": "{{ loop.iteration }} {{ loop.previous }}",
            },
        )
    )
    assert (
        "nodes[1].loop.until: reads 'nodes'; 'until' decides on the iteration's 'output'" in found
    )
    assert any(p.startswith("nodes[1].loop.until: refers to 'item'") for p in found)


def test_a_node_takes_map_or_loop_not_both() -> None:
    found = problems(
        graph(
            {
                "id": "x",
                "map": "input",
                "loop": {"until": "true", "max_iterations": 2},
                "prompt": "p",
            }
        )
    )
    assert len(found) == 1 and "'map' or 'loop', not both" in found[0]


def test_max_concurrency_needs_a_map() -> None:
    found = problems(graph({"id": "x", "max_concurrency": 2, "prompt": "p"}))
    assert found == ["nodes[0]: 'max_concurrency' needs 'map'"]


def test_subgraph_templates_read_inner_nodes_and_the_input_only() -> None:
    found = problems(
        graph(
            tool("outer"),
            {
                "id": "s",
                "after": ["outer"],
                "nodes": [
                    tool("a"),
                    {
                        "id": "b",
                        "after": ["a"],
                        "prompt": "{{ nodes.a.output }} {{ nodes.outer.output }}",
                    },
                ],
            },
        )
    )
    assert found == ["nodes[1].nodes[1].prompt: refers to unknown node 'outer'"]


def test_a_subgraph_with_several_sinks_needs_an_output_template() -> None:
    found = problems(graph({"id": "s", "nodes": [tool("a"), tool("b")]}))
    assert len(found) == 1 and found[0].startswith("nodes[0].output: the subgraph has 2 sinks")
    load_graph(
        graph({"id": "s", "nodes": [tool("a"), tool("b")], "output": "{{ nodes.a.output }}"})
    )
    bad = problems(graph({"id": "s", "nodes": [tool("a")], "output": "{{ nodes.zz.output }}"}))
    assert bad == ["nodes[0].output: refers to 'zz', which is not a node of the subgraph"]


def test_a_subgraph_holds_no_call_of_its_own() -> None:
    found = problems(graph({"id": "s", "nodes": [tool("a")], "prompt": "p"}))
    assert found == ["nodes[0]: 'prompt' is for a tool or agent node, not a subgraph"]


def test_inner_ids_are_checked_in_their_own_scope() -> None:
    found = problems(graph({"id": "s", "nodes": [tool("a"), tool("a"), tool("c", after=["zz"])]}))
    assert "nodes[0].nodes[1].id: duplicate id 'a' (first used by nodes[0].nodes[0])" in found
    assert "nodes[0].nodes[2].after: node 'c' waits for unknown node 'zz'" in found


def test_subgraphs_nest_at_most_the_documented_depth() -> None:
    inner: dict[str, Any] = tool("leaf")
    for level in range(MAX_NESTING):
        inner = {"id": f"s{level}", "nodes": [inner]}
    found = problems(graph(inner))
    assert len(found) == 1 and f"nest at most {MAX_NESTING} levels" in found[0]
    inner = tool("leaf")
    for level in range(MAX_NESTING - 1):
        inner = {"id": f"s{level}", "nodes": [inner]}
    load_graph(graph(inner))


def test_a_stored_subgraph_must_be_resolved_before_validation() -> None:
    found = problems(graph({"id": "s", "graph": "research@2"}))
    assert len(found) == 1 and "'research@2', which was not resolved" in found[0]


def test_user_ids_cannot_look_like_instances() -> None:
    for bad in ("a[1]", "a@1", "a/b"):
        found = problems(graph(tool(bad)))
        assert found and found[0].startswith("nodes[0].id")


def test_agent_needs_declared_profiles_and_a_prompt() -> None:
    found = problems(graph({"id": "x", "map": "input", "agent": "{{ item.agent }}", "prompt": "p"}))
    assert found == ["nodes[0].agent: the graph declares no 'agents:' profiles"]
    found = problems(graph(tool("x", agent="a"), agents={"a": {}}))
    assert found == ["nodes[0]: 'agent' picks a profile for an agent node: it needs 'prompt'"]


def test_output_schema_agents_is_the_plan_schema_of_the_profiles() -> None:
    loaded = load_graph(
        graph(
            {"id": "plan", "prompt": "p", "output": "json", "output_schema": "agents"},
            agents={"writer": {"model": "echo"}, "critic": {}},
        )
    )
    schema = loaded["plan"].output_schema
    assert schema is not None
    assert schema["properties"]["tasks"]["items"]["properties"]["agent"]["enum"] == [
        "critic",
        "writer",
    ]


# ---- instance ids -----------------------------------------------------------------------------


def _nested() -> Graph:
    return load_graph(
        graph(
            tool("src"),
            {
                "id": "research",
                "after": ["src"],
                "map": "nodes.src.output",
                "nodes": [
                    tool("search"),
                    {
                        "id": "summarize",
                        "after": ["search"],
                        "loop": {"until": "true", "max_iterations": 3},
                        "prompt": "{{ item }} {{ loop.iteration }}",
                    },
                ],
            },
            tool("end", after=["research"]),
        )
    )


def test_an_instance_id_resolves_to_its_template_in_its_scope() -> None:
    g = _nested()
    item = grow.instance_node(g, "research[2]")
    assert item is not None and item.map is None and item.body is not None
    assert item.children == ("research",) and item.parents == ()
    inner = grow.instance_node(g, "research[2]/search")
    assert inner is not None and inner.scope == "research[2]/"
    assert inner.children == ("research[2]/summarize",)
    loop = grow.instance_node(g, "research[2]/summarize")
    assert loop is not None and loop.loop is not None and loop.children == ("research[2]",)
    iteration = grow.instance_node(g, "research[2]/summarize@3")
    assert iteration is not None and iteration.loop is None
    assert iteration.children == ("research[2]/summarize",)


@pytest.mark.parametrize(
    "bad", ["nope[1]", "research/search", "src[1]", "research[1]/nope", "end@1", "research[01]"]
)
def test_ids_that_name_nothing_resolve_to_none(bad: str) -> None:
    assert grow.instance_node(_nested(), bad) is None


def test_unit_of_names_the_controller() -> None:
    assert grow.unit_of("research[2]/summarize@3") == (
        "research[2]/summarize",
        grow.Segment("summarize", None, 3),
    )
    assert grow.unit_of("research[2]") == ("research", grow.Segment("research", 2, None))
    assert grow.unit_of("research[2]/search") is None


# ---- expanding and deciding ---------------------------------------------------------------------


def test_a_map_with_max_concurrency_starts_only_the_first_lanes() -> None:
    g = load_graph(graph({"id": "m", "map": "input", "max_concurrency": 2, "prompt": "p"}))
    expansion = grow.expand_map("r", g["m"], ["a", "b", "c"], {"loop": {"iteration": 1}})
    assert [r.status for r in expansion.records] == [S.READY, S.READY, S.WAITING]
    assert expansion.records[2].meta == {
        "bindings": {"loop": {"iteration": 1}, "item": "c", "index": 2}
    }
    assert expansion.expect == 3


def test_a_map_refuses_a_non_list_and_too_many_items() -> None:
    g = load_graph(graph({"id": "m", "map": "input", "prompt": "p"}))
    with pytest.raises(ExpansionError, match="not a list"):
        grow.map_items(g["m"], {"a": 1})
    with pytest.raises(ExpansionError, match="the limit is 10,000"):
        grow.map_items(g["m"], list(range(10_001)))
    with pytest.raises(ExpansionError, match="at most 50,000"):
        grow.check_capacity(g["m"], 45_000, 5_001)


def test_map_outcome_keeps_input_order_and_follows_on_error() -> None:
    def record(i: int, status: NodeStatus, output: Any = None) -> NodeRecord:
        error = NodeError("E", "bad") if status == S.FAILED else None
        return NodeRecord("r", f"m[{i}]", status, [], ["m"], output=output, error=error)

    items = [record(0, S.SUCCEEDED, "a"), record(1, S.FAILED), record(2, S.SUCCEEDED, "c")]
    failing = load_graph(graph({"id": "m", "map": "input", "prompt": "p"}))["m"]
    outcome = grow.map_outcome(failing, items)
    assert outcome.status == S.FAILED and outcome.error is not None
    assert outcome.error.message == "item 1 of 'm' failed: E: bad"
    going_on = load_graph(graph({"id": "m", "map": "input", "prompt": "p", "on_error": "continue"}))
    outcome = grow.map_outcome(going_on["m"], items)
    assert outcome.status == S.SUCCEEDED
    assert outcome.output[0] == "a" and outcome.output[1]["error"]["message"] == "bad"


def test_loop_step_continues_ends_or_runs_out() -> None:
    def loop(on_exhausted: str = "fail") -> Any:
        spec = {"until": "output == 'done'", "max_iterations": 2, "on_exhausted": on_exhausted}
        return load_graph(graph({"id": "l", "loop": spec, "prompt": "p"}))["l"]

    def finished(output: Any) -> NodeRecord:
        return NodeRecord("r", "l@1", S.SUCCEEDED, [], ["l"], output=output)

    assert grow.loop_step(loop(), 1, finished("no"), {}, None) == grow.NextIteration(2, "no")
    done = grow.loop_step(loop(), 1, finished("done"), {}, None)
    assert isinstance(done, grow.Outcome) and done.output == "done"
    out = grow.loop_step(loop(), 2, finished("no"), {}, None)
    assert isinstance(out, grow.Outcome) and out.error is not None
    assert out.error.type == "LoopExhausted"
    kept = grow.loop_step(loop("succeed"), 2, finished("no"), {}, None)
    assert isinstance(kept, grow.Outcome) and kept.status == S.SUCCEEDED


def test_an_unknown_profile_is_an_error_naming_the_known_ones() -> None:
    g = load_graph(
        graph(
            {"id": "x", "map": "input", "agent": "{{ item }}", "prompt": "p"},
            agents={"writer": {"model": "echo", "system": "You write."}},
        )
    )
    node = grow.with_profile(g["x"], g, "writer")
    assert node.system == "You write." and node.agent is None
    with pytest.raises(UnknownAgent, match=r"'poet' is not one of the graph's profiles \(writer\)"):
        grow.with_profile(g["x"], g, "poet")


def test_stored_subgraph_refs_are_inlined_with_their_defaults() -> None:
    outer = {"name": "o", "nodes": [{"id": "s", "graph": "pair@2", "map": "input"}]}
    assert stored_subgraphs.graph_refs(outer) == {("pair", 2)}
    stored = {"defaults": {"model": "echo"}, "nodes": [{"id": "a", "prompt": "p"}]}
    inlined = stored_subgraphs.inline_graph_refs(outer, {("pair", 2): stored})
    assert inlined["nodes"] == [
        {"id": "s", "map": "input", "nodes": [{"model": "echo", "id": "a", "prompt": "p"}]}
    ]
    assert outer["nodes"][0]["graph"] == "pair@2"  # the caller's document is not changed


def test_a_constant_profile_name_is_checked_before_the_run() -> None:
    found = problems(graph({"id": "x", "agent": "writr", "prompt": "p"}, agents={"writer": {}}))
    assert found == ["nodes[0].agent: unknown profile 'writr' (did you mean 'writer'?)"]


def test_expand_gives_up_the_lease_and_settle_applies_only_to_an_expanded_node() -> None:
    from agentgraph.core import transitions
    from agentgraph.core.records import Outcome

    running = NodeRecord("r", "m", S.RUNNING, [], [], lease_until=50.0, meta={"bindings": {}})
    change = transitions.expand(running, 1, 7, now=10.0)
    assert change is not None and change.moves == ((S.RUNNING, S.EXPANDED),)
    expanded = change.applied(running)
    assert expanded.lease_until is None and expanded.meta == {"bindings": {}, "expect": 7}
    assert transitions.expand(expanded, 1, 7, now=11.0) is None  # a repeat does nothing
    outcome = Outcome(S.SUCCEEDED, output=[1])
    assert transitions.settle(running, outcome, now=12.0) is None
    settled = transitions.settle(expanded, outcome, now=12.0)
    assert settled is not None and settled.fields["output"] == [1]
    assert transitions.settle(settled.applied(expanded), outcome, now=13.0) is None
    assert transitions.cancel(expanded, now=14.0) is not None  # a run's cancel ends it


def test_show_groups_a_large_map_and_marks_loop_iterations() -> None:
    from rich.console import Console

    from agentgraph.core.records import RunRecord
    from agentgraph.core.status import RunStatus
    from agentgraph.view import print_run_tree

    def node(node_id: str, status: NodeStatus = S.SUCCEEDED, **extra: Any) -> NodeRecord:
        return NodeRecord("r", node_id, status, extra.pop("parents", []), [], **extra)

    failed = node("m[3]", S.FAILED, error=NodeError("ValueError", "bad item"))
    records = [
        node("m", S.FAILED),
        *(node(f"m[{i}]") for i in range(3)),
        failed,
        *(node(f"m[{i}]") for i in range(4, 30)),
        node("l"),
        node("l@1"),
        node("l@2"),
    ]
    run = RunRecord("r", "g", {}, None, RunStatus.FAILED, 0.0, len(records))
    console = Console(record=True, width=120)
    print_run_tree(console, run, records)
    text = console.export_text()
    assert "30 items: 1 failed, 29 succeeded" in text
    assert "m[3] failed" in text and "ValueError: bad item" in text and "m[4]" not in text
    assert "l@2 succeeded  iteration 2" in text
