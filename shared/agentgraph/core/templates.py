"""Templates (`{{ nodes.extract.output }}`) and conditions (`when:`), sandboxed.

Jinja2's immutable SandboxedEnvironment with StrictUndefined: no Python `eval`, no
attribute access to internals, no mutation, and a reference to something missing is an
error rather than an empty string. References are found statically, so validation can
reject a template that reads a node which is not an ancestor, or an attribute the sandbox
would refuse, before any node runs.

A graph is untrusted input, and templates are rendered on the shared event loop of the
api (a root's `when`), of `complete` (a child's `when`) and of exec, so every render is
bounded (docs/security.md): operators and filters that could build a huge value refuse
to (`MAX_TEXT` characters, `MAX_POWER_BITS`), `range` yields at most `MAX_RANGE` items,
the rendered text stops at `MAX_TEXT`, and a render that runs longer than
`RENDER_TIME_LIMIT_S` (nested loops over data) is stopped with a TemplateProblem.

What this costs grows with the graph, so it is paid only where it buys something: text
without markup is its own rendering (no Jinja compile, about 1.5 ms per distinct
template), and only templates with statements (`{% ... %}`: loops, macros, recursion)
run under the `sys.settrace` clock, which doubles to quadruples a render. An expression
alone cannot loop or recurse: each of its operations is bounded by the size checks
above and by `MAX_RANGE`, and a trace hook could not interrupt one C-level call anyway.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import (
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
)

from agentgraph.core.errors import TemplateProblem

ROOT_NAMES = frozenset({"input", "nodes"})
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


def _finalize(value: Any) -> Any:
    """Dicts and lists print as JSON in prompts, not as Python reprs."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


MAX_TEXT = 12 * 1024 * 1024  # characters: above the 10 MiB output limit a template may quote
MAX_POWER_BITS = 100_000  # an integer result of ** may have at most this many bits
MAX_RANGE = 10_000
MAX_LOOP_ITERATIONS = 1_000_000  # statically known (range of constants), across nesting
RENDER_TIME_LIMIT_S = 1.0
_TEMPLATE_FILE = "<template>"  # the filename Jinja gives code compiled from strings
# str.format and format_map are refused too: a width in the format string ('{:>999999999}')
# would build the value before any check could see its size.
_UNSAFE_NAMES = (
    UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | {"mro", "format", "format_map"}
)
_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _too_big(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple | dict) and len(value) > MAX_TEXT


def _refuse(what: str) -> TemplateProblem:
    return TemplateProblem(f"{what}; templates may build at most {MAX_TEXT:,} characters")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse, before computing it, an operation whose result would be huge."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
            if sized and len(seq) * max(count, 0) > MAX_TEXT:
                raise _refuse(f"repeating a value {count:,} times is too much")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left) > 1 and right * abs(left).bit_length() > MAX_POWER_BITS:
            raise TemplateProblem(f"{left} ** {right} is too large a number")
    elif operator == "%" and isinstance(left, str):
        for width in _WIDTH.findall(left):
            if any(w == "*" or (w and int(w) > MAX_TEXT) for w in width):
                raise _refuse("a %-format width is too large")


