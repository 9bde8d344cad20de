"""Reading untrusted documents (graph files, request bodies) without letting a small one
cost a lot: YAML without aliases, JSON and YAML nested at most MAX_DEPTH levels.

A 447-byte YAML "billion laughs" (anchors and aliases) expands to 10^7 leaves the moment
anything walks it, and a 100,000-level JSON array exhausts the recursion of every walker
after the parser. Both are refused here, before any other code sees the value, with a
problem that says where (docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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


_RESOLVER = yaml.resolver.Resolver()  # the implicit tags of SafeLoader's plain scalars
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"
# Resolved tags built here as SafeConstructor builds them; any other (merge keys `<<`,
# `=`) leaves the document to `yaml.load`.
_SCALARS = tuple(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp")
)
_UNSURE = object()  # the events hold something only `yaml.load` builds faithfully


def _load_events(text: str | bytes, loader: type[Any]) -> Any:
    """One pass over libyaml's events (a flat stream: libyaml parses with explicit
    stacks, so no depth can exhaust a stack) refusing an alias and nesting deeper than
    MAX_DEPTH, building the value as it goes: plain mappings, sequences and untagged
    scalars, resolved and constructed by SafeLoader's own resolver and constructor, so
    the value is the one `yaml.load` builds, at a third of its cost. Anything else
    (tags, anchors, merge keys, a key that is a collection, several documents) only
    screens, and returns _UNSURE: the caller loads it with `CSafeLoader`, whose C
    composer recurses, after this pass has refused what could make it recurse too deep."""
    depth = 0
    building = True
    stack: list[Any] = []  # open collections: a list, or a dict with its pending key
    keys: list[Any] = []  # per open mapping: _UNSURE before a key, the key after it
    value: Any = None
    documents = 0
    events: Iterable[Any] = yaml.parse(text, Loader=loader)
    for event in events:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if not building:
                continue
            if event.tag is not None or event.anchor is not None:
                building = False
                continue
            item: Any = event.value
            if event.implicit[0]:
                tag = _RESOLVER.resolve(yaml.ScalarNode, item, event.implicit)
                if tag != _STR:
                    if tag not in _SCALARS:
                        building = False
                        continue
                    node = yaml.ScalarNode(tag, item)
                    item = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
            building = _add(stack, keys, item)
            if not stack:
                value = item
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            depth += 1
            if depth > MAX_DEPTH:
                raise RecursionError
            if not building:
                continue
            if event.tag is not None or event.anchor is not None:
                building = False
                continue
            if stack and isinstance(stack[-1], dict) and keys[-1] is _UNSURE:
                building = False  # a collection as a mapping's key: unhashable
                continue
            stack.append({} if kind is yaml.MappingStartEvent else [])
            keys.append(_UNSURE)
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            depth -= 1
            if not building:
                continue
            done = stack.pop()
            keys.pop()
            if stack:
                building = _add(stack, keys, done)
            else:
                value = done
        elif kind is yaml.AliasEvent:
            mark = event.start_mark
            raise yaml.YAMLError(_alias_refused(mark.line if mark is not None else 0))
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            building = building and documents == 1
    return value if building else _UNSURE


def _add(stack: list[Any], keys: list[Any], item: Any) -> bool:
    """Put a finished value in the collection open on top (as a mapping's key when it
    waits for one); False for a key that `yaml.load` would merge or refuse."""
    if not stack:
        return True
    top = stack[-1]
    if isinstance(top, list):
        top.append(item)
    elif keys[-1] is _UNSURE:
        try:
            hash(item)
        except TypeError:
            return False
        keys[-1] = item
    else:
        top[keys[-1]] = item
        keys[-1] = _UNSURE
    return True


def parse_yaml(text: str | bytes, where: str = "body") -> Any:
    """YAML (JSON is YAML too) to plain values, or RequestInvalid naming `where`.

    With libyaml (the usual case) the document is screened and built from one stream of
    events (`_load_events`), some 60 times faster than the pure-Python loader, whose cost
    was most of `agentgraph run` on a large graph; what that pass cannot build is loaded
    by `CSafeLoader` once screened."""
    screened = False  # nesting checked on the way (`_load_events`), not walked again
    try:
        if _C_LOADER is not None:
            value = _load_events(text, _C_LOADER)
            screened = value is not _UNSURE
            if not screened:
                value = yaml.load(text, Loader=_C_LOADER)
        else:
            value = yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own limit (1,000) came first
            raise RequestInvalid([Problem(where, _TOO_DEEP)]) from exc
        raise RequestInvalid([Problem(where, f"not valid YAML/JSON: {exc}")]) from exc
    except RecursionError as exc:
        raise RequestInvalid([Problem(where, _TOO_DEEP)]) from exc
    if not screened:
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
