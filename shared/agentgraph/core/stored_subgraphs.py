"""Stored subgraphs: a node's `graph: name@version` replaced, when a run starts, by the
`nodes:` of that stored graph, so the run's snapshot holds exactly what runs. Pure: the
caller fetches the definitions (`engine_grow.resolve_stored_subgraphs`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

GraphRef = tuple[str, int | None]
MAX_REF_ROUNDS = 4  # stored graphs that use stored graphs: as deep as subgraphs nest


def graph_refs(document: Mapping[str, Any]) -> set[GraphRef]:
    """The `graph: name@version` references of a document's nodes, at any depth."""
    found: set[GraphRef] = set()
    for node in _all_node_specs(document.get("nodes")):
        ref = node.get("graph")
        if isinstance(ref, str):
            name, _, version = ref.partition("@")
            found.add((name, int(version) if version.isdigit() else None))
    return found


def inline_graph_refs(
    document: Mapping[str, Any], stored: Mapping[GraphRef, Mapping[str, Any]]
) -> dict[str, Any]:
    """The document with each `graph: ref` whose definition is in `stored` replaced by
    that graph's `nodes:` (its `defaults` applied to them): the run's snapshot then holds
    exactly what ran, whatever is saved under that name later. Unresolved refs are left
    for validation to report."""

    def inline(nodes: Any) -> Any:
        if not isinstance(nodes, list):
            return nodes
        out = []
        for node in nodes:
            if not isinstance(node, dict):
                out.append(node)
                continue
            node = dict(node)
            ref = node.get("graph")
            if isinstance(ref, str):
                name, _, version = ref.partition("@")
                definition = stored.get((name, int(version) if version.isdigit() else None))
                if definition is not None:
                    del node["graph"]
                    node["nodes"] = _with_defaults(definition)
            if "nodes" in node:
                node["nodes"] = inline(node["nodes"])
            out.append(node)
        return out

    return {**document, "nodes": inline(document.get("nodes"))}


def _with_defaults(definition: Mapping[str, Any]) -> list[Any]:
    defaults = definition.get("defaults")
    nodes = definition.get("nodes")
    if not isinstance(nodes, list):
        return []
    if not isinstance(defaults, dict):
        return list(nodes)
    return [{**defaults, **n} if isinstance(n, dict) else n for n in nodes]


def _all_node_specs(nodes: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(nodes, list):
        return
    for node in nodes:
        if isinstance(node, dict):
            yield node
            yield from _all_node_specs(node.get("nodes"))
