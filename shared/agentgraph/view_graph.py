"""Drawings of a graph (`agentgraph graph`): Mermaid for docs and GitHub, text for a
terminal. A run's constructs are drawn as written, not as the instances they grow into:
a subgraph is a box of its own nodes (a Mermaid `subgraph` block), a map is one node
labelled with its expression and max_concurrency, a loop says its `until` and its bound.
"""

from __future__ import annotations

import re

from agentgraph.core import grow
from agentgraph.core.graph import Graph, Node

_BRACES = re.compile(r"^\s*\{\{\s*(.*?)\s*\}\}\s*$", re.S)


def _expr(template: str) -> str:
    """`{{ nodes.a.output }}` -> `nodes.a.output`: the expression, one line."""
    match = _BRACES.match(template)
    return " ".join((match.group(1) if match else template).split())


def kind_text(node: Node) -> str:
    """What the node does: `tool t`, `agent <model>`, `agent <profile expression>`,
    `approval`, `subgraph of N`."""
    if node.body is not None:
        return f"subgraph of {len(node.body)}"
    if node.kind == "tool":
        return f"tool {node.tool}"
    if node.kind == "gate":
        return "approval"
    what = f"agent {_expr(node.agent)}" if node.agent else f"agent {node.model}"
    return what + (" · approval" if node.approval is not None else "")


def grows_text(node: Node) -> list[str]:
    """How the node grows: its map (expression, max_concurrency) and its loop (until,
    bound, what running out does)."""
    parts = []
    if node.map is not None:
        lanes = node.max_concurrency or grow.DEFAULT_MAP_CONCURRENCY
        parts.append(f"map over {_expr(node.map)} · max_concurrency {lanes}")
    if node.loop is not None:
        loop = node.loop
        text = f"loop until {_expr(loop.until)} · max {loop.max_iterations}"
        if loop.on_exhausted == "succeed":
            text += " (then succeed)"
        parts.append(text)
    return parts


# ---- mermaid --------------------------------------------------------------------------------


def _mermaid_id(path: str) -> str:
    return path.replace("/", "__")


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid_nodes(graph: Graph, prefix: str, indent: str, lines: list[str]) -> None:
    for node in graph.nodes.values():
        path = prefix + node.id
        mid = _mermaid_id(path)
        if node.body is not None:
            title = " · ".join([f"{node.id}: {kind_text(node)}", *grows_text(node)])
            lines.append(f'{indent}subgraph {mid}["{_label(title)}"]')
            lines.append(f"{indent}    direction TB")
            _mermaid_nodes(node.body, path + "/", indent + "    ", lines)
            lines.append(f"{indent}end")
            continue
        label = "<br/>".join(_label(t) for t in (node.id, kind_text(node), *grows_text(node)))
        if node.map is not None:
            shape = f'[["{label}"]]'  # a map: one node standing for its items
        elif node.loop is not None:
            shape = f'{{{{"{label}"}}}}'  # a loop: a hexagon
        elif node.kind == "tool":
            shape = f'["{label}"]'
        else:
            shape = f'("{label}")'
        lines.append(f"{indent}{mid}{shape}")


def _mermaid_edges(graph: Graph, prefix: str, indent: str, lines: list[str]) -> None:
    for node in graph.nodes.values():
        for child in node.children:
            lines.append(
                f"{indent}{_mermaid_id(prefix + node.id)} --> {_mermaid_id(prefix + child)}"
            )
        if node.body is not None:
            _mermaid_edges(node.body, prefix + node.id + "/", indent, lines)


def mermaid(graph: Graph) -> str:
    lines = ["flowchart TD"]
    _mermaid_nodes(graph, "", "    ", lines)
    _mermaid_edges(graph, "", "    ", lines)
    return "\n".join(lines)


# ---- text -----------------------------------------------------------------------------------


def _ascii_layers(graph: Graph, indent: str, lines: list[str]) -> None:
    depth: dict[str, int] = {}
    for node in graph.nodes.values():  # topological order
        depth[node.id] = 1 + max((depth[p] for p in node.parents), default=-1)
    for layer in range(max(depth.values(), default=-1) + 1):
        lines.append(f"{indent}layer {layer}")
        for node in (n for n in graph.nodes.values() if depth[n.id] == layer):
            what = " · ".join([kind_text(node), *grows_text(node)])
            arrow = f" ──▶ {', '.join(node.children)}" if node.children else "  (sink)"
            lines.append(f"{indent}  [{node.id}] {what}{arrow}")
            if node.body is not None:
                _ascii_layers(node.body, indent + "      ", lines)


def ascii(graph: Graph) -> str:
    lines = [f"{graph.name}: {len(graph)} nodes"]
    _ascii_layers(graph, "", lines)
    return "\n".join(lines)
