"""The benchmark graphs, built once as a topology and rendered for both orchestrators.

`layered(width, depth)` is the issue's DAG: node (k, j) waits for (k-1, j) and
(k-1, (j+1) mod width), plus one sink after the last layer. The same list of
(node, parents) becomes an agentgraph document and a LangGraph StateGraph, so the two
run the same edges; `check_each_ran_once` is how each benchmark proves it.

LangGraph semantics this relies on (langgraph/graph/state.py, `StateGraph.add_edge`): a
plain `add_edge(a, c)` triggers `c` in the superstep after *any* such parent wrote,
while `add_edge([a, b], c)` is a waiting edge (a barrier channel) that triggers `c` once
*all* of a and b have finished. agentgraph's `after` means "all parents", so every
multi-parent node here gets the list form.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypedDict

Topology = list[tuple[str, list[str]]]
SINK = "sink"


def node_id(layer: int, column: int) -> str:
    return f"n{layer}-{column}"


def layered(width: int, depth: int) -> Topology:
    """width x depth nodes plus one sink; listed parents before children."""
    nodes: Topology = []
    for k in range(depth):
        for j in range(width):
            parents = [] if k == 0 else sorted({node_id(k - 1, j), node_id(k - 1, (j + 1) % width)})
            nodes.append((node_id(k, j), parents))
    nodes.append((SINK, [node_id(depth - 1, j) for j in range(width)]))
    return nodes


def levels(topology: Topology) -> int:
    """Length of the longest path in nodes (the number of sequential steps)."""
    level: dict[str, int] = {}
    for node, parents in topology:
        level[node] = 1 + max((level[p] for p in parents), default=0)
    return max(level.values())


def agentgraph_document(
    name: str, topology: Topology, spec: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """An agentgraph graph document; `spec(node)` gives each node's fields (model,
    prompt...), the ids and `after` come from the topology."""
    nodes = []
    for node, parents in topology:
        entry: dict[str, Any] = {"id": node, **spec(node)}
        if parents:
            entry["after"] = parents
        nodes.append(entry)
    return {"name": name, "nodes": nodes}


class RanState(TypedDict):
    """Every LangGraph node appends its name; the reducer makes parallel writes merge."""

    ran: Annotated[list[str], operator.add]


def langgraph_graph(topology: Topology, make_node: Callable[[str], Any]) -> Any:
    """The topology as an (uncompiled) LangGraph StateGraph over `RanState`;
    `make_node(name)` gives each node's async function (RanState -> update)."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(RanState)
    children: set[str] = set()
    for node, _parents in topology:
        graph.add_node(node, make_node(node))
    for node, parents in topology:
        if not parents:
            graph.add_edge(START, node)
        elif len(parents) == 1:
            graph.add_edge(parents[0], node)
        else:
            graph.add_edge(parents, node)  # waits for all of them
        children.update(parents)
    for node, _parents in topology:
        if node not in children:
            graph.add_edge(node, END)
    return graph


def check_each_ran_once(variant: str, ran: Iterable[str], topology: Topology) -> None:
    """Apples to apples: every node of the topology ran exactly once, nothing else ran."""
    counts = Counter(ran)
    expected = {node for node, _ in topology}
    wrong = {n: c for n, c in counts.items() if c != 1 or n not in expected}
    missing = sorted(expected - counts.keys())
    if wrong or missing:
        raise AssertionError(
            f"{variant}: every node must run exactly once; ran more than once or unknown: "
            f"{dict(sorted(wrong.items()))}, never ran: {missing[:10]}"
            f"{' …' if len(missing) > 10 else ''}"
        )
