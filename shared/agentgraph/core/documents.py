"""Reading untrusted documents (graph files, request bodies) without letting a small one
cost a lot: YAML without aliases, JSON and YAML nested at most MAX_DEPTH levels.

A 447-byte YAML "billion laughs" (anchors and aliases) expands to 10^7 leaves the moment
anything walks it, and a 100,000-level JSON array exhausts the recursion of every walker
after the parser. Both are refused here, before any other code sees the value, with a
problem that says where (docs/security.md).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from agentgraph.core.errors import Problem, RequestInvalid

MAX_DEPTH = 64  # levels of nested mappings and lists in a graph, an input or a body
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


class _NoAliases(yaml.SafeLoader):
    """The safe loader, refusing aliases (`*name`): an alias makes a document as large as
    its anchors repeated, which is how a few hundred bytes become gigabytes. The pure-
    Python loader, for when libyaml is missing."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(_alias_refused(mark.line))
        return super().compose_node(parent, index)


_C_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None)


def _alias_refused(line: int) -> str:
    return f"aliases (*name) are not accepted, found one at line {line + 1}: write the value out"


def _screen_events(text: str | bytes, loader: type[Any]) -> None:
    """One pass over libyaml's events (a flat stream: libyaml parses with explicit
    stacks, so no depth can exhaust a stack) refusing an alias and nesting deeper than
    MAX_DEPTH before the C composer, which recurses in C, ever sees the document."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            raise yaml.YAMLError(_alias_refused(mark.line if mark is not None else 0))
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise RecursionError
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_yaml(text: str | bytes, where: str = "body") -> Any:
    """YAML (JSON is YAML too) to plain values, or RequestInvalid naming `where`.

    With libyaml (the usual case) the document is screened as a stream of events, then
    loaded by `CSafeLoader`: together some 20 times faster than the pure-Python loader,
    whose cost was most of `agentgraph run` on a large graph."""
    try:
        if _C_LOADER is not None:
            _screen_events(text, _C_LOADER)
            value = yaml.load(text, Loader=_C_LOADER)
        else:
            value = yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own limit (1,000) came first
            raise RequestInvalid([Problem(where, _TOO_DEEP)]) from exc
        raise RequestInvalid([Problem(where, f"not valid YAML/JSON: {exc}")]) from exc
    except RecursionError as exc:
        raise RequestInvalid([Problem(where, _TOO_DEEP)]) from exc
    check_depth(value, where)
    return value


def parse_json(text: str | bytes, where: str = "body") -> Any:
    """JSON to plain values, or RequestInvalid naming `where`."""
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise RequestInvalid([Problem(where, f"nested deeper than {MAX_DEPTH} levels")]) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestInvalid([Problem(where, f"not valid JSON: {exc}")]) from exc
    check_depth(value, where)
    return value


def too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The path of the first place nested deeper than `limit`, or None. Iterative, so it
    is safe on any depth."""
    todo: list[tuple[Any, int, str]] = [(value, 0, "")]
    while todo:
        item, depth, path = todo.pop()
        if not isinstance(item, dict | list):
            continue
        if depth >= limit:
            return path
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if isinstance(child, dict | list):
                part = f"[{key}]" if isinstance(item, list) else f".{key}"
                todo.append((child, depth + 1, path + part))
    return None


def check_depth(value: Any, where: str = "body") -> None:
    """RequestInvalid when `value` is nested deeper than MAX_DEPTH."""
    deep = too_deep(value)
    if deep is not None:
        raise RequestInvalid([Problem(f"{where}{deep}", f"nested deeper than {MAX_DEPTH} levels")])
