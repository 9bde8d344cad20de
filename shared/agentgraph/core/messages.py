"""The messages between functions, as pydantic models: one definition for both ends.

Messages carry ids only, never payloads (docs/design.md): the state they refer to is in the
store, so a message can be repeated, reordered or replayed without carrying stale data.
The publishers (`backends/gcp/pubsub_dispatcher.py`, `cloud_tasks_retries.py`) encode with
these models and the functions decode with them, so the two ends cannot disagree.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentgraph.core.documents import parse_json
from agentgraph.core.errors import MalformedMessage, RequestInvalid
from agentgraph.core.model import INSTANCE_ID_PATTERN, NAME_PATTERN
from agentgraph.core.status import NodeStatus

# Like node ids, run ids may not start with "__": Firestore reserves ids such as __x__.
RUN_ID_REGEX = r"(?:[A-Za-z0-9-][A-Za-z0-9_-]{0,127}|_(?:[A-Za-z0-9-][A-Za-z0-9_-]{0,126})?)"
RUN_ID_PATTERN = f"^{RUN_ID_REGEX}$"
M = TypeVar("M", bound=BaseModel)
ONE_GRAPH = "give exactly one of 'graph' (a definition) or 'graph_id' (a stored graph)"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class NodeReady(_Message):
    """node-ready: run one attempt of one node (Pub/Sub data, and the Cloud Tasks body)."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    node_id: str = Field(pattern=INSTANCE_ID_PATTERN, max_length=600)
    attempt: int = Field(ge=1, le=1000)


class NodeFinished(_Message):
    """node-finished: a node reached a final status; the fan-in takes it from here."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    node_id: str = Field(pattern=INSTANCE_ID_PATTERN, max_length=600)
    status: NodeStatus


class RunRequest(BaseModel):
    """A request to start a run: the body of POST /runs and of a run-requests message.

    Either `graph` (the definition inline) or `graph_id` (a stored graph, latest version
    unless `version` is given).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        # What `_one_graph` checks, for the OpenAPI document and other schema readers.
        json_schema_extra={"oneOf": [{"required": ["graph"]}, {"required": ["graph_id"]}]},
    )

    graph: dict[str, Any] | None = None
    graph_id: str | None = Field(None, pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1)
    input: Any = None

    @model_validator(mode="after")
    def _one_graph(self) -> RunRequest:
        if (self.graph is None) == (self.graph_id is None):
            raise ValueError(ONE_GRAPH)
        if self.version is not None and self.graph_id is None:
            raise ValueError("'version' goes with 'graph_id'")
        return self


class EventRunRequest(RunRequest):
    """A run-requests message may name the owner the run is started for."""

    owner: str | None = Field(None, min_length=1, max_length=256)


def decode(model: type[M], data: bytes | str, what: str = "message") -> M:
    """Parse and validate JSON into `model`, or raise MalformedMessage saying what is wrong."""
    try:
        value = parse_json(data, what)
    except RequestInvalid as exc:
        raise MalformedMessage("; ".join(str(p) for p in exc.problems)) from exc
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise MalformedMessage(f"{what}: {_problems(exc)}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
