"""Registered tools as the model sees them (function declarations), and calls from the
model made safely (arguments checked against the signature before the tool runs).

The declaration is derived from the Python function: its name, the first paragraph of
its docstring, and a JSON Schema of its parameters built by pydantic from the type hints
(a parameter without a hint takes any JSON value). Parameter descriptions come from a
Google-style `Args:` section when the docstring has one. Nothing is sent for `self`,
`*args` or `**kwargs`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError, validate_call

from agentgraph.core.llm_port import FunctionSpec

_ARG_LINE = re.compile(r"^\s{2,}(?P<name>\w+)\s*(?:\([^)]*\))?\s*:\s*(?P<text>.+)$")


def declaration(name: str, function: Callable[..., Any]) -> FunctionSpec:
    """The FunctionSpec of a registered tool (see the module docstring)."""
    doc = inspect.getdoc(function) or ""
    summary = doc.split("\n\n", 1)[0].strip().replace("\n", " ")
    try:
        schema = _strip_titles(TypeAdapter(function).json_schema())  # type: ignore[arg-type]
    except Exception:  # a hint pydantic cannot express: any arguments, checked when called
        schema = {"type": "object", "properties": {}}
    schema.pop("additionalProperties", None)
    properties = schema.get("properties") or {}
    for param, text in _arg_docs(doc).items():
        if param in properties and "description" not in properties[param]:
            properties[param]["description"] = text
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return FunctionSpec(name=name, description=summary or f"The tool {name}.", parameters=schema)


async def invoke(function: Callable[..., Any], args: dict[str, Any]) -> Any:
    """Call a tool with a model's arguments, checked and converted by its signature
    first (pydantic): a wrong argument raises ValidationError before the tool runs, and
    goes back to the model as the call's error. Sync tools run on a worker thread."""
    checked = validate_call(function)
    try:
        if inspect.iscoroutinefunction(function):
            return await checked(**args)
        return await asyncio.to_thread(checked, **args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise TypeError(f"invalid arguments: {problems}") from None


def _arg_docs(doc: str) -> dict[str, str]:
    """`name: text` lines of a Google-style `Args:` section."""
    found: dict[str, str] = {}
    inside = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            inside = True
            continue
        if inside:
            if line.strip() and not line.startswith(" "):
                break
            match = _ARG_LINE.match(line)
            if match:
                found[match["name"]] = match["text"].strip()
    return found


def _strip_titles(schema: Any) -> Any:
    """pydantic's generated `title`s repeat the names; the model does not need them."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema
