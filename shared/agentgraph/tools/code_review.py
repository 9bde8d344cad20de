"""The demo's tools: a small code review of real Python source, using `ast`.

extract_functions → complexity (per function) and detect_issues → suggest_improvements.
"""

from __future__ import annotations

import ast
from typing import Any

from agentgraph.tools import tool

_BRANCHES = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.Try,
    ast.With,
    ast.AsyncWith,
    ast.IfExp,
    ast.ExceptHandler,
    ast.comprehension,
    ast.Assert,
    ast.Match,
)


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"source does not parse: line {exc.lineno}: {exc.msg}") from exc


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@tool
def extract_functions(source: str) -> dict[str, Any]:
    """Every function and method: name, line span, arguments, docstring presence."""
    tree = _parse(source)
    functions = [
        {
            "name": fn.name,
            "line": fn.lineno,
            "end_line": fn.end_lineno or fn.lineno,
            "args": [a.arg for a in fn.args.args],
            "has_docstring": ast.get_docstring(fn) is not None,
            "source": ast.get_source_segment(source, fn) or "",
        }
        for fn in _functions(tree)
    ]
    return {"count": len(functions), "functions": functions}


@tool
def complexity(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """McCabe-style cyclomatic complexity per function: 1 + branches + boolean operators."""
    result = {}
    for fn in functions:
        tree = _parse(fn["source"])
        branches = sum(isinstance(n, _BRANCHES) for n in ast.walk(tree))
        booleans = sum(len(n.values) - 1 for n in ast.walk(tree) if isinstance(n, ast.BoolOp))
        result[fn["name"]] = 1 + branches + booleans
    worst = max(result, key=lambda name: result[name]) if result else None
    return {"per_function": result, "max": result.get(worst, 0) if worst else 0, "worst": worst}


@tool
def detect_issues(source: str) -> list[dict[str, Any]]:
    """Common problems a reviewer flags: bare except, mutable defaults, missing
    docstrings, long functions, too many arguments, print calls, `== None`."""
    tree = _parse(source)
    issues: list[dict[str, Any]] = []

    def add(node: ast.AST, kind: str, message: str) -> None:
        issues.append({"line": getattr(node, "lineno", 0), "kind": kind, "message": message})

    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            add(node, "bare-except", "bare 'except:' also catches KeyboardInterrupt and SystemExit")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
                if isinstance(default, ast.List | ast.Dict | ast.Set):
                    add(
                        default,
                        "mutable-default",
                        f"{node.name}(): mutable default argument is shared between calls",
                    )
            if ast.get_docstring(node) is None and not node.name.startswith("_"):
                add(node, "missing-docstring", f"{node.name}() has no docstring")
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > 50:
                add(node, "long-function", f"{node.name}() is {length} lines long")
            if len(node.args.args) > 5:
                add(node, "too-many-args", f"{node.name}() takes {len(node.args.args)} arguments")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        ):
            add(node, "print", "print() in library code; use logging")
        elif (
            isinstance(node, ast.Compare)
            and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)
            and any(isinstance(c, ast.Constant) and c.value is None for c in node.comparators)
        ):
            add(node, "none-comparison", "compare with None using 'is' / 'is not'")
    return sorted(issues, key=lambda i: (i["line"], i["kind"]))


_ADVICE = {
    "bare-except": "catch the specific exceptions you expect",
    "mutable-default": "default to None and create the container inside the function",
    "missing-docstring": "add a docstring saying why the function exists",
    "long-function": "split it into smaller functions with names",
    "too-many-args": "group related arguments into a dataclass",
    "print": "use the logging module",
    "none-comparison": "write 'x is None'",
}


@tool
def suggest_improvements(
    issues: list[dict[str, Any]],
    complexity: dict[str, Any],
    review: str | None = None,
    threshold: int = 10,
) -> dict[str, Any]:
    """Turn the findings into a prioritised list of suggestions and a score out of 100."""
    suggestions = [
        f"line {i['line']}: {i['message']} — {_ADVICE.get(i['kind'], 'review this')}"
        for i in issues
    ]
    for name, value in sorted(complexity.get("per_function", {}).items(), key=lambda kv: -kv[1]):
        if value > threshold:
            suggestions.append(
                f"{name}(): complexity {value} > {threshold} — simplify its branches"
            )
    score = max(
        0,
        100
        - 7 * len(issues)
        - 5 * sum(1 for v in complexity.get("per_function", {}).values() if v > threshold),
    )
    result: dict[str, Any] = {"score": score, "suggestions": suggestions}
    if review:
        result["review"] = review
    return result