def _limited(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter or method that refuses a size argument over the limit (`center(10**9)`)
    before it runs, and a result over the limit after."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_TEXT:
                raise _refuse(f"{getattr(function, '__name__', 'a call')}({arg:,}) is too large")
        result = function(*args, **kwargs)
        if _too_big(result):
            raise _refuse(f"{getattr(function, '__name__', 'a call')} made a value too large")
        return result

    return call


def _range(*args: int) -> range:
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise TemplateProblem(f"range() of {len(found):,} items; the limit is {MAX_RANGE:,}")
    return found


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators that can build huge values checked first."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return attr not in _UNSAFE_NAMES and super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`x.items` of a mapping with an `items` key is that key's value, not the dict
        method: agents' JSON outputs often have fields called `items`, `keys`, `values`
        or `update`, and Jinja would otherwise hand back the method (`dict.items`)."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None

        def refused(*args: Any, **kwargs: Any) -> str:
            raise TemplateProblem("str.format is not available in templates: use ~ or |format")

        return refused

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if _too_big(result):
            raise _refuse(f"the result of {operator!r} is too large")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        return _limited(super().call)(__context, __obj, *args, **kwargs)


_ENV = _BoundedSandbox(undefined=StrictUndefined, finalize=_finalize, autoescape=False)
_ENV.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
_ENV.filters = {name: _limited(f) for name, f in _ENV.filters.items()}
_percent_format = _ENV.filters["format"]


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_binop("%", str(value), args)
    return _percent_format(value, *args, **kwargs)


_ENV.filters["format"] = _format_filter
_ENV.globals["range"] = _range


def _plain(source: str) -> bool:
    """Text Jinja would give back unchanged (but for one trailing newline, which it drops):
    no markup and no carriage return (Jinja normalises line ends)."""
    return "{" not in source and "\r" not in source


def _can_loop(source: str) -> bool:
    """Whether a template has statements (`{%`): only they can loop or recurse, so only
    they need the render-time clock. The delimiters are Jinja's defaults (no line
    statements), so a statement always contains `{%`."""
    return "{%" in source


def _bounded_time(work: Callable[[], Any]) -> Any:
    """Run `work` (a render) and stop it with a TemplateProblem once it has run for
    RENDER_TIME_LIMIT_S: a trace hook that checks the clock on each line of template code
    (only template frames are traced, so the cost stays with the template)."""
    deadline = time.monotonic() + RENDER_TIME_LIMIT_S

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise TemplateProblem(
                f"rendering took longer than {RENDER_TIME_LIMIT_S:g} s: loops over too much data?"
            )
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        return on_line if frame.f_code.co_filename == _TEMPLATE_FILE else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        return work()
    finally:
        sys.settrace(previous)


@dataclass(frozen=True)
class References:
    """What a template reads: `input` at all, which nodes' results, and anything else."""

    uses_input: bool
    nodes: frozenset[str]
    other_names: frozenset[str]
    dynamic_node_access: bool  # nodes[expr]: cannot be checked, so validation rejects it
    unsafe: tuple[str, ...] = ()  # what the sandbox would refuse at render time, said why


_NO_REFERENCES = References(False, frozenset(), frozenset(), False)


def _parse(source: str, *, expression: bool) -> nodes.Template:
    text = "{{ " + source + " }}" if expression else source
    try:
        return _ENV.parse(text)
    except TemplateError as exc:
        raise TemplateProblem(str(exc)) from exc


def references(source: str, *, expression: bool = False) -> References:
    """The names a template reads. `nodes.x` and `nodes['x']` both name node x."""
    if not expression and _plain(source):
        return _NO_REFERENCES
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
        unsafe=tuple(_unsafe(tree)),
    )


def _unsafe(tree: nodes.Template) -> Iterator[str]:
    """What the sandbox would refuse when the template renders, found without rendering:
    internal attributes (`__class__`, `mro`, `func_globals`), constant operations whose
    result is over the limits (`'a' * 10**9`), and loops over ranges of constants that
    would run too many times."""
    for access in tree.find_all(nodes.Getattr):
        name = access.attr
        if name.startswith("_") or name in _UNSAFE_NAMES:
            yield (
                f"reads attribute {name!r}, which the sandbox refuses "
                f"(a key of that name reads as x[{name!r}])"
            )
    for binop in tree.find_all(nodes.BinExpr):
        left, right = _const(binop.left), _const(binop.right)
        if left is not None and right is not None:
            try:
                _check_binop(binop.operator, left, right)
            except TemplateProblem as exc:
                yield str(exc)
    for loop in _outer_loops(tree):
        count = _iterations(loop)
        if count > MAX_LOOP_ITERATIONS:
            yield (
                f"loops would run {count:,} times; the limit is {MAX_LOOP_ITERATIONS:,} "
                f"(and range() takes at most {MAX_RANGE:,} items)"
            )


