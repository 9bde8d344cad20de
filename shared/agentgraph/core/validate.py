"""Whole-graph validation: every problem at once, each naming the node and the field.

Nothing is written anywhere until `load_graph` returns, so an invalid graph leaves no
trace. Problems are collected, not raised one by one: a user fixing a graph wants the
full list, the way a compiler reports every error in a file.

A graph is untrusted input (docs/security.md), so the cheap limits come first and end
validation at once when broken — nesting depth, document size, node and edge counts —
and nothing after them costs more than about linear time in the document: ancestors are
bit sets built in one topological pass, schemas never fetch and their patterns run on
RE2, templates are parsed (never rendered) and checked for what the sandbox refuses.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agentgraph.core.documents import MAX_DEPTH, too_deep
from agentgraph.core.errors import GraphInvalid, InputInvalid, Problem, TemplateProblem
from agentgraph.core.graph import Graph, Node
from agentgraph.core.model import (
    DEFAULT_MAX_TURNS,
    MAX_NODES,
    AgentProfile,
    Defaults,
    GraphSpec,
    NodeSpec,
    OnError,
    RetryPolicy,
)
from agentgraph.core.schemas import errors as schema_errors
from agentgraph.core.schemas import json_path as _json_path
from agentgraph.core.schemas import schema_problems as _schema_problems
from agentgraph.core.templates import bare_expression, references
from agentgraph.core.timeouts import TimeoutBound
from agentgraph.core.validate_grow import (
    check_agents,
    check_body_output,
    check_delegates,
    check_growth,
    check_tool_names,
    names,
    own_bindings,
    plan_schema,
    suggest,
)

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_POOL = "default"
_DEFAULT_RETRY = RetryPolicy()  # frozen: one instance serves every node without `retry`
MAX_INPUT_BYTES = 10 * 1024 * 1024
MAX_GRAPH_BYTES = 4 * 1024 * 1024  # the graph document as compact JSON
MAX_EDGES = 20_000  # `after` entries over the whole graph
MAX_NESTING = 4  # levels of subgraphs (`nodes:` inside `nodes:`), the top level counting 1


def load_graph(
    data: Mapping[str, Any],
    *,
    tools: Collection[str] | None = None,
    model_known: Callable[[str], bool] | None = None,
    timeout_bound: TimeoutBound | None = None,
) -> Graph:
    """Validate a parsed graph document and build the core's Graph, or raise GraphInvalid
    listing every problem. `tools` and `model_known` enable the name checks;
    `timeout_bound` the deployment's bound on each pool's `timeout_s` (core/timeouts.py)."""
    _check_limits(data)
    problems: list[Problem] = []
    spec = _check_document(data, problems)
    raw_nodes = data.get("nodes") if isinstance(data, Mapping) else None
    if not isinstance(raw_nodes, list):
        raise GraphInvalid(problems)
    defaults = spec.defaults if spec else _defaults_or_empty(data)
    agents = dict(spec.agents) if spec else {}
    check_agents(agents, model_known, problems, tools)
    scope = _Scope(defaults, tools, model_known, agents, timeout_bound)
    nodes = _compile_nodes(raw_nodes, "nodes", scope, frozenset(), 1, problems)
    input_schema = data.get("input") if isinstance(data, Mapping) else None
    if isinstance(input_schema, dict):
        problems.extend(_schema_problems("input", input_schema))
    if problems or spec is None or nodes is None:
        raise GraphInvalid(problems)
    return Graph(spec.name, nodes, spec.input, spec.description, agents)


@dataclass(frozen=True)
class _Scope:
    """What every level of nesting is checked against."""

    defaults: Defaults
    tools: Collection[str] | None
    model_known: Callable[[str], bool] | None
    agents: Mapping[str, AgentProfile]
    timeout_bound: TimeoutBound | None = None


def _compile_nodes(
    raw_nodes: list[Any],
    where: str,
    scope: _Scope,
    bindings: frozenset[str],
    depth: int,
    problems: list[Problem],
) -> dict[str, Node] | None:
    """One level of nodes (the graph's, or a subgraph's `nodes:`), checked and built;
    None when it has problems (they are in `problems`). `bindings` are the names its
    templates may read besides `input` and `nodes` (item, index, loop, from enclosing
    maps and loops)."""
    before = len(problems)
    specs = _check_nodes(raw_nodes, where, problems)
    index = {s.id: i for i, s in specs}
    _check_unique_ids(specs, where, problems)
    _check_edges(specs, index, where, problems)
    cycles = _find_cycles({s.id: s.after for _, s in specs if s})
    for cycle in cycles:
        first = cycle[0]
        problems.append(
            Problem(f"{where}[{index[first]}].after", f"cycle: {' -> '.join(cycle)}", first)
        )
    ancestors = _ancestors({s.id: [p for p in s.after if p in index] for _, s in specs})
    reads = {
        s.id: _check_templates(f"{where}[{i}]", s, index, ancestors.get(s.id), bindings, problems)
        for i, s in specs
    }
    check_growth(specs, where, bindings, problems)
    _check_names(specs, where, scope, problems)
    if scope.timeout_bound is not None:
        _check_timeouts(specs, where, scope, problems)
    bodies: dict[str, Graph] = {}
    for i, s in specs:
        if s.graph is not None:
            problems.append(
                Problem(
                    f"{where}[{i}].graph",
                    f"refers to stored graph {s.graph!r}, which was not resolved: stored "
                    "subgraphs are resolved when a run starts on a service that stores graphs",
                    s.id,
                )
            )
        if s.nodes is None:
            continue
        if depth >= MAX_NESTING:
            problems.append(
                Problem(
                    f"{where}[{i}].nodes",
                    f"subgraphs nest at most {MAX_NESTING} levels deep",
                    s.id,
                )
            )
            continue
        inner = _compile_nodes(
            s.nodes, f"{where}[{i}].nodes", scope, own_bindings(s, bindings), depth + 1, problems
        )
        if inner is not None:
            bodies[s.id] = Graph(s.id, inner, None)
            check_body_output(f"{where}[{i}]", s, bodies[s.id], bindings, problems)
    if len(problems) > before:
        return None
    return _build(specs, scope, reads, bodies)


def validate_input(graph: Graph, value: Any) -> int:
    """Check the run input against the graph's JSON Schema, its nesting and the size
    limit; returns its size in bytes as JSON. Nesting is checked first: measuring the
    size walks the value recursively."""
    deep = too_deep(value)
    if deep is not None:
        raise InputInvalid([Problem(f"input{deep}", f"nested deeper than {MAX_DEPTH} levels")])
    size = len(json.dumps(value, default=str).encode())
    if size > MAX_INPUT_BYTES:
        raise InputInvalid(
            [Problem("input", f"is {size:,} bytes; the limit is {MAX_INPUT_BYTES:,} bytes")]
        )
    if graph.input_schema is None:
        return size
    problems = [
        Problem(_json_path("input", error.absolute_path), error.message)
        for error in schema_errors(graph.input_schema, value)
    ]
    if problems:
        raise InputInvalid(problems)
    return size


def _check_limits(data: Any) -> None:
    """The limits whose breach makes every later check pointless or expensive: raised
    at once, alone, before the document is walked again."""
    deep = too_deep(data)
    if deep is not None:
        raise GraphInvalid([Problem(f"graph{deep}", f"nested deeper than {MAX_DEPTH} levels")])
    try:
        size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str))
    except (TypeError, ValueError) as exc:
        raise GraphInvalid([Problem("graph", f"is not plain JSON data: {exc}")]) from exc
    if size > MAX_GRAPH_BYTES:
        raise GraphInvalid(
            [Problem("graph", f"is {size:,} bytes as JSON; the limit is {MAX_GRAPH_BYTES:,}")]
        )
    raw_nodes = data.get("nodes") if isinstance(data, Mapping) else None
    if not isinstance(raw_nodes, list):
        return
    if len(raw_nodes) > MAX_NODES:
        raise GraphInvalid(
            [Problem("nodes", f"has {len(raw_nodes):,} nodes; the limit is {MAX_NODES:,}")]
        )
    edges = sum(
        len(n["after"])
        for n in raw_nodes
        if isinstance(n, dict) and isinstance(n.get("after"), list)
    )
    if edges > MAX_EDGES:
        raise GraphInvalid(
            [Problem("nodes", f"has {edges:,} edges ('after' entries); the limit is {MAX_EDGES:,}")]
        )


# ---- document and per-node shape -------------------------------------------------------


def _pydantic_problems(
    prefix: str, error: ValidationError, node_id: str | None
) -> Iterator[Problem]:
    for item in error.errors():
        # A top-level key "" has no path of its own: name the document instead; a key of
        # whitespace alone is shown quoted, so the path still says something.
        path = _json_path(prefix, item["loc"]).lstrip(".")
        path = path if path.strip() else repr(path) if path else "graph"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] != "missing" and isinstance(item.get("input"), str | int | float | bool):
            message += f" (found {item['input']!r})"
        yield Problem(path, message, node_id)


def _check_document(data: Any, problems: list[Problem]) -> GraphSpec | None:
    if not isinstance(data, Mapping):
        problems.append(Problem("graph", f"must be a mapping, found {type(data).__name__}"))
        return None
    try:
        return GraphSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems("", exc, None))
        return None


def _defaults_or_empty(data: Any) -> Defaults:
    try:
        return Defaults.model_validate(data.get("defaults") or {})
    except (ValidationError, AttributeError):
        return Defaults()


def _check_nodes(
    raw_nodes: list[Any], where: str, problems: list[Problem]
) -> list[tuple[int, NodeSpec]]:
    specs: list[tuple[int, NodeSpec]] = []
    for i, raw in enumerate(raw_nodes):
        node_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(raw, dict):
            problems.append(Problem(f"{where}[{i}]", f"must be a mapping, found {raw!r}"))
            continue
        try:
            specs.append((i, NodeSpec.model_validate(raw)))
        except ValidationError as exc:
            problems.extend(_pydantic_problems(f"{where}[{i}]", exc, node_id))
    return specs


# ---- whole-graph rules -----------------------------------------------------------------


_suggest = suggest


def _check_unique_ids(
    specs: list[tuple[int, NodeSpec]], where: str, problems: list[Problem]
) -> None:
    seen: dict[str, int] = {}
    for i, s in specs:
        if s.id in seen:
            problems.append(
                Problem(
                    f"{where}[{i}].id",
                    f"duplicate id {s.id!r} (first used by {where}[{seen[s.id]}])",
                    s.id,
                )
            )
        else:
            seen[s.id] = i


def _check_edges(
    specs: list[tuple[int, NodeSpec]],
    index: Mapping[str, int],
    scope_where: str,
    problems: list[Problem],
) -> None:
    for i, s in specs:
        for j, parent in enumerate(s.after):
            base = f"{scope_where}[{i}].after"
            where = f"{base}[{j}]" if len(s.after) > 1 else base
            if parent not in index:
                problems.append(
                    Problem(
                        where,
                        f"node {s.id!r} waits for unknown node {parent!r}{_suggest(parent, index)}",
                        s.id,
                    )
                )
            elif parent == s.id:
                problems.append(Problem(where, f"node {s.id!r} waits for itself", s.id))
        duplicates = {p for p in s.after if s.after.count(p) > 1}
        if duplicates:
            problems.append(
                Problem(
                    f"{scope_where}[{i}].after", f"lists {sorted(duplicates)} more than once", s.id
                )
            )


def _find_cycles(after: Mapping[str, list[str]]) -> list[list[str]]:
    """One path per strongly connected component that loops (Tarjan), as a -> b -> a."""
    graph = {n: [p for p in ps if p in after and p != n] for n, ps in after.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(start: str) -> None:
        work = [(start, iter(graph[start]))]
        order[start] = low[start] = len(order)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in order:
                    order[nxt] = low[nxt] = len(order)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for node in graph:
        if node not in order:
            strongconnect(node)
    return [_cycle_path(graph, set(c)) for c in components]


def _cycle_path(graph: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """Walk 'runs after' edges inside one component until a node repeats."""
    start = min(members)
    path = [start]
    seen = {start: 0}
    node = start
    while True:
        node = min(p for p in graph[node] if p in members)
        if node in seen:
            loop = [*path[seen[node] :], node]
            break
        seen[node] = len(path)
        path.append(node)
    # Print in execution order: parents first.
    return list(reversed(loop))


class _Ancestors:
    """A node's ancestors as a bit set over the graph's ids: membership is one AND.
    Materialising each node's set would cost nodes x ancestors, quadratic on a deep graph
    (1.9 million set entries for 2,000 nodes, most of validation's time)."""

    __slots__ = ("_bit", "_mask")

    def __init__(self, mask: int, bit: Mapping[str, int]) -> None:
        self._mask = mask
        self._bit = bit

    def __contains__(self, node: object) -> bool:
        bit = self._bit.get(node) if isinstance(node, str) else None
        return bit is not None and bool(self._mask & bit)


def _ancestors(after: Mapping[str, list[str]]) -> dict[str, _Ancestors]:
    """Each node's ancestors, for nodes not on or below a cycle (those are reported as a
    cycle; their template references are checked once the cycle is gone).

    One topological pass with a bit set per node (a Python int, OR-ed from the parents):
    about nodes x edges / 64 machine operations, where walking up from every node is
    quadratic on a chain."""
    bit = {node: 1 << i for i, node in enumerate(after)}
    masks: dict[str, int] = {}
    for node in _kahn(after):
        mask = 0
        for parent in after[node]:
            mask |= masks[parent] | bit[parent]
        masks[node] = mask
    return {node: _Ancestors(mask, bit) for node, mask in masks.items()}


def _kahn(after: Mapping[str, list[str]]) -> list[str]:
    """Kahn's order, stable in document order; nodes on or below a cycle are left out.
    (Not graphlib's TopologicalSorter: it refuses a graph with a cycle outright, and
    validation still wants the ancestors of the acyclic rest to check its templates.)"""
    remaining = {node: len(parents) for node, parents in after.items()}
    children: dict[str, list[str]] = {node: [] for node in after}
    for node, parents in after.items():
        for parent in parents:
            children[parent].append(node)
    order: list[str] = []
    ready = deque(node for node, count in remaining.items() if count == 0)
    while ready:
        node = ready.popleft()
        order.append(node)
        for child in children[node]:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    return order


@dataclass(frozen=True)
class _Template:
    field: str
    source: str
    expression: bool
    extra: frozenset[str] = frozenset()  # names it may read besides input and nodes
    own: bool = True  # per instance (item, index, loop bound), or decided before growing


def _templates_of(spec: NodeSpec) -> Iterator[_Template]:
    """The templates of a node that read its scope (`loop.until` and a subgraph's
    `output` read other names: `check_growth`, `check_body_output`). `when` and `map`
    are decided before the node grows, so they read the enclosing bindings only."""
    if spec.map is not None:
        yield _Template("map", bare_expression(spec.map), True, own=False)
    if spec.agent is not None:
        yield _Template("agent", spec.agent, False)
    if spec.prompt is not None:
        yield _Template("prompt", spec.prompt, False)
    if spec.system is not None:
        yield _Template("system", spec.system, False)
    if spec.when is not None:
        yield _Template("when", spec.when, True, own=False)
    yield from _arg_templates("args", spec.args)
    yield from _arg_templates("attach", spec.attach or [])
    if spec.approval is not None:
        yield _Template("approval.message", spec.approval.message, False, frozenset({"output"}))


def _arg_templates(path: str, value: Any) -> Iterator[_Template]:
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        yield _Template(path, value, False)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _arg_templates(f"{path}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _arg_templates(f"{path}[{i}]", item)


def _check_templates(
    path: str,
    spec: NodeSpec,
    index: Mapping[str, int],
    ancestors: _Ancestors | None,
    enclosing: frozenset[str],
    problems: list[Problem],
) -> frozenset[str]:
    """`ancestors` is None for a node on or below a cycle: its ancestry is undefined.
    `enclosing`: the names of the node's scope (item, index, loop of enclosing maps and
    loops); its own templates may read its own map's and loop's too."""
    reads: set[str] = set()
    own = own_bindings(spec, enclosing)
    for template in _templates_of(spec):
        where = f"{path}.{template.field}"
        allowed = own if template.own else enclosing
        try:
            refs = references(template.source, expression=template.expression)
        except TemplateProblem as exc:
            problems.append(Problem(where, f"does not parse: {exc}", spec.id))
            continue
        for name in sorted(refs.other_names - allowed - template.extra):
            readable = f"'input', 'nodes.<id>', {names(allowed)}" if allowed else ""
            problems.append(
                Problem(
                    where,
                    f"refers to {name!r}; templates may read only "
                    + (readable or "'input' and 'nodes.<id>'"),
                    spec.id,
                )
            )
        problems.extend(Problem(where, unsafe, spec.id) for unsafe in refs.unsafe)
        if refs.dynamic_node_access:
            problems.append(
                Problem(
                    where,
                    "reads 'nodes' with a computed key; name the node: nodes.<id> or nodes['<id>']",
                    spec.id,
                )
            )
        for ref in sorted(refs.nodes):
            if ref not in index:
                problems.append(
                    Problem(where, f"refers to unknown node {ref!r}{_suggest(ref, index)}", spec.id)
                )
            elif ancestors is not None and ref not in ancestors:
                problems.append(
                    Problem(
                        where,
                        f"refers to node {ref!r}, which is not an ancestor of {spec.id!r}: add it to 'after'",
                        spec.id,
                    )
                )
        if ancestors is not None:
            reads.update(ref for ref in refs.nodes if ref in ancestors)
    return frozenset(reads)


def _check_timeouts(
    specs: list[tuple[int, NodeSpec]],
    where: str,
    scope: _Scope,
    problems: list[Problem],
) -> None:
    """Each node's effective timeout_s against its pool's bound, reported where it is
    written: on the node, or once on `defaults.timeout_s` for the nodes that inherit it."""
    defaults, bound = scope.defaults, scope.timeout_bound
    assert bound is not None
    reported: set[tuple[str, str]] = set()
    for i, s in specs:
        timeout_s = float(_pick(s.timeout_s, defaults.timeout_s, DEFAULT_TIMEOUT_S))
        pool = _pick(s.pool, defaults.pool, DEFAULT_POOL)
        why = bound.problem(pool, timeout_s)
        path = f"{where}[{i}].timeout_s" if s.timeout_s is not None else "defaults.timeout_s"
        if why is None or (path, pool) in reported:
            continue
        reported.add((path, pool))
        problems.append(Problem(path, why, s.id if s.timeout_s is not None else None))


def _check_names(
    specs: list[tuple[int, NodeSpec]],
    where: str,
    scope: _Scope,
    problems: list[Problem],
) -> None:
    defaults, tools, model_known = scope.defaults, scope.tools, scope.model_known
    for i, s in specs:
        if s.tool is not None and tools is not None and s.tool not in tools:
            problems.append(
                Problem(
                    f"{where}[{i}].tool",
                    f"unknown tool {s.tool!r}{_suggest(s.tool, tools)}",
                    s.id,
                )
            )
        if s.output_schema == "agents" and not scope.agents:
            problems.append(
                Problem(
                    f"{where}[{i}].output_schema",
                    "'agents' is the schema of a plan over the graph's 'agents:' profiles, "
                    "and this graph declares none",
                    s.id,
                )
            )
        if s.agent is not None and not scope.agents:
            problems.append(
                Problem(f"{where}[{i}].agent", "the graph declares no 'agents:' profiles", s.id)
            )
        elif s.agent is not None and "{" not in s.agent and s.agent not in scope.agents:
            problems.append(
                Problem(
                    f"{where}[{i}].agent",
                    f"unknown profile {s.agent!r}{_suggest(s.agent, scope.agents)}",
                    s.id,
                )
            )
        if s.prompt is None:
            continue
        _check_function_tools(f"{where}[{i}]", s, defaults, tools, problems, scope.agents)
        model = s.model or defaults.model
        if model is None and s.agent is None:
            problems.append(
                Problem(
                    f"{where}[{i}].model",
                    "an agent node needs a model (here or in 'defaults')",
                    s.id,
                )
            )
        for field_name, name in (
            ("model", model),
            ("fallback_model", s.fallback_model or defaults.fallback_model),
        ):
            if name is not None and model_known is not None and not model_known(name):
                problems.append(
                    Problem(
                        f"{where}[{i}].{field_name}",
                        f"unknown model {name!r}: expected a Gemini model (gemini-...) or 'echo'",
                        s.id,
                    )
                )
        if isinstance(s.output_schema, dict):
            problems.extend(
                Problem(
                    p.path.replace("output_schema", f"{where}[{i}].output_schema", 1),
                    p.message,
                    s.id,
                )
                for p in _schema_problems("output_schema", s.output_schema)
            )


def _check_function_tools(
    path: str,
    s: NodeSpec,
    defaults: Defaults,
    tools: Collection[str] | None,
    problems: list[Problem],
    agents: Mapping[str, AgentProfile],
) -> None:
    """An agent's `tools` (its own, else the defaults'): registered, each named once; its
    `delegates`: profiles of the graph."""
    field_name = f"{path}.tools" if s.tools is not None else "defaults.tools"
    names = s.tools if s.tools is not None else defaults.tools
    check_tool_names(field_name, names or (), tools, problems, s.id)
    if s.delegates:
        check_delegates(f"{path}.delegates", s.delegates, names or (), agents, problems, s.id)


# ---- building the core graph -----------------------------------------------------------


def _build(
    specs: list[tuple[int, NodeSpec]],
    scope: _Scope,
    reads: Mapping[str, frozenset[str]],
    bodies: Mapping[str, Graph],
) -> dict[str, Node]:
    by_id = {s.id: s for _, s in specs}
    children: dict[str, list[str]] = {s.id: [] for _, s in specs}
    for _, s in specs:
        for parent in s.after:
            children[parent].append(s.id)
    return {
        node_id: _resolve(
            by_id[node_id], scope, children[node_id], reads[node_id], bodies.get(node_id)
        )
        for node_id in _kahn({node_id: list(s.after) for node_id, s in by_id.items()})
    }


def _pick(node_value: Any, default_value: Any, fallback: Any) -> Any:
    if node_value is not None:
        return node_value
    return default_value if default_value is not None else fallback


def _resolve(
    s: NodeSpec,
    scope: _Scope,
    children: list[str],
    reads: frozenset[str],
    body: Graph | None,
) -> Node:
    d = scope.defaults
    agent = s.prompt is not None
    output_schema = (
        plan_schema(scope.agents) if s.output_schema == "agents" else s.output_schema or None
    )
    assert output_schema is None or isinstance(output_schema, dict)
    return Node(
        id=s.id,
        parents=tuple(s.after),
        children=tuple(children),
        kind="subgraph"
        if body is not None
        else "tool"
        if s.tool is not None
        else "agent"
        if s.prompt is not None
        else "gate",
        pool=_pick(s.pool, d.pool, DEFAULT_POOL),
        on_error=_pick(s.on_error, d.on_error, OnError.FAIL_RUN),
        retry=_pick(s.retry, d.retry, _DEFAULT_RETRY),
        timeout_s=float(_pick(s.timeout_s, d.timeout_s, DEFAULT_TIMEOUT_S)),
        tool=s.tool,
        args=dict(s.args),
        prompt=s.prompt,
        system=s.system,
        model=_pick(s.model, d.model, None) if agent else None,
        fallback_model=_pick(s.fallback_model, d.fallback_model, None) if agent else None,
        temperature=_pick(s.temperature, d.temperature, None),
        top_p=_pick(s.top_p, d.top_p, None),
        max_output_tokens=_pick(s.max_output_tokens, d.max_output_tokens, None),
        stop_sequences=tuple(_pick(s.stop_sequences, d.stop_sequences, ())),
        safety_settings=tuple(_pick(s.safety_settings, d.safety_settings, ())),
        output="json" if s.output == "json" else "text",
        output_schema=output_schema,
        stream=bool(_pick(s.stream, d.stream, False)),
        when=s.when,
        attach=tuple(s.attach or ()),
        reads=reads,
        tools=tuple(_pick(s.tools, d.tools, ())) if s.prompt is not None else (),
        max_turns=int(_pick(s.max_turns, d.max_turns, DEFAULT_MAX_TURNS)),
        on_max_turns=_pick(s.on_max_turns, d.on_max_turns, "fail"),
        approval=s.approval,
        map=s.map,
        max_concurrency=s.max_concurrency,
        loop=s.loop,
        body=body,
        body_output=s.output if body is not None and s.output not in ("text", "json") else None,
        agent=s.agent,
        delegates=tuple(s.delegates or ()),
    )
