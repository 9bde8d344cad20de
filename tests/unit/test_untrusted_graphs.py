"""A graph, an input or a message from someone we do not trust costs a bounded amount and
is refused with a problem that names the field (docs/security.md).

The timeouts on these tests are generous bounds, not measurements: without the limits,
each of these inputs runs for minutes or exhausts memory.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentgraph.core.documents import MAX_DEPTH, check_depth, parse_json, parse_yaml
from agentgraph.core.errors import (
    GraphInvalid,
    InputInvalid,
    MalformedMessage,
    RequestInvalid,
    TemplateProblem,
)
from agentgraph.core.messages import NodeFinished, NodeReady, decode
from agentgraph.core.templates import render
from agentgraph.core.validate import MAX_EDGES, load_graph, validate_input

pytestmark = pytest.mark.timeout(20)


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document, tools=["noop"], model_known=lambda m: True)
    return [str(p) for p in caught.value.problems]


def one_node(**node: Any) -> dict[str, Any]:
    return {"name": "g", "nodes": [{"id": "a", **node}]}


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback that records every path it is asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


# ---- schemas never fetch, and their patterns cannot backtrack -----------------------------


def test_a_remote_ref_in_the_input_schema_is_refused_and_never_fetched(
    loopback_server: tuple[str, list[str]],
) -> None:
    url, asked = loopback_server
    document = {
        "name": "g",
        "input": {"type": "object", "properties": {"x": {"$ref": f"{url}/x.json"}}},
        "nodes": [{"id": "a", "tool": "noop"}],
    }
    found = problems_of(document)
    assert len(found) == 1 and found[0].startswith("input.properties.x.$ref: refers to")
    assert asked == []


def test_a_remote_ref_in_an_output_schema_is_refused_and_never_fetched(
    loopback_server: tuple[str, list[str]],
) -> None:
    url, asked = loopback_server
    document = one_node(prompt="p", model="echo", output="json", output_schema={"$ref": url})
    assert [p.split(":")[0] for p in problems_of(document)] == ["nodes[0].output_schema.$ref"]
    assert asked == []


def test_references_inside_the_schema_still_work() -> None:
    schema = {
        "$defs": {"code": {"type": "string", "minLength": 1}},
        "type": "object",
        "properties": {"code": {"$ref": "#/$defs/code"}},
    }
    graph = load_graph({"name": "g", "input": schema, "nodes": [{"id": "a", "tool": "noop"}]})
    validate_input(graph, {"code": "x"})
    with pytest.raises(InputInvalid, match=r"input\.code"):
        validate_input(graph, {"code": ""})


def test_a_catastrophic_pattern_costs_nothing_on_re2() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
    graph = load_graph({"name": "g", "input": schema, "nodes": [{"id": "a", "tool": "noop"}]})
    with pytest.raises(InputInvalid, match=r"input\.x"):
        validate_input(graph, {"x": "a" * 5000 + "b"})


def test_a_pattern_re2_cannot_run_is_a_validation_problem_naming_the_field() -> None:
    schema = {"type": "object", "patternProperties": {"(a)\\1": {"type": "string"}}}
    found = problems_of({"name": "g", "input": schema, "nodes": [{"id": "a", "tool": "noop"}]})
    assert [p.split(":")[0] for p in found] == ["input.patternProperties"]


# ---- documents: aliases, nesting, size, edges ---------------------------------------------


def test_a_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + previous] * 9)}]\n"
    with pytest.raises(RequestInvalid, match="aliases"):
        parse_yaml(bomb, "graph.yaml")


def test_json_nested_100000_deep_is_a_problem_not_a_crash() -> None:
    with pytest.raises(RequestInvalid, match=f"nested deeper than {MAX_DEPTH}"):
        parse_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RequestInvalid, match=f"nested deeper than {MAX_DEPTH}"):
        parse_yaml("[" * 100_000 + "]" * 100_000)


def test_a_deeply_nested_graph_or_input_names_where() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    assert problems_of(one_node(tool="noop", args={"v": deep}))[0].startswith(
        "graph.nodes[0].args.v"
    )
    graph = load_graph(one_node(tool="noop"))
    with pytest.raises(InputInvalid, match=f"nested deeper than {MAX_DEPTH}"):
        validate_input(graph, {"v": deep})


def test_too_many_edges_is_refused_alone() -> None:
    parents = [{"id": f"p{i}", "tool": "noop"} for i in range(1000)]
    children = [
        {"id": f"c{j}", "tool": "noop", "after": [f"p{i}" for i in range(1000)]} for j in range(21)
    ]
    found = problems_of({"name": "g", "nodes": parents + children})
    assert found == [f"nodes: has 21,000 edges ('after' entries); the limit is {MAX_EDGES:,}"]


def test_a_10000_node_graph_is_refused_by_its_size_alone() -> None:
    found = problems_of({"name": "g", "nodes": [{"id": f"n{i}"} for i in range(10_000)]})
    assert found == ["nodes: has 10,000 nodes; the limit is 2,000"]


def test_a_2000_node_chain_validates_in_linear_work() -> None:
    nodes = [{"id": "n0", "tool": "noop"}] + [
        {
            "id": f"n{i}",
            "tool": "noop",
            "after": [f"n{i - 1}"],
            "args": {"v": f"{{{{ nodes.n{i - 1}.output }}}}"},
        }
        for i in range(1, 2000)
    ]
    graph = load_graph({"name": "g", "nodes": nodes}, tools=["noop"])
    assert graph["n1999"].reads == frozenset({"n1998"})


# ---- templates: refused at validation where it can be known, bounded at render ----------


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ("{{ 'a' * 10**9 }}", "repeating a value"),
        ("{{ ''.__class__.__mro__ }}", "'__class__', which the sandbox refuses"),
        ("{{ input.x.__init__ }}", "'__init__', which the sandbox refuses"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "loops would run 10,000,000,000 times",
        ),
        ("{{ 10 ** 100000000 }}", "too large a number"),
    ],
)
def test_what_the_sandbox_would_refuse_is_refused_at_validation(prompt: str, says: str) -> None:
    found = problems_of(one_node(prompt=prompt, model="echo"))
    assert any(p.startswith("nodes[0].prompt:") and says in p for p in found), found


@pytest.mark.parametrize(
    "template",
    [
        "{{ input.s * input.n }}",
        "{{ input.s|center(input.n) }}",
        "{{ ('%' ~ input.n ~ 's')|format('a') }}",
        "{% for i in input.rows %}{% for j in input.rows %}{{ i }}{% endfor %}{% endfor %}",
        "{{ input.s.format(1) }}",
        "{{ range(input.n) }}",
    ],
)
def test_a_render_driven_by_data_is_bounded(template: str) -> None:
    data = {"s": "ab", "n": 10**9, "rows": list(range(20_000))}
    with pytest.raises(TemplateProblem):
        render(template, {"input": data, "nodes": {}})


# ---- ids that Firestore reserves, and messages that no redelivery can fix ---------------


def test_a_node_id_firestore_reserves_is_refused() -> None:
    assert problems_of(one_node(id="__x__", tool="noop"))[0].startswith("nodes[0].id:")


@pytest.mark.parametrize(
    "data",
    [
        json.dumps({"run_id": "__poison__", "node_id": "a", "attempt": 1}),
        json.dumps({"run_id": "r", "node_id": "__x__", "attempt": 1}),
        "[" * 100_000 + "]" * 100_000,
        b"\xff\xfe not json",
    ],
)
def test_a_poison_node_ready_is_malformed(data: str | bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(NodeReady, data)


def test_a_poison_node_finished_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode(NodeFinished, json.dumps({"run_id": "__x__", "node_id": "a", "status": "failed"}))


def test_a_graph_document_over_4_mib_is_refused_alone() -> None:
    nodes = [{"id": f"n{i}", "prompt": "x" * 99_000, "model": "echo"} for i in range(45)]
    found = problems_of({"name": "g", "nodes": nodes})
    assert len(found) == 1 and found[0].startswith("graph: is 4,")
    assert "the limit is 4,194,304" in found[0]


# ---- the fast paths keep the same guarantees ---------------------------------------------


@pytest.mark.parametrize(
    "text", ["plain", "two\nlines\n", "ends with two\n\n", "  spaced  ", "", "\n", "a}b%c#"]
)
def test_text_without_markup_renders_as_jinja_would(text: str) -> None:
    from agentgraph.core.templates import _ENV

    assert render(text, {"input": None, "nodes": {}}) == _ENV.from_string(text).render()


def test_a_macro_recursing_without_a_loop_is_still_bounded() -> None:
    template = "{% macro f() %}{{ f() }}{{ f() }}{% endmacro %}{{ f() }}"
    with pytest.raises(TemplateProblem):
        render(template, {"input": None, "nodes": {}})


def test_yaml_read_through_libyaml_is_what_the_safe_loader_reads() -> None:
    import yaml

    text = "name: g\nnodes:\n- {id: a, tool: noop, args: {n: 1, f: 1.5, b: yes, d: 2024-01-02}}\n"
    assert parse_yaml(text) == yaml.safe_load(text)


def test_without_libyaml_aliases_and_depth_are_refused_all_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentgraph.core import documents

    monkeypatch.setattr(documents, "_C_LOADER", None)
    with pytest.raises(RequestInvalid, match="aliases"):
        parse_yaml("a: &a [1]\nb: *a\n")
    with pytest.raises(RequestInvalid, match=f"nested deeper than {MAX_DEPTH}"):
        parse_yaml("[" * 100_000 + "]" * 100_000)
    assert parse_yaml("a: [1, 2]") == {"a": [1, 2]}


@pytest.mark.parametrize("mapping", [False, True])
def test_yaml_nested_max_depth_levels_is_read_and_one_more_is_refused(mapping: bool) -> None:
    def nested(levels: int) -> str:
        if mapping:
            return "{a: " * levels + "x" + "}" * levels
        return "[" * levels + "x" + "]" * levels

    assert check_depth(parse_yaml(nested(MAX_DEPTH))) is None
    with pytest.raises(RequestInvalid, match=f"nested deeper than {MAX_DEPTH}"):
        parse_yaml(nested(MAX_DEPTH + 1))


def test_an_input_nested_100000_deep_is_invalid_input_not_a_crash() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    graph = load_graph(one_node(tool="noop"))
    with pytest.raises(InputInvalid, match=f"nested deeper than {MAX_DEPTH}"):
        validate_input(graph, deep)
