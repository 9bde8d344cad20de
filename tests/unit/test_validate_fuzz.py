"""Validation under fuzzing: whatever document comes in, `load_graph` either returns a graph
or raises GraphInvalid whose every problem names a path and says what is wrong; no other
exception escapes (a graph is untrusted input). A document built valid validates."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgraph.core.errors import GraphInvalid
from agentgraph.core.validate import load_graph

TOOLS = ["noop", "extract_functions"]
FUZZ = settings(
    max_examples=1200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NODE_IDS = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
NAMES = st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def known_model(name: str) -> bool:
    return name == "echo" or name.startswith("gemini-")


def check(document: Any) -> None:
    """The property every document must satisfy, valid or not."""
    try:
        load_graph(document, tools=TOOLS, model_known=known_model)
    except GraphInvalid as invalid:
        assert invalid.problems, "GraphInvalid without a problem"
        for problem in invalid.problems:
            assert isinstance(problem.path, str) and problem.path.strip(), problem
            assert isinstance(problem.message, str) and problem.message.strip(), problem


@st.composite
def valid_graphs(draw: st.DrawFn) -> dict[str, Any]:
    """A DAG with unique ids, parents among earlier nodes, settings within their ranges,
    templates and conditions that read only ancestors."""
    ids = draw(st.lists(NODE_IDS, min_size=1, max_size=8, unique=True))
    nodes: list[dict[str, Any]] = []
    for i, node_id in enumerate(ids):
        after = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=3)) if i else []
        node: dict[str, Any] = {"id": node_id, "after": after}
        if draw(st.booleans()):
            node |= {"tool": draw(st.sampled_from(TOOLS))}
            if after:
                node["args"] = {"x": "{{ nodes['" + after[0] + "'].output }}"}
        else:
            reads = "".join(" {{ nodes['" + p + "'].output }}" for p in after)
            node["prompt"] = "summarise" + reads
            node["temperature"] = draw(st.floats(0, 2))
            node["top_p"] = draw(st.floats(0.01, 1))
        if draw(st.booleans()) and after:
            node["when"] = "nodes['" + after[-1] + "'].status == 'succeeded'"
        node["on_error"] = draw(st.sampled_from(["fail_run", "continue", "skip_downstream"]))
        node["timeout_s"] = draw(st.floats(1, 3600))
        node["retry"] = {
            "max_attempts": draw(st.integers(1, 20)),
            "initial_delay_s": draw(st.floats(0, 3600)),
            "multiplier": draw(st.floats(1, 10)),
        }
        nodes.append(node)
    return {"name": draw(NAMES), "defaults": {"model": "echo"}, "nodes": nodes}


def _set(node: dict[str, Any], key: str, value: Any) -> None:
    node[key] = value


def _add_parent(node: dict[str, Any], parent: Any) -> None:
    """Another parent, even after an earlier break made `after` something else."""
    after = node.get("after")
    node["after"] = [*after, parent] if isinstance(after, list) else [parent]


# Each breaks a valid document in one way: (what, how) with how(document, node, value).
BREAKS: list[tuple[str, Any]] = [
    ("bad id", lambda d, n, v: _set(n, "id", v)),
    ("unknown parent", lambda d, n, v: _add_parent(n, "no-such-node")),
    ("cycle", lambda d, n, v: _set(d["nodes"][0], "after", [d["nodes"][-1].get("id", "a")])),
    ("self edge", lambda d, n, v: _add_parent(n, n.get("id", "a"))),
    ("duplicate id", lambda d, n, v: d["nodes"].append(copy.deepcopy(n))),
    ("temperature", lambda d, n, v: _set(n, "temperature", 2.5)),
    ("timeout", lambda d, n, v: _set(n, "timeout_s", 0)),
    ("attempts", lambda d, n, v: _set(n, "retry", {"max_attempts": 0})),
    ("multiplier", lambda d, n, v: _set(n, "retry", {"multiplier": 11})),
    ("top_p", lambda d, n, v: _set(n, "top_p", 0)),
    ("unclosed template", lambda d, n, v: _set(n, "prompt", "{{ nodes.a.output ")),
    ("unsafe template", lambda d, n, v: _set(n, "prompt", "{{ ''.__class__.__mro__ }}")),
    ("template reads a non-ancestor", lambda d, n, v: _set(n, "prompt", "{{ nodes.zz.output }}")),
    ("bad condition", lambda d, n, v: _set(n, "when", "nodes[")),
    ("unknown tool", lambda d, n, v: _set(n, "tool", "no_such_tool")),
    ("unknown model", lambda d, n, v: _set(n, "model", "gpt-9")),
    ("tool and prompt", lambda d, n, v: n.update(tool="noop", prompt="x")),
    ("neither tool nor prompt", lambda d, n, v: [n.pop(k, None) for k in ("tool", "prompt")]),
    ("after is a string", lambda d, n, v: _set(n, "after", "a")),
    ("wrong type", lambda d, n, v: _set(n, v if isinstance(v, str) else "timeout_s", "soon")),
    ("random value", lambda d, n, v: _set(n, "temperature", v)),
    ("random after", lambda d, n, v: _set(n, "after", v)),
    ("random node", lambda d, n, v: d["nodes"].append(v)),
    ("random nodes", lambda d, n, v: _set(d, "nodes", v)),
    ("random defaults", lambda d, n, v: _set(d, "defaults", v)),
    ("random name", lambda d, n, v: _set(d, "name", v)),
    ("missing id", lambda d, n, v: n.pop("id", None)),
    ("missing name", lambda d, n, v: d.pop("name", None)),
    ("missing nodes", lambda d, n, v: d.pop("nodes", None)),
    ("no nodes", lambda d, n, v: _set(d, "nodes", [])),
    ("extra node field", lambda d, n, v: _set(n, "colour", v)),
    ("extra top field", lambda d, n, v: _set(d, "owner", v)),
    ("deep args", lambda d, n, v: _set(n, "args", _nested(200))),
    ("deep document", lambda d, n, v: _set(d, "description", _nested(500))),
    ("bad pool", lambda d, n, v: _set(n, "pool", "GPU_1")),
    ("bad on_error", lambda d, n, v: _set(n, "on_error", "retry")),
]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@st.composite
def broken_graphs(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(valid_graphs())
    for _ in range(draw(st.integers(1, 3))):
        nodes = document.get("nodes")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, dict) for n in nodes):
            break
        node = draw(st.sampled_from(nodes))
        _what, how = draw(st.sampled_from(BREAKS))
        how(document, node, draw(JSON))
    return document


DOCUMENTS = st.one_of(
    valid_graphs(),
    broken_graphs(),
    broken_graphs(),
    broken_graphs(),
    st.dictionaries(st.sampled_from(["name", "nodes", "defaults", "input", "x"]), JSON),
    JSON,
)


@FUZZ
@given(document=DOCUMENTS)
def test_any_document_validates_or_raises_graph_invalid_with_located_problems(
    document: Any,
) -> None:
    check(document)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(document=valid_graphs())
def test_a_document_built_valid_validates(document: dict[str, Any]) -> None:
    graph = load_graph(document, tools=TOOLS, model_known=known_model)
    assert sorted(graph.nodes) == sorted(n["id"] for n in document["nodes"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(document=valid_graphs(), data=st.data())
def test_a_document_whose_edges_close_a_cycle_is_invalid_at_the_after_field(
    document: dict[str, Any], data: st.DataObject
) -> None:
    nodes = document["nodes"]
    last = data.draw(st.integers(0, len(nodes) - 1))
    nodes[0]["after"] = [*nodes[0]["after"], nodes[last]["id"]]  # nodes[last] follows nodes[0]
    for i in range(1, last + 1):  # make sure it does: a chain nodes[0] -> ... -> nodes[last]
        if nodes[i - 1]["id"] not in nodes[i]["after"]:
            nodes[i]["after"] = [*nodes[i]["after"], nodes[i - 1]["id"]]
    try:
        load_graph(document, tools=TOOLS, model_known=known_model)
    except GraphInvalid as invalid:
        assert any(".after" in p.path and p.node_id for p in invalid.problems), invalid.problems
    else:
        raise AssertionError("a cycle validated")
