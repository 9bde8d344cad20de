"""Every exception agentgraph raises on purpose, and what each means to a caller.

One module, so a reader finds them all in one place, and one table (`ERRORS`) that says
for each what the HTTP api answers (status and error code) and what the CLI exits with.
The api and the CLI both read the table; neither keeps a mapping of its own.

Messages say what was expected and what was found, and name the field where there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# CLI exit codes: 0 succeeded, 1 the run failed or was cancelled (or the system could not
# finish the command), 2 the caller's input was wrong (graph, run input, unknown id).
EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_INVALID = 2


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

    @property
    def summary(self) -> str:
        return str(self).split("\n", 1)[0]


# ---- the caller's input -------------------------------------------------------------------


class GraphInvalid(_Problems):
    what = "invalid graph"


class InputInvalid(_Problems):
    what = "invalid run input"


class RequestInvalid(_Problems):
    """An API request body that is not what the endpoint takes (shape, types, JSON)."""

    what = "invalid request"


class RunNotFound(AgentgraphError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class NodeNotFound(AgentgraphError):
    def __init__(self, run_id: str, node_id: str) -> None:
        super().__init__(f"run {run_id!r} has no node {node_id!r}")
        self.run_id = run_id
        self.node_id = node_id


class GraphNotFound(AgentgraphError):
    def __init__(self, graph_id: str, version: int | None = None) -> None:
        which = f"version {version} of graph {graph_id!r}" if version else f"graph {graph_id!r}"
        super().__init__(f"no {which}")
        self.graph_id = graph_id
        self.version = version


class IdempotencyConflict(AgentgraphError):
    """The same Idempotency-Key was used with a different request body."""


class ApprovalConflict(AgentgraphError):
    """An approval decision that can no longer apply: the node was given another decision,
    timed out, or is not (or no longer) waiting for approval. The same decision again is
    not a conflict: it is answered with the decision already recorded."""


class RedriveConflict(AgentgraphError):
    """A redrive of a run that is not failed or cancelled (running, succeeded, pending)."""


class PayloadTooLarge(AgentgraphError):
    """An API request body over the size limit (refused before or while it is read)."""


class LlmNotConfigured(AgentgraphError):
    """A graph needs a model whose provider has no credentials (e.g. no GEMINI_API_KEY)."""


# ---- who is calling -----------------------------------------------------------------------


class AuthError(AgentgraphError):
    """The caller could not be authenticated (HTTP 401): no, malformed or invalid token."""


class Forbidden(AgentgraphError):
    """The caller is known but may not do this (HTTP 403)."""


class Misconfigured(AgentgraphError):
    """The deployment's environment is incomplete or unsafe (a variable a function needs is
    not set); every request that needs it fails until the environment is fixed."""


class AuthMisconfigured(Misconfigured):
    """The deployment's auth settings are unsafe or incomplete (e.g. auth off outside the
    emulators); every request fails until the environment is fixed."""


class LimitExceeded(AgentgraphError):
    """A per-owner limit (core/limits.py) would be exceeded: HTTP 429 with Retry-After; in
    a running run, the node about to call a model fails with this message."""

    def __init__(self, limit: str, message: str, *, retry_after_s: float) -> None:
        super().__init__(f"limit {limit!r} reached: {message}")
        self.limit = limit
        self.retry_after_s = retry_after_s


# ---- the system ---------------------------------------------------------------------------


class Contention(AgentgraphError):
    """A document kept changing under a conditional write, more times than a transition
    retries. Nothing was written; the same request later will very likely succeed (HTTP
    503 with Retry-After, and a redelivery for a message)."""


class RunStuck(AgentgraphError):
    """A run that has not ended although nothing of it is in flight any more: a bug in
    agentgraph (a run must never be left stuck); `agentgraph resume` continues it."""


class ChunkCorrupt(AgentgraphError):
    """A chunked value did not reassemble to the length and hash its marker records."""


class MalformedMessage(AgentgraphError, ValueError):
    """A message that no redelivery can fix: it is logged and acked, never retried."""


# ---- a caller of the api (agentgraph.client) ------------------------------------------------


class ApiError(AgentgraphError):
    """An error answer of a deployed api, as the Python client raises it: the HTTP status,
    the api's `error.code` (a `code` of the table below, or "unexpected" for an answer
    that is not the api's error body), its message and per-field problems."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        problems: Sequence[Problem] = (),
        retry_after_s: float | None = None,
    ) -> None:
        lines = [f"{message} (HTTP {status} {code})", *(f"  {p}" for p in problems)]
        super().__init__("\n".join(lines))
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        self.retry_after_s = retry_after_s

    @property
    def exit_code(self) -> int:
        """What the CLI exits with: the table's exit code for this `code`, else 2 for the
        caller's mistakes (4xx) and 1 for the system's."""
        for _, kind in ERRORS:
            if kind.code == self.code:
                return kind.exit_code
        return EXIT_INVALID if 400 <= self.status < 500 else EXIT_RUN_FAILED


# ---- inside a node: these become the node's error, never an HTTP status ------------------


class TemplateProblem(AgentgraphError, ValueError):
    """A template or condition that does not parse, or refers to something it may not."""


