"""Tool nodes call Python functions registered by name with `@tool`.

A graph names tools as strings, so validation can reject an unknown name before a run
starts, and the same graph runs wherever the same tools are registered (the local
process, or every exec function of a deployment).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Name → callable (sync or async). Satisfies the ToolRegistry port."""

    def __init__(self, parent: Registry | None = None) -> None:
        self._tools: dict[str, Callable[..., Any]] = {}
        self._parent = parent

    def tool(self, function: F | None = None, /, *, name: str | None = None) -> Any:
        """Register a function as a tool, under its own name or `name`."""

        def register(fn: F) -> F:
            key = name or fn.__name__
            existing = self._tools.get(key)
            if existing is not None and existing is not fn and _qualname(existing) != _qualname(fn):
                raise ValueError(f"tool {key!r} is already registered by {_qualname(existing)}")
            self._tools[key] = fn
            return fn

        return register(function) if function is not None else register

    def names(self) -> list[str]:
        inherited = self._parent.names() if self._parent else []
        return sorted(set(inherited) | set(self._tools))

    def get(self, name: str) -> Callable[..., Any]:
        if name in self._tools:
            return self._tools[name]
        if self._parent is not None:
            return self._parent.get(name)
        raise KeyError(f"unknown tool {name!r}; known tools: {', '.join(self.names()) or 'none'}")

    def child(self) -> Registry:
        """A registry that sees these tools plus its own (for tests and plugins)."""
        return Registry(parent=self)


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


default_registry = Registry()
tool = default_registry.tool


def load_modules(modules: Iterable[str]) -> None:
    """Import user modules whose `@tool` decorators register more tools: a dotted name
    (importable from the working directory, like `python -m`) or a path to a .py file."""
    for module in (m.strip() for m in modules):
        if not module:
            continue
        if module.endswith(".py") or os.sep in module:
            path = Path(module).resolve()
            if not path.exists():
                raise FileNotFoundError(f"tools module {module!r}: no such file")
            spec = importlib.util.spec_from_file_location(
                f"agentgraph_user_tools.{path.stem}", path
            )
            assert spec is not None and spec.loader is not None
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = loaded
            spec.loader.exec_module(loaded)
            continue
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        importlib.import_module(module)


def _register_builtins() -> None:
    """The built-in tools (http_get; read_run_file and write_run_file) are in every
    registry, so a graph may name them wherever agentgraph runs. Each is safe by
    default: see its module for what it refuses."""
    importlib.import_module("agentgraph.tools.web")
    importlib.import_module("agentgraph.tools.run_files")


_register_builtins()
