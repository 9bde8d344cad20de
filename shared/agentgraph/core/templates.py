"""Templates (`{{ nodes.extract.output }}`) and conditions (`when:`), sandboxed.

Jinja2's SandboxedEnvironment with StrictUndefined: no Python `eval`, no attribute access
to internals, and a reference to something missing is an error rather than an empty
string. References are found statically, so validation can reject a template that reads
a node which is not an ancestor before any node runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

from agentgraph.core.errors import TemplateProblem

ROOT_NAMES = frozenset({"input", "nodes"})
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


def _finalize(value: Any) -> Any:
    """Dicts and lists print as JSON in prompts, not as Python reprs."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


_ENV = SandboxedEnvironment(undefined=StrictUndefined, finalize=_finalize, autoescape=False)
_ENV.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)


@dataclass(frozen=True)
class References:
    """What a template reads: `input` at all, which nodes' results, and anything else."""

    uses_input: bool
    nodes: frozenset[str]
    other_names: frozenset[str]
    dynamic_node_access: bool  # nodes[expr]: cannot be checked, so validation rejects it


def _parse(source: str, *, expression: bool) -> nodes.Template:
    text = "{{ " + source + " }}" if expression else source
    try:
        return _ENV.parse(text)
    except TemplateError as exc:
        raise TemplateProblem(str(exc)) from exc


def references(source: str, *, expression: bool = False) -> References:
    """The names a template reads. `nodes.x` and `nodes['x']` both name node x."""
    tree = _parse(source, expression=expression)
    node_ids: set[str] = set()
    resolved: set[int] = set()  # ids of `nodes` Name nodes accessed with a constant
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(access, nodes.Getattr | nodes.Getitem)
        target = access.node
        if not (isinstance(target, nodes.Name) and target.name == "nodes"):
            continue
        if isinstance(access, nodes.Getattr):
            node_ids.add(access.attr)
        elif isinstance(access.arg, nodes.Const) and isinstance(access.arg.value, str):
            node_ids.add(access.arg.value)
        else:
            continue
        resolved.add(id(target))
    loads = [n for n in tree.find_all(nodes.Name) if n.ctx == "load"]
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    free = {n.name for n in loads} - assigned
    return References(
        uses_input="input" in free,
        nodes=frozenset(node_ids),
        other_names=frozenset(free - ROOT_NAMES - set(_ENV.globals)),
        dynamic_node_access=any(n.name == "nodes" and id(n) not in resolved for n in loads),
    )


@lru_cache(maxsize=4096)
def _compile_template(source: str) -> Any:
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=False)


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a template to text (prompts, system instructions)."""
    try:
        return str(_compile_template(source).render(**context))
    except TemplateError as exc:
        raise TemplateProblem(f"{source!r}: {exc}") from exc


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render tool args. A string that is exactly one `{{ expr }}` keeps the expression's
    type (a list stays a list); other strings render to text; containers recurse."""
    if isinstance(value, str):
        single = _SINGLE_EXPRESSION.match(value)
        if single and "{{" not in single.group(1) and "{%" not in value:
            return evaluate(single.group(1), context)
        return render(value, context) if ("{{" in value or "{%" in value) else value
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one expression (a `when:` condition, or a single-expression arg)."""
    try:
        result = _compile_expression(expression.strip())(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"{expression.strip()!r}: {exc}") from exc
    if isinstance(result, StrictUndefined):
        raise TemplateProblem(f"{expression.strip()!r} is undefined")
    return result


def condition_holds(expression: str, context: Mapping[str, Any]) -> bool:
    return bool(evaluate(expression, context))
