"""JSON Schemas from untrusted graphs (`input`, `output_schema`), checked and applied
without network access and without backtracking regular expressions.

- `$ref` may only point inside the schema (`#...`). jsonschema's default would fetch any
  other URL when validating (SSRF, and a request that stalls the event loop); here no
  registry ever retrieves, and validation refuses a remote reference before that.
- `pattern` and `patternProperties` run on RE2 (linear time): `^(a+)+$`, which doubles its
  work per character on Python's `re`, costs nothing. A pattern RE2 cannot compile
  (backreferences, lookarounds) is a validation problem naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import re2
from jsonschema.exceptions import ValidationError
from referencing import Registry

from agentgraph.core.errors import Problem

_REFERENCE_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
_NO_RETRIEVAL = Registry()
_PLAIN_KEY = re.compile(
    r"[A-Za-z0-9_$@-]+"
)  # resolves nothing it was not given, and retrieves nothing


def schema_problems(path: str, schema: Any) -> list[Problem]:
    """Everything wrong with a schema, each located under `path`."""
    if not isinstance(schema, dict):
        return [Problem(path, f"must be a JSON Schema object, found {type(schema).__name__}")]
    problems = list(_unsafe_parts(path, schema))
    if problems:
        return problems
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [
            Problem(json_path(path, exc.absolute_path), f"not a valid JSON Schema: {exc.message}")
        ]
    return []


def errors(schema: dict[str, Any], value: Any) -> list[ValidationError]:
    """The ways `value` does not match `schema`, ordered by where they are."""
    base = jsonschema.validators.validator_for(schema)
    validator = _re2_validator(base)(schema, registry=_NO_RETRIEVAL)
    return sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))


def json_path(prefix: str, parts: Any) -> str:
    """`prefix.key[3].other`; a key that is not a plain name is quoted (`["\\r"]`), so a
    path always shows where it points."""
    return prefix + "".join(_path_part(p) for p in parts)


def _path_part(part: Any) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    text = str(part)
    return f".{text}" if _PLAIN_KEY.fullmatch(text) else f"[{json.dumps(text)}]"


def _unsafe_parts(path: str, schema: Any) -> Iterator[Problem]:
    todo: list[tuple[Any, str]] = [(schema, path)]
    while todo:
        item, where = todo.pop()
        if isinstance(item, list):
            todo.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
            continue
        if not isinstance(item, dict):
            continue
        for key in _REFERENCE_KEYS:
            target = item.get(key)
            if isinstance(target, str) and not target.startswith("#"):
                yield Problem(
                    f"{where}.{key}",
                    f"refers to {target[:100]!r}; only references inside the schema "
                    "('#/...') are allowed: nothing is ever fetched",
                )
        pattern = item.get("pattern")
        if isinstance(pattern, str):
            yield from _pattern_problem(f"{where}.pattern", pattern)
        properties = item.get("patternProperties")
        if isinstance(properties, dict):
            for regex in properties:
                yield from _pattern_problem(f"{where}.patternProperties", regex)
        todo.extend((child, f"{where}.{key}") for key, child in item.items())


def _pattern_problem(where: str, pattern: str) -> Iterator[Problem]:
    try:
        _compile(pattern)
    except re2.error as exc:
        yield Problem(
            where,
            f"pattern {pattern[:100]!r} is not supported ({exc}): patterns run on RE2, "
            "without backreferences or lookarounds",
        )


def _compile(pattern: str) -> Any:
    return re2.compile(pattern)


def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _compile(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _re2_pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        compiled = _compile(pattern)
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_EXTENDED: dict[type, type] = {}


def _re2_validator(base: Any) -> Any:
    """The draft's validator with `pattern` and `patternProperties` on RE2."""
    if base not in _EXTENDED:
        _EXTENDED[base] = jsonschema.validators.extend(
            base, {"pattern": _re2_pattern, "patternProperties": _re2_pattern_properties}
        )
    return _EXTENDED[base]
