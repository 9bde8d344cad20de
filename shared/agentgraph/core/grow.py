"""Runs that grow: map, loop and subgraph nodes add node instances to a running run.

Pure: the engine reads records, asks this module what to add or how a controller ends,
and persists the answer through the store (`Store.add_instances`, `expand_node`,
`settle_node`).

Instance ids are paths. A segment is a template node's id, optionally followed by
`[index]` (one item of its map) and/or `@iteration` (one iteration of its loop, from 1);
segments are joined by `/` into the body of a subgraph:

    review[17]            item 17 of map node `review`
    draft@3               iteration 3 of loop node `draft`
    research/summarize    node `summarize` of subgraph `research`
    research[2]/summarize node `summarize` in item 2 of the mapped subgraph `research`

User ids never contain `[`, `]`, `@` or `/` (model.NODE_ID_PATTERN), so an id is an
instance exactly when it contains one of them, and `instance_node` finds its template by
walking the path. A node with `map`, `loop` or a body is a *controller*: claimed like any
node, it runs no call but adds its instances (deterministic ids, created if absent, so a
repeated expansion adds nothing) and waits in `expanded`, holding no lease. Its units
(the map's items, the loop's iterations, the body's sinks) list it as their child, so
their node-finished messages decide it:
- map: the arrival (`record_arrival`, once per item) that completes the count decides;
  the output is the list of item outputs in input order; an item that failed puts
  `{"error": {...}}` in the list when the node's `on_error` is `continue`, and fails the
  map otherwise. An empty list succeeds with `[]` at once. With `max_concurrency: c`, the
  items run in c lanes: item i + c is made ready when item i finishes.
- loop: iteration k finishing evaluates `until` (bound: `output`, `loop`); the loop ends
  with that output, or adds iteration k + 1, or has run `max_iterations` and fails (or
  succeeds, `on_exhausted: succeed`).
- subgraph: the body's nodes become `S/x`; the output is the single sink's output or the
  `output:` template over the body's nodes.
A map of a subgraph expands into items `S[i]`, each of which is a subgraph controller;
a loop of a subgraph likewise into `S@k`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentgraph.core.errors import ExpansionError, TemplateProblem, UnknownAgent
from agentgraph.core.graph import Graph, Node
from agentgraph.core.model import OnError
from agentgraph.core.records import NodeError, NodeRecord, Outcome
from agentgraph.core.status import NodeStatus
from agentgraph.core.templates import bare_expression, condition_holds, render_value

MAX_MAP_ITEMS = 10_000  # items of one map
MAX_INSTANCES = 50_000  # nodes a run may reach, its graph's and every instance
MAX_BINDINGS_BYTES = 256 * 1024  # an instance's item and loop.previous, as JSON
# Items of a map without `max_concurrency` that run at once. Every item's claim and finish
# move the run's counts on one document: a burst of 1,000 at once met lock timeouts on
# the Firestore emulator, 100 lanes none, at about the same wall time.
DEFAULT_MAP_CONCURRENCY = 100

_SEGMENT = re.compile(r"^([a-z0-9_-]+)(?:\[(0|[1-9][0-9]{0,5})\])?(?:@([1-9][0-9]{0,4}))?$")


@dataclass(frozen=True)
class Segment:
    name: str
    index: int | None = None
    iteration: int | None = None

    @property
    def unit(self) -> bool:
        """An item or an iteration (not the template node itself)."""
        return self.index is not None or self.iteration is not None


def is_instance(node_id: str) -> bool:
    return any(mark in node_id for mark in "[@/")


def parse(node_id: str) -> list[Segment] | None:
    """The segments of an instance id, or None when it is not one."""
    segments = []
    for text in node_id.split("/"):
        match = _SEGMENT.match(text)
        if match is None:
            return None
        name, index, iteration = match.groups()
        segments.append(
            Segment(name, int(index) if index else None, int(iteration) if iteration else None)
        )
    return segments


def item_id(controller_id: str, index: int) -> str:
    return f"{controller_id}[{index}]"


def iteration_id(controller_id: str, iteration: int) -> str:
    return f"{controller_id}@{iteration}"


def instance_node(graph: Graph, node_id: str) -> Node | None:
    """The Node an id runs as: a template node of the graph, or an instance of one (its
    template with the map or loop it is a unit of taken off, its parents and children
    as instance ids, and the scope its `nodes.<id>` reads resolve in). None for an id
    that names nothing in this graph."""
    if not is_instance(node_id):
        return graph.nodes.get(node_id)
    segments = parse(node_id)
    if not segments:
        return None
    scope_graph, prefix = graph, ""
    for position, segment in enumerate(segments):
        template = scope_graph.nodes.get(segment.name)
        if template is None:
            return None
        node = template
        if segment.index is not None:
            if template.map is None:
                return None
            node = replace(node, map=None, max_concurrency=None, when=None)
        if segment.iteration is not None:
            if template.loop is None:
                return None
            node = replace(node, loop=None, when=None)
        if position < len(segments) - 1:
            if node.body is None or node.map is not None or node.loop is not None:
                return None
            scope_graph = node.body
            prefix = f"{prefix}{segment_text(segment)}/"
            continue
        if segment.unit:
            parents: tuple[str, ...] = ()
            children: tuple[str, ...] = (prefix + segment.name,)
        else:
            parents = tuple(prefix + p for p in template.parents)
            if not template.children:
                children = (prefix[:-1],)  # a body's sink: its subgraph's controller
            else:
                children = tuple(prefix + c for c in template.children)
        return replace(node, id=node_id, parents=parents, children=children, scope=prefix)
    return None  # pragma: no cover - the loop returns at the last segment


def segment_text(segment: Segment) -> str:
    text = segment.name
    if segment.index is not None:
        text += f"[{segment.index}]"
    if segment.iteration is not None:
        text += f"@{segment.iteration}"
    return text


def unit_of(node_id: str) -> tuple[str, Segment] | None:
    """For an item or an iteration: its controller's id and its own last segment."""
    if "[" not in node_id and "@" not in node_id:
        return None
    head, _, last = node_id.rpartition("/")
    segments = parse(last)
    if not segments or not segments[0].unit:
        return None
    controller = f"{head}/{segments[0].name}" if head else segments[0].name
    return controller, segments[0]


