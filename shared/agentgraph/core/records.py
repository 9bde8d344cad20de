"""The values that cross the Store port: a run, its nodes, their events, errors, usage and
steps, as every backend reads and writes them (`core/ports.py` has the port itself).

Plain dataclasses with no I/O: a backend maps them to its rows or documents
(`backends/local/sqlite_rows.py`, `backends/gcp/firestore_docs.py`), and what may change
in a record is decided in `core/transitions.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentgraph.core.status import NodeStatus, RunStatus


@dataclass
class Usage:
    """Tokens and money spent; node usage sums into run usage."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    thinking_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.thinking_tokens + other.thinking_tokens,
            round(self.cost_usd + other.cost_usd, 9),
            self.calls + other.calls,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "thinking_tokens": self.thinking_tokens,
            "cost_usd": self.cost_usd,
            "calls": self.calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            int(data.get("input_tokens", 0)),
            int(data.get("output_tokens", 0)),
            int(data.get("cached_tokens", 0)),
            int(data.get("thinking_tokens", 0)),
            float(data.get("cost_usd", 0.0)),
            int(data.get("calls", 0)),
        )


@dataclass
class NodeError:
    """Why a node attempt failed; `retryable` decides between a retry and a failure."""

    type: str
    message: str
    retryable: bool = False
    http_status: int | None = None
    attempt: int = 1
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "http_status": self.http_status,
            "attempt": self.attempt,
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> NodeError | None:
        if not data:
            return None
        return cls(
            type=str(data.get("type", "Error")),
            message=str(data.get("message", "")),
            retryable=bool(data.get("retryable", False)),
            http_status=data.get("http_status"),
            attempt=int(data.get("attempt", 1)),
            retry_after_s=data.get("retry_after_s"),
        )


@dataclass
class RunRecord:
    """`runs/{run_id}`: the graph snapshot is immutable for the run."""

    run_id: str
    graph_name: str
    graph: dict[str, Any]
    input: Any
    status: RunStatus
    created_at: float
    node_count: int
    started_at: float | None = None
    finished_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass
class NodeRecord:
    """`runs/{run_id}/nodes/{node_id}`."""

    run_id: str
    node_id: str
    status: NodeStatus
    parents: list[str]
    children: list[str]
    pool: str = "default"
    attempt: int = 1
    output: Any = None
    error: NodeError | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: int | None = None
    usage: Usage = field(default_factory=Usage)
    lease_until: float | None = None
    next_attempt_at: float | None = None
    updated_at: float | None = None
    model: str | None = None
    skip_reason: str | None = None
    partial: str | None = None
    executions: int = 0  # claims that started work; > attempt means a crash repeated one
    # An instance's bindings ({"bindings": {item, index, loop}}) and an expanded
    # controller's {"expect": arrivals that decide it} (core/grow.py).
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class NodeState:
    """A node's status, and why it was skipped: what deciding its children needs of it
    (`Store.get_statuses`), without its output."""

    status: NodeStatus
    skip_reason: str | None = None


@dataclass
class Event:
    """One line of a run's timeline (`runs/{run_id}/events/{id}`)."""

    run_id: str
    at: float
    kind: str  # run_status | node_status | retry | error | message
    node_id: str | None = None
    status: str | None = None
    attempt: int | None = None
    message: str | None = None
    seq: int | None = None  # store-assigned order, for "events after"


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a node produced, as recorded by `Store.finish_node`."""

    status: Literal[NodeStatus.SUCCEEDED, NodeStatus.FAILED]
    output: Any = None
    error: NodeError | None = None
    usage: Usage = field(default_factory=Usage)
    model: str | None = None


@dataclass(frozen=True)
class Step:
    """One completed step of an agent node's tool loop (`engine_agent.py`), durable before
    the next begins: a model turn (`kind="model"`, `name` the model, `result` the turn's
    text and function calls) or a tool call (`kind="tool"`, `name` the tool, `arguments`,
    and `result` or `error`). Indexes are per node and continue across attempts: a
    retried or taken-over attempt replays the recorded steps instead of repeating them."""

    index: int
    kind: Literal["model", "tool"]
    name: str
    attempt: int
    turn: int  # the model turn this step is, or whose function call it answers (1-based)
    at: float  # when the step completed
    duration_ms: int = 0
    arguments: Any = None
    result: Any = None
    error: dict[str, Any] | None = None  # a tool's {"type", "message"}
    usage: Usage = field(default_factory=Usage)
    call_id: str | None = None  # the function call this tool step answers

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "attempt": self.attempt,
            "turn": self.turn,
            "at": self.at,
            "duration_ms": self.duration_ms,
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "call_id": self.call_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            index=int(data["index"]),
            kind="tool" if data.get("kind") == "tool" else "model",
            name=str(data.get("name", "")),
            attempt=int(data.get("attempt", 1)),
            turn=int(data.get("turn", 1)),
            at=float(data.get("at", 0.0)),
            duration_ms=int(data.get("duration_ms") or 0),
            arguments=data.get("arguments"),
            result=data.get("result"),
            error=data.get("error"),
            usage=Usage.from_dict(data.get("usage")),
            call_id=data.get("call_id"),
        )


@dataclass(frozen=True)
class NodePage:
    """One page of a run's nodes. `next_after` is the cursor of the next page (the last
    node's position in the run's node order), None when this page is the last."""

    nodes: list[NodeRecord]
    next_after: int | None