class RetryableToolError(AgentgraphError):
    """Raise from a tool to ask for a retry with backoff (e.g. a flaky HTTP call)."""


class ToolRefused(AgentgraphError, ValueError):
    """A built-in tool refused its arguments under its safety policy (a host not on the
    allowlist, a private address, a path outside the run's scratch space, a size cap).
    Permanent: the same call would be refused again."""


class AttachmentInvalid(AgentgraphError, ValueError):
    """An agent's `attach` entry rendered to something that cannot be sent to the model
    (no such file, too large, unknown MIME type, a local path on a cloud backend)."""


class OutputTooLarge(AgentgraphError, ValueError):
    """A node's output is over the size limit (`engine.MAX_OUTPUT_BYTES`)."""


class MaxTurnsExceeded(AgentgraphError):
    """An agent's tool loop reached `max_turns` with the model still calling tools (and
    the node does not say `on_max_turns: return_last`). Permanent: a retry would ask the
    same model the same questions."""


class ExpansionError(AgentgraphError, ValueError):
    """A map, loop or subgraph could not add its instances: `map:` is not a list, has too
    many items, the run would pass its instance cap, an item is too large to store."""


class UnknownAgent(AgentgraphError, ValueError):
    """`agent:` named a profile the graph's `agents:` does not declare."""


class DelegationTooDeep(AgentgraphError):
    """An agent at the delegation depth cap (`core/delegation.MAX_DELEGATE_DEPTH`) called a
    delegate. Permanent: the node fails, and its caller receives the error."""


class DelegationSuspended(AgentgraphError):
    """Not a failure: an agent's tool loop called delegates whose answers are not in yet.
    The engine adds their instances and suspends the node (`engine_delegates.py`);
    `records` are the delegate instances of the turn, created if absent."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__(f"waiting for {len(records)} delegate(s)")
        self.records = records


class LlmError(AgentgraphError):
    """A provider failure, already classified. Permanent errors are never retried."""

    def __init__(
        self,
        message: str,
        *,
        type: str = "LlmError",
        retryable: bool,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after_s = retry_after_s


# ---- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorKind:
    """What one error type means to each kind of caller."""

    http_status: int
    code: str  # the api's `error.code`
    exit_code: int  # the CLI's
    retry_after_s: int | None = None  # sent as Retry-After with the HTTP answer


# Most specific first: the first row whose type the exception is an instance of applies.
ERRORS: tuple[tuple[type[AgentgraphError], ErrorKind], ...] = (
    (GraphInvalid, ErrorKind(400, "invalid_graph", EXIT_INVALID)),
    (InputInvalid, ErrorKind(400, "invalid_input", EXIT_INVALID)),
    (RequestInvalid, ErrorKind(400, "invalid_request", EXIT_INVALID)),
    (LlmNotConfigured, ErrorKind(400, "model_not_configured", EXIT_INVALID)),
    (AuthError, ErrorKind(401, "unauthenticated", EXIT_INVALID)),
    (Forbidden, ErrorKind(403, "forbidden", EXIT_INVALID)),
    (RunNotFound, ErrorKind(404, "not_found", EXIT_INVALID)),
    (NodeNotFound, ErrorKind(404, "not_found", EXIT_INVALID)),
    (GraphNotFound, ErrorKind(404, "not_found", EXIT_INVALID)),
    (IdempotencyConflict, ErrorKind(409, "idempotency_conflict", EXIT_INVALID)),
    (ApprovalConflict, ErrorKind(409, "approval_conflict", EXIT_INVALID)),
    (RedriveConflict, ErrorKind(409, "redrive_conflict", EXIT_INVALID)),
    (PayloadTooLarge, ErrorKind(413, "payload_too_large", EXIT_INVALID)),
    (LimitExceeded, ErrorKind(429, "limit_exceeded", EXIT_RUN_FAILED, retry_after_s=60)),
    (Contention, ErrorKind(503, "contention", EXIT_RUN_FAILED, retry_after_s=1)),
    (Misconfigured, ErrorKind(500, "misconfigured", EXIT_RUN_FAILED)),
    (RunStuck, ErrorKind(500, "run_stuck", EXIT_RUN_FAILED)),
)

INTERNAL = ErrorKind(500, "internal", EXIT_RUN_FAILED)
# A backing service failed in a way a retry can fix (the backend names those types).
UNAVAILABLE = ErrorKind(503, "unavailable", EXIT_RUN_FAILED, retry_after_s=1)


def kind_of(exc: BaseException, transient: tuple[type[BaseException], ...] = ()) -> ErrorKind:
    """The row of `ERRORS` for an exception; UNAVAILABLE for one of the backend's
    `transient` types; INTERNAL for anything else not raised on purpose. An error that
    knows when to come back (LimitExceeded) says so in `retry_after_s`."""
    for error_type, kind in ERRORS:
        if isinstance(exc, error_type):
            own = getattr(exc, "retry_after_s", None)
            if own is not None:
                return ErrorKind(kind.http_status, kind.code, kind.exit_code, max(1, round(own)))
            return kind
    if transient and isinstance(exc, transient):
        return UNAVAILABLE
    return INTERNAL