# ---- bindings ------------------------------------------------------------------------------


def bindings_of(record: NodeRecord | None) -> dict[str, Any]:
    """What an instance's templates read besides `input` and `nodes`: item, index, loop."""
    if record is None or not record.meta:
        return {}
    return dict(record.meta.get("bindings") or {})


def expected_of(record: NodeRecord) -> int:
    """How many arrivals decide an expanded controller (its map's items, its body's
    sinks; 1 for a loop)."""
    return int((record.meta or {}).get("expect", 1))


def arrivals_needed(node: Node, record: NodeRecord) -> int:
    """The arrival count that completes an expanded controller: its units, plus the
    arrivals of its own parents, which a node with two or more parents counted on the
    same record before it ran."""
    return expected_of(record) + (len(node.parents) if len(node.parents) > 1 else 0)


def _meta(bindings: Mapping[str, Any], node: Node) -> dict[str, Any] | None:
    if not bindings:
        return None
    try:
        size = len(json.dumps(bindings, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise ExpansionError(f"{node.id}: an item is not JSON data: {exc}") from exc
    if size > MAX_BINDINGS_BYTES:
        raise ExpansionError(
            f"{node.id}: an instance's item and loop values are {size:,} bytes as JSON; "
            f"the limit is {MAX_BINDINGS_BYTES:,} (pass a reference, not the data)"
        )
    return {"bindings": dict(bindings)}


# ---- expanding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expansion:
    """The instances a controller adds, and how many arrivals then decide it."""

    records: list[NodeRecord]
    expect: int


def map_items(node: Node, value: Any) -> list[Any]:
    """The list `map:` evaluated to, checked."""
    if not isinstance(value, list):
        raise ExpansionError(
            f"map of {node.id!r} gave {type(value).__name__}, not a list: {_excerpt(value)}"
        )
    if len(value) > MAX_MAP_ITEMS:
        raise ExpansionError(
            f"map of {node.id!r} gave {len(value):,} items; the limit is {MAX_MAP_ITEMS:,}"
        )
    return value


def evaluate_map(node: Node, values: Mapping[str, Any]) -> list[Any]:
    assert node.map is not None
    try:
        value = render_value("{{ " + bare_expression(node.map) + " }}", values)
    except TemplateProblem as exc:
        raise ExpansionError(f"map of {node.id!r}: {exc}") from exc
    return map_items(node, value)


def check_capacity(node: Node, node_count: int, adding: int) -> None:
    if node_count + adding > MAX_INSTANCES:
        raise ExpansionError(
            f"{node.id!r} would add {adding:,} instances to a run of {node_count:,} nodes; "
            f"a run may reach at most {MAX_INSTANCES:,}"
        )


def expand_map(
    run_id: str, node: Node, items: Sequence[Any], bindings: Mapping[str, Any]
) -> Expansion:
    """Items `X[i]`, ready in the first `max_concurrency` lanes, waiting after them."""
    lanes = lanes_of(node)
    records = [
        NodeRecord(
            run_id=run_id,
            node_id=item_id(node.id, i),
            status=NodeStatus.READY if i < lanes else NodeStatus.WAITING,
            parents=[] if i < lanes else [item_id(node.id, i - lanes)],
            children=[node.id],
            pool=node.pool,
            meta=_meta({**bindings, "item": item, "index": i}, node),
        )
        for i, item in enumerate(items)
    ]
    return Expansion(records, len(items))


def expand_iteration(
    run_id: str, node: Node, iteration: int, previous: Any, bindings: Mapping[str, Any]
) -> NodeRecord:
    loop = {"iteration": iteration, "previous": previous}
    return NodeRecord(
        run_id=run_id,
        node_id=iteration_id(node.id, iteration),
        status=NodeStatus.READY,
        parents=[],
        children=[node.id],
        pool=node.pool,
        meta=_meta({**bindings, "loop": loop}, node),
    )


def expand_body(
    run_id: str, node: Node, bindings: Mapping[str, Any], skipped_roots: Mapping[str, str]
) -> Expansion:
    """The body's nodes as `S/x`: roots ready (or skipped, with the reason the engine
    found evaluating their `when`), the rest waiting; every one carries the bindings."""
    assert node.body is not None
    meta = _meta(bindings, node)
    records = []
    for inner in node.body.nodes.values():
        status = NodeStatus.WAITING
        if not inner.parents:
            status = NodeStatus.SKIPPED if inner.id in skipped_roots else NodeStatus.READY
        records.append(
            NodeRecord(
                run_id=run_id,
                node_id=f"{node.id}/{inner.id}",
                status=status,
                parents=[f"{node.id}/{p}" for p in inner.parents],
                children=[f"{node.id}/{c}" for c in inner.children] or [node.id],
                pool=inner.pool,
                skip_reason=skipped_roots.get(inner.id),
                meta=meta,
            )
        )
    return Expansion(records, len(node.body.sinks))


def lanes_of(node: Node) -> int:
    """How many of a map's items run at once: item i + lanes starts when item i ends."""
    return node.max_concurrency or DEFAULT_MAP_CONCURRENCY


# ---- deciding a controller ------------------------------------------------------------------


def map_outcome(node: Node, items: Sequence[NodeRecord | None]) -> Outcome:
    """The list of item outputs in input order; a failed item is `{"error": ...}` in it
    when the map's `on_error` is `continue`, and fails the map otherwise."""
    outputs = []
    for index, record in enumerate(items):
        if record is not None and record.status == NodeStatus.SUCCEEDED:
            outputs.append(record.output)
        elif (
            record is not None
            and record.status == NodeStatus.FAILED
            and node.on_error == OnError.CONTINUE
        ):
            outputs.append({"error": record.error.to_dict() if record.error else None})
        else:
            return _failed(node, index, record, "item")
    return Outcome(NodeStatus.SUCCEEDED, output=outputs)


def body_outcome(
    node: Node, inner: Mapping[str, NodeRecord], bindings: Mapping[str, Any], input: Any
) -> Outcome:
    """Its `output:` template over the body's nodes, or its single sink's output."""
    assert node.body is not None
    if node.body_output is not None:
        values = {**template_values(input, inner, frozenset(inner)), **bindings}
        try:
            return Outcome(NodeStatus.SUCCEEDED, output=render_value(node.body_output, values))
        except TemplateProblem as exc:
            return Outcome(
                NodeStatus.FAILED, error=NodeError("TemplateError", f"output: {exc}", False)
            )
    sink = node.body.sinks[0]
    record = inner.get(sink)
    if record is not None and record.status == NodeStatus.SUCCEEDED:
        return Outcome(NodeStatus.SUCCEEDED, output=record.output)
    status = record.status.value if record else "absent"
    detail = f": {record.error.type}: {record.error.message}" if record and record.error else ""
    return Outcome(
        NodeStatus.FAILED,
        error=NodeError(
            "SubgraphFailed", f"subgraph {node.id!r}: its sink {sink!r} {status}{detail}", False
        ),
    )


@dataclass(frozen=True)
class NextIteration:
    iteration: int
    previous: Any


def loop_step(
    node: Node, iteration: int, record: NodeRecord, bindings: Mapping[str, Any], input: Any
) -> Outcome | NextIteration:
    """After iteration k: the loop's outcome, or the next iteration to add."""
    assert node.loop is not None
    if record.status != NodeStatus.SUCCEEDED:
        return _failed(node, iteration, record, "iteration")
    loop = {"iteration": iteration, "previous": bindings.get("loop", {}).get("previous")}
    values = {**bindings, "input": input, "output": record.output, "loop": loop}
    try:
        done = condition_holds(bare_expression(node.loop.until), values)
    except TemplateProblem as exc:
        return Outcome(
            NodeStatus.FAILED, error=NodeError("TemplateError", f"loop.until: {exc}", False)
        )
    if done:
        return Outcome(NodeStatus.SUCCEEDED, output=record.output)
    if iteration < node.loop.max_iterations:
        return NextIteration(iteration + 1, record.output)
    if node.loop.on_exhausted == "succeed":
        return Outcome(NodeStatus.SUCCEEDED, output=record.output)
    return Outcome(
        NodeStatus.FAILED,
        error=NodeError(
            "LoopExhausted",
            f"loop {node.id!r} ran max_iterations={node.loop.max_iterations} times and "
            "'until' never held",
            False,
        ),
    )


def _failed(node: Node, position: int, record: NodeRecord | None, what: str) -> Outcome:
    status = record.status.value if record else "absent"
    detail = f": {record.error.type}: {record.error.message}" if record and record.error else ""
    return Outcome(
        NodeStatus.FAILED,
        error=NodeError(
            "ItemFailed" if what == "item" else "IterationFailed",
            f"{what} {position} of {node.id!r} {status}{detail}",
            False,
        ),
    )


def template_values(
    input: Any, records: Mapping[str, NodeRecord], reads: frozenset[str]
) -> dict[str, Any]:
    """`input` and `nodes.<id>` as templates read them; `records` by the id templates use."""
    return {
        "input": input,
        "nodes": {
            node_id: {
                "output": rec.output,
                "error": rec.error.to_dict() if rec.error else None,
                "status": rec.status.value,
            }
            for node_id, rec in records.items()
            if node_id in reads
        },
    }


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


# ---- planned subagents ------------------------------------------------------------------------


def with_profile(node: Node, graph: Graph, name: str) -> Node:
    """The node as the named `agents:` profile runs it: the profile's model, system,
    output, sampling, tools, max_turns, delegates and memory over the node's. An unknown name is the node's error."""
    profile = graph.agents.get(name)
    if profile is None:
        known = ", ".join(sorted(graph.agents)) or "none"
        raise UnknownAgent(f"agent {name!r} is not one of the graph's profiles ({known})")
    if not (profile.model or node.model):
        raise UnknownAgent(f"agent {name!r} names no model, and the node has none")
    output = profile.output or node.output
    return replace(
        node,
        agent=None,
        profile=name,
        tools=tuple(profile.tools) if profile.tools is not None else node.tools,
        max_turns=profile.max_turns or node.max_turns,
        delegates=tuple(profile.delegates) if profile.delegates is not None else node.delegates,
        memory=profile.memory,
        memory_tokens=profile.memory_tokens,
        model=profile.model or node.model,
        system=profile.system if profile.system is not None else node.system,
        temperature=profile.temperature if profile.temperature is not None else node.temperature,
        max_output_tokens=profile.max_output_tokens or node.max_output_tokens,
        output=output,
        output_schema=profile.output_schema if profile.output_schema else node.output_schema,
    )


def models(graph: Graph) -> Iterator[str]:
    """Every model a graph may call: its nodes', its subgraphs', its profiles'."""
    for node in graph.nodes.values():
        yield from (m for m in (node.model, node.fallback_model) if m)
        if node.body is not None:
            yield from models(node.body)
    yield from (p.model for p in graph.agents.values() if p.model)
