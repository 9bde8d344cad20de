"""Named exception types. Messages say what was expected and what was found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph or an input, located by a path like nodes[3].after."""

    path: str
    message: str
    node_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str | None]:
        return {"path": self.path, "message": self.message, "node_id": self.node_id}


class AgentgraphError(Exception):
    """Base of every error agentgraph raises on purpose."""


class _Problems(AgentgraphError):
    what = "invalid"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{self.what}: {count} problem{'s' if count != 1 else ''}\n{lines}")


class GraphInvalid(_Problems):
    what = "invalid graph"


class InputInvalid(_Problems):
    what = "invalid run input"


class RunNotFound(AgentgraphError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class IdempotencyConflict(AgentgraphError):
    """The same Idempotency-Key was used with a different request body."""


class LlmNotConfigured(AgentgraphError):
    """A graph needs a model whose provider has no credentials (e.g. no GEMINI_API_KEY)."""


class ToolFailed(AgentgraphError):
    """A tool raised; carries the original type name so the node error shows it."""

    def __init__(self, type_name: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.retryable = retryable


class RetryableToolError(AgentgraphError):
    """Raise from a tool to ask for a retry with backoff (e.g. a flaky HTTP call)."""


class RequestInvalid(_Problems):
    """An API request body that is not what the endpoint takes (shape, types, JSON)."""

    what = "invalid request"


class GraphNotFound(AgentgraphError):
    def __init__(self, graph_id: str, version: int | None = None) -> None:
        which = f"version {version} of graph {graph_id!r}" if version else f"graph {graph_id!r}"
        super().__init__(f"no {which}")
        self.graph_id = graph_id
        self.version = version


class AuthError(AgentgraphError):
    """The caller could not be authenticated (HTTP 401): no, malformed or invalid token."""


class Forbidden(AgentgraphError):
    """The caller is known but may not do this (HTTP 403)."""


class AuthMisconfigured(AgentgraphError):
    """The deployment's auth settings are unsafe or incomplete (e.g. auth off outside the
    emulators); every request fails until the environment is fixed."""