def _const(node: nodes.Node) -> Any:
    """The value of a constant expression (nested constant arithmetic included)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Neg):
        inner = _const(node.node)
        return -inner if isinstance(inner, int | float) else None
    if isinstance(node, nodes.BinExpr) and node.operator in ("*", "**", "+", "-"):
        left, right = _const(node.left), _const(node.right)
        if isinstance(left, int) and isinstance(right, int):
            try:
                _check_binop(node.operator, left, right)
            except TemplateProblem:
                return None  # reported where the operation itself is found
            if node.operator == "**" and right < 0:
                return None
            return {"*": left * right, "**": left**right, "+": left + right, "-": left - right}[
                node.operator
            ]
    return None


def _outer_loops(tree: nodes.Node) -> Iterator[nodes.For]:
    for loop in tree.find_all(nodes.For):
        yield loop
        return  # the first outermost loop; its nested ones are counted inside it


def _iterations(loop: nodes.For) -> int:
    """Iterations of a loop over range(constants), times its most expensive nested loop."""
    own = 1
    call = loop.iter
    if (
        isinstance(call, nodes.Call)
        and isinstance(call.node, nodes.Name)
        and call.node.name == "range"
    ):
        args = [_const(a) for a in call.args]
        if args and all(isinstance(a, int) for a in args):
            try:
                own = len(range(*args))
            except (ValueError, TypeError):
                own = 1
    inner = max((_iterations(n) for n in _direct_loops(loop)), default=1)
    return own * inner


def _direct_loops(loop: nodes.For) -> Iterator[nodes.For]:
    """The For nodes inside `loop`'s body that are not inside another For of the body."""
    todo: list[nodes.Node] = list(loop.body) + list(loop.else_)
    while todo:
        node = todo.pop()
        if isinstance(node, nodes.For):
            yield node
        else:
            todo.extend(node.iter_child_nodes())


@lru_cache(maxsize=4096)
def _compile_template(source: str) -> Any:
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=False)


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a template to text (prompts, system instructions), at most MAX_TEXT long."""
    if _plain(source):
        return source[:-1] if source.endswith("\n") else source

    def work() -> str:
        parts: list[str] = []
        size = 0
        for part in _compile_template(source).generate(**context):
            size += len(part)
            if size > MAX_TEXT:
                raise _refuse("the rendered text is too long")
            parts.append(part)
        return "".join(parts)

    try:
        return str(_bounded_time(work) if _can_loop(source) else work())
    except TemplateError as exc:
        raise TemplateProblem(f"{_excerpt(source)}: {exc}") from exc
    except (OverflowError, MemoryError, RecursionError) as exc:
        raise TemplateProblem(f"{_excerpt(source)}: {type(exc).__name__}") from exc


def _excerpt(source: str) -> str:
    return repr(source if len(source) <= 200 else source[:200] + "…")


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


def bare_expression(source: str) -> str:
    """An expression written either bare (`nodes.a.output`) or as one `{{ ... }}`
    (`map: "{{ nodes.a.output }}"`): the expression itself."""
    single = _SINGLE_EXPRESSION.match(source)
    if single and "{{" not in single.group(1) and "{%" not in source:
        return single.group(1).strip()
    return source


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one expression (a `when:` condition, or a single-expression arg)."""
    source = expression.strip()
    try:
        result = _compile_expression(source)(**context)  # an expression cannot loop
    except TemplateError as exc:
        raise TemplateProblem(f"{_excerpt(source)}: {exc}") from exc
    except (OverflowError, MemoryError, RecursionError) as exc:
        raise TemplateProblem(f"{_excerpt(source)}: {type(exc).__name__}") from exc
    if isinstance(result, StrictUndefined):
        raise TemplateProblem(f"{_excerpt(source)} is undefined")
    if _too_big(result):
        raise _refuse(f"{_excerpt(source)} is too large")
    return result


def condition_holds(expression: str, context: Mapping[str, Any]) -> bool:
    return bool(evaluate(expression, context))
