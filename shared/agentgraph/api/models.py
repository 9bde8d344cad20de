"""The api's request and response bodies, as pydantic models.

The handlers build these and the OpenAPI document (`agentgraph.api.openapi`) is generated
from them, so what the api answers and what it documents cannot drift apart. The request
body of POST /runs is `agentgraph.core.messages.RunRequest` (shared with the run-requests
topic); POST /graphs takes a graph definition (`agentgraph.core.model.GraphSpec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentgraph.core.errors import Problem as CoreProblem
from agentgraph.core.ports import StoredGraph
from agentgraph.core.records import Event as EventRecord
from agentgraph.core.records import NodeRecord, RunRecord
from agentgraph.core.records import Step as StepRecord
from agentgraph.core.run_json import run_to_json


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True)

    def json_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---- errors ---------------------------------------------------------------------------------


class Problem(_Body):
    """One thing wrong with the request, located by a path like graph.nodes[3].after."""

    path: str = Field(examples=["graph.nodes[3].after", "input.code"])
    message: str
    node_id: str | None = None


class ErrorDetail(_Body):
    code: str = Field(
        description="Stable, machine-readable: invalid_request, invalid_graph, invalid_input, "
        "model_not_configured, unauthenticated, forbidden, not_found, method_not_allowed, "
        "idempotency_conflict, approval_conflict, redrive_conflict, payload_too_large, "
        "contention, unavailable, misconfigured, internal"
    )
    message: str
    details: list[Problem] = Field(
        default_factory=list, description="Every problem found (400), each with its path"
    )


class ErrorBody(_Body):
    """Every error answer: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str, problems: Sequence[CoreProblem] = ()) -> ErrorBody:
        details = [Problem(path=p.path, message=p.message, node_id=p.node_id) for p in problems]
        return cls(error=ErrorDetail(code=code, message=message, details=details))


# ---- runs -----------------------------------------------------------------------------------


class Usage(_Body):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    thinking_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


class RunSummary(_Body):
    """A run without its nodes."""

    run_id: str
    graph: str = Field(description="The graph's name")
    status: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    created_at: float = Field(description="Epoch seconds")
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage
    outputs: dict[str, Any] | None = Field(
        None, description="The sink nodes' outputs once the run succeeded"
    )
    error: dict[str, Any] | None = None
    counts: dict[str, int] = Field(description="Nodes per status (only non-zero counts)")
    owner: str | None = None

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        fields = run_to_json(run, [])
        del fields["nodes"]
        return cls.model_validate({**fields, "owner": run.owner})


class Node(_Body):
    id: str
    status: Literal[
        "waiting",
        "ready",
        "running",
        "retrying",
        "expanded",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
        "waiting_approval",
    ]
    parents: list[str] = Field(
        default_factory=list, description="The nodes it waits for (`after`), in order"
    )
    attempts: int
    executions: int = Field(description="More than attempts when a crash repeated one")
    output: Any = None
    error: dict[str, Any] | None = None
    usage: Usage
    model: str | None = None
    duration_ms: int | None = None
    skip_reason: str | None = None


class Run(RunSummary):
    """A run with one page of its nodes (all of them when `next_nodes_after` is null)."""

    nodes: list[Node]
    next_nodes_after: int | None = Field(
        None,
        description="Set when the run has more nodes: pass it as `?nodes_after=` for the "
        "next page. Null on the last page.",
    )

    @classmethod
    def with_nodes(
        cls, run: RunRecord, nodes: Sequence[NodeRecord], next_nodes_after: int | None = None
    ) -> Run:
        fields = run_to_json(run, nodes)
        return cls.model_validate(
            {**fields, "owner": run.owner, "next_nodes_after": next_nodes_after}
        )


class CancelledRun(RunSummary):
    """The run after a cancellation."""

    cancelled: bool = Field(description="False if the run had already ended")


class ApprovalRequest(_Body):
    """POST /runs/{id}/nodes/{node}/approve. Without `payload`, the node's computed value
    is what its children receive (`nodes.<id>.output.payload`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    comment: str | None = Field(None, max_length=10_000)
    payload: Any = Field(
        None, description="Replaces the node's computed value (an edited draft, say)"
    )


class RejectionRequest(_Body):
    """POST /runs/{id}/nodes/{node}/reject."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    comment: str | None = Field(None, max_length=10_000)


class DecidedNode(_Body):
    """A node after an approval decision; its `output` records the decision."""

    run_id: str
    node: Node


class RedrivenRun(RunSummary):
    """The run after a redrive."""

    redriven: bool = Field(description="False when a concurrent identical request redrove it first")
    nodes_to_run: list[str] = Field(
        default_factory=list, description="Nodes that run again (empty when redriven is false)"
    )


class RunList(_Body):
    runs: list[RunSummary] = Field(description="Newest first")


class Event(_Body):
    """One line of a run's timeline."""

    seq: int | None = None
    at: float
    kind: Literal["run_status", "node_status", "retry", "error", "message"]
    node_id: str | None = None
    status: str | None = None
    attempt: int | None = None
    message: str | None = None

    @classmethod
    def of(cls, event: EventRecord) -> Event:
        return cls.model_validate(
            {
                "seq": event.seq,
                "at": event.at,
                "kind": event.kind,
                "node_id": event.node_id,
                "status": event.status,
                "attempt": event.attempt,
                "message": event.message,
            }
        )


class EventsPage(_Body):
    events: list[Event] = Field(description="In order; `?after=<seq>` to follow a run")


class Step(_Body):
    """One completed step of an agent's tool loop: a model turn or a tool call."""

    index: int = Field(description="Per node, across attempts; the loop's order")
    kind: Literal["model", "tool"]
    name: str = Field(description="The model that answered, or the tool called")
    attempt: int
    turn: int = Field(description="The model turn, or the turn whose call this answers")
    at: float
    duration_ms: int
    arguments: Any = Field(None, description="A tool call's arguments")
    result: Any = Field(
        None, description="A tool's return value; a model turn's {text, calls, data}"
    )
    error: dict[str, Any] | None = Field(None, description="A tool's {type, message}")
    usage: Usage
    call_id: str | None = None

    @classmethod
    def of(cls, step: StepRecord) -> Step:
        return cls.model_validate(step.to_dict())


class StepsPage(_Body):
    run_id: str
    node_id: str
    steps: list[Step] = Field(description="By index; empty for a node without tools")


# ---- graphs ---------------------------------------------------------------------------------


class GraphVersion(_Body):
    """One stored version of a graph definition."""

    id: str
    version: int
    latest_version: int
    hash: str = Field(description="sha256 of the canonical JSON definition")
    owner: str | None = None
    created_at: float = Field(description="Epoch seconds")

    @classmethod
    def of(cls, stored: StoredGraph) -> GraphVersion:
        return cls(
            id=stored.id,
            version=stored.version,
            latest_version=stored.latest_version,
            hash=stored.hash,
            owner=stored.owner,
            created_at=stored.created_at,
        )


class StoredGraphBody(GraphVersion):
    """A stored version with its definition."""

    definition: dict[str, Any]

    @classmethod
    def with_definition(cls, stored: StoredGraph) -> StoredGraphBody:
        return cls(**GraphVersion.of(stored).model_dump(), definition=stored.definition)


# ---- service --------------------------------------------------------------------------------


class Health(_Body):
    status: Literal["ok"] = "ok"


class OpenApiDocument(BaseModel):
    """This api's OpenAPI 3.1 document."""

    model_config = ConfigDict(extra="allow")

    openapi: str
