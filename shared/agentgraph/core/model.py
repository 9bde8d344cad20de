"""The graph format users write (YAML or JSON), as pydantic models.

These models check shape and ranges of one node at a time; `validate.py` checks what
needs the whole graph (ids, edges, cycles, template references) and merges `defaults`
into each node, producing the plain `Graph` the core runs on.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z0-9-]{1,63}$"
# Ids become Firestore document ids, which may not look like __x__: no id starts with "__".
NODE_ID_PATTERN = r"^(?:[a-z0-9-][a-z0-9_-]{0,62}|_(?:[a-z0-9-][a-z0-9_-]{0,61})?)$"
# A node instance of a run that grows (core/grow.py): segments `id[index]@iteration`
# joined by `/`, e.g. `research[2]/summarize@1`. Ids above never hold `[`, `]`, `@`, `/`.
_SEGMENT = r"(?:[a-z0-9-][a-z0-9_-]{0,62}|_(?:[a-z0-9-][a-z0-9_-]{0,61})?)(?:\[(?:0|[1-9][0-9]{0,5})\])?(?:@[1-9][0-9]{0,4})?"
INSTANCE_ID_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,7}}$"
POOL_PATTERN = r"^[a-z0-9-]{1,30}$"
MAX_NODES = 2000
MAX_TURNS = 100
DEFAULT_MAX_TURNS = 10
MAX_TOOLS = 64
MAX_DELEGATES = 16  # profiles one agent may call as tools (`delegates`)
MAX_ATTACHMENTS = 16
_ATTACH_KEYS = frozenset({"mime_type", "data", "uri"})
MAX_ITERATIONS = 1000  # loop.max_iterations
MAX_MAP_CONCURRENCY = 10_000
# `graph: name@version`: a stored graph used as a subgraph (resolved when the run starts).
GRAPH_REF_PATTERN = r"^[a-z0-9-]{1,63}(?:@[1-9][0-9]{0,8})?$"


class OnError(StrEnum):
    """What a node's final failure does to the rest of the run."""

    FAIL_RUN = "fail_run"
    CONTINUE = "continue"
    SKIP_DOWNSTREAM = "skip_downstream"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Retries of retryable failures: exponential backoff, capped, with jitter."""

    max_attempts: int = Field(3, ge=1, le=20)
    initial_delay_s: float = Field(1.0, ge=0, le=3600)
    max_delay_s: float = Field(60.0, ge=0, le=86400)
    multiplier: float = Field(2.0, ge=1, le=10)
    jitter: bool = True
    # Executions lost with their worker (timeout, out of memory, crash) that are taken over
    # before the node fails with "worker lost N times" (core/transitions.claim).
    max_takeovers: int = Field(3, ge=0, le=100)


MAX_APPROVAL_TIMEOUT_S = 30 * 86400  # Cloud Tasks schedules at most 30 days ahead
DEFAULT_APPROVAL_TIMEOUT_S = 86400.0
PRINCIPAL_PATTERN = r"^[^\s]{1,320}$"  # an email or a uid, as the api derives callers


class Approval(_Strict):
    """`approval:` on a node: after its work (a tool or agent node) or at once (a node
    with neither: a pure gate), the node waits for a person to approve or reject it.

    `message` is a template (it may read `input`, `nodes.<id>` and `output`, the node's
    computed value); `approvers` are principals (emails or uids) who may decide besides
    the run's owner; with no decision within `timeout_s` the node is rejected."""

    message: str = Field(min_length=1, max_length=10_000)
    timeout_s: float = Field(DEFAULT_APPROVAL_TIMEOUT_S, ge=1, le=MAX_APPROVAL_TIMEOUT_S)
    approvers: list[str] = Field(
        default_factory=list, max_length=100, json_schema_extra={"uniqueItems": True}
    )

    @model_validator(mode="after")
    def _principals(self) -> Approval:
        for who in self.approvers:
            if not re.fullmatch(PRINCIPAL_PATTERN, who):
                raise ValueError(
                    f"approvers: {who!r} is not a principal (an email or uid, no spaces)"
                )
        return self


class _NodeSettings(_Strict):
    """Settings a node may inherit from `defaults`; None means 'not set here'."""

    model: str | None = Field(None, min_length=1, max_length=100)
    fallback_model: str | None = Field(None, min_length=1, max_length=100)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop_sequences: list[str] | None = Field(None, max_length=5)
    safety_settings: list[dict[str, Any]] | None = None
    timeout_s: float | None = Field(None, ge=1, le=3600)
    retry: RetryPolicy | None = None
    pool: str | None = Field(None, pattern=POOL_PATTERN)
    on_error: OnError | None = None
    stream: bool | None = None
    # Function calling (agent nodes): registered tools the model may call, the most model
    # turns of the loop, and what reaching them does (fail, or answer the last text).
    tools: list[str] | None = Field(None, max_length=MAX_TOOLS)
    max_turns: int | None = Field(None, ge=1, le=MAX_TURNS)
    on_max_turns: Literal["fail", "return_last"] | None = None


class Defaults(_NodeSettings):
    pass


class LoopSpec(_Strict):
    """`loop:` runs the node (or subgraph) again until `until` holds for the iteration's
    `output`, at most `max_iterations` times (required: a loop must be bounded)."""

    until: str = Field(min_length=1, max_length=2000)
    max_iterations: int = Field(ge=1, le=MAX_ITERATIONS)
    on_exhausted: Literal["fail", "succeed"] = "fail"


class AgentProfile(_Strict):
    """A named agent profile (`agents:`); a node with `agent: "{{ item.agent }}"` runs with
    the profile its item names (planned subagents)."""

    description: str | None = Field(None, max_length=2000)
    model: str | None = Field(None, min_length=1, max_length=100)
    system: str | None = Field(None, max_length=100_000)
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000)
    output: Literal["text", "json"] | None = None
    output_schema: dict[str, Any] | None = None
    # An agent running this profile (an `agent:` node, or a delegate) calls these tools,
    # delegates to these profiles (agents as tools, engine_delegates.py), and with
    # `memory: run` carries its conversation across its runs within the run (agent_memory).
    tools: list[str] | None = Field(None, max_length=MAX_TOOLS)
    max_turns: int | None = Field(None, ge=1, le=MAX_TURNS)
    delegates: list[str] | None = Field(None, max_length=MAX_DELEGATES)
    memory: Literal["run", "none"] = "none"
    # With memory: run, the most tokens of earlier conversations sent (core/agent_memory.py).
    memory_tokens: int = Field(8_000, ge=100, le=1_000_000)


class NodeSpec(_NodeSettings):
    """One node: a tool call (`tool` + `args`) or an agent (`prompt`, optional `system`)."""

    id: str = Field(pattern=NODE_ID_PATTERN)
    description: str | None = Field(None, max_length=2000)
    after: list[str] = Field(default_factory=list)
    tool: str | None = Field(None, min_length=1, max_length=100)
    args: dict[str, Any] = Field(default_factory=dict)
    system: str | None = Field(None, max_length=100_000)
    prompt: str | None = Field(None, min_length=1, max_length=100_000)
    # "text" | "json" for a tool or agent node; for a subgraph, a template giving its output.
    output: str = Field("text", min_length=1, max_length=100_000)
    # A JSON schema, or "agents": the schema of a plan over the graph's `agents:` profiles.
    output_schema: dict[str, Any] | Literal["agents"] | None = None
    when: str | None = Field(None, min_length=1, max_length=2000)
    # Files sent to the model with the prompt (agent nodes): each a template rendering to
    # a local path (local backend), a gs:// URI, or {mime_type, data (base64)} / {uri,
    # mime_type}; llm/attachments.py turns the rendered values into parts.
    attach: list[str | dict[str, Any]] | None = Field(None, max_length=MAX_ATTACHMENTS)
    approval: Approval | None = None

    # Runs that grow (core/grow.py): map over a list, loop, subgraph, planned subagents.
    map: str | None = Field(None, min_length=1, max_length=2000)
    max_concurrency: int | None = Field(None, ge=1, le=MAX_MAP_CONCURRENCY)
    loop: LoopSpec | None = None
    nodes: list[dict[str, Any]] | None = Field(None, min_length=1, max_length=MAX_NODES)
    graph: str | None = Field(None, pattern=GRAPH_REF_PATTERN)
    agent: str | None = Field(None, min_length=1, max_length=2000)
    # Agents as tools: profiles of `agents:` the model may call like tools (an agent node).
    delegates: list[str] | None = Field(None, max_length=MAX_DELEGATES)

    @model_validator(mode="after")
    def _tool_or_agent(self) -> NodeSpec:
        if self.nodes is not None or self.graph is not None:
            return self._subgraph()
        if self.output not in ("text", "json"):
            raise ValueError("'output' is 'text' or 'json' (a template only on a subgraph)")
        if self.max_concurrency is not None and self.map is None:
            raise ValueError("'max_concurrency' needs 'map'")
        if self.map is not None and self.loop is not None:
            raise ValueError(
                "a node takes 'map' or 'loop', not both: put the loop in a subgraph and map that"
            )
        if self.agent is not None and self.prompt is None:
            raise ValueError("'agent' picks a profile for an agent node: it needs 'prompt'")
        if self.approval is not None and (self.map is not None or self.loop is not None):
            raise ValueError(
                "'approval' waits for one decision: not on a 'map' or 'loop' node; put the "
                "approval on a node after it (a node with only 'approval' is a gate)"
            )
        gate = self.approval is not None and self.tool is None and self.prompt is None
        if (self.tool is None) == (self.prompt is None) and not gate:
            raise ValueError(
                "a node needs exactly one of 'tool' (a tool node), 'prompt' (an agent node) "
                "or 'nodes' / 'graph' (a subgraph)"
            )
        if self.tool is not None and self.system is not None:
            raise ValueError("'system' is for agent nodes; a tool node takes 'args'")
        loop = (self.tools, self.max_turns, self.on_max_turns)
        if self.tool is not None and any(v is not None for v in loop):
            raise ValueError(
                "'tools', 'max_turns' and 'on_max_turns' are for agent nodes (the model "
                "calls the tools); a tool node names one 'tool'"
            )
        if self.delegates is not None and self.prompt is None:
            raise ValueError("'delegates' is for agent nodes (the model calls the profiles)")
        if self.prompt is not None and self.args:
            raise ValueError("'args' is for tool nodes; an agent node takes 'prompt'")
        if self.output_schema is not None and self.output != "json":
            raise ValueError("'output_schema' needs 'output: json'")
        if self.attach is not None and self.tool is not None:
            raise ValueError("'attach' is for agent nodes; a tool node takes 'args'")
        for i, entry in enumerate(self.attach or ()):
            _check_attach_entry(i, entry)
        return self

    def _subgraph(self) -> NodeSpec:
        if self.nodes is not None and self.graph is not None:
            raise ValueError("a subgraph takes 'nodes' (inline) or 'graph' (stored), not both")
        for name in (
            "tool",
            "prompt",
            "system",
            "agent",
            "output_schema",
            "approval",
            "tools",
            "attach",
            "delegates",
        ):
            if getattr(self, name) is not None:
                raise ValueError(f"'{name}' is for a tool or agent node, not a subgraph")
        if self.args:
            raise ValueError("'args' is for a tool node, not a subgraph")
        if self.map is not None and self.loop is not None:
            raise ValueError("a subgraph takes 'map' or 'loop', not both: nest a subgraph")
        if self.max_concurrency is not None and self.map is None:
            raise ValueError("'max_concurrency' needs 'map'")
        return self


def _check_attach_entry(i: int, entry: str | dict[str, Any]) -> None:
    """The shape of one literal `attach` entry; what a template renders to is checked
    when the node runs (llm/attachments.py), with the same field names."""
    if isinstance(entry, str):
        if not entry.strip():
            raise ValueError(f"attach[{i}] is empty")
        return
    unknown = sorted(set(entry) - _ATTACH_KEYS)
    if unknown:
        raise ValueError(
            f"attach[{i}] has unknown key(s) {', '.join(map(repr, unknown))}; an entry is "
            "a path or gs:// URI, or a mapping of mime_type with data (base64) or uri"
        )
    if ("data" in entry) == ("uri" in entry):
        raise ValueError(f"attach[{i}] needs exactly one of 'data' (base64) and 'uri'")
    if "data" in entry and "mime_type" not in entry:
        raise ValueError(f"attach[{i}].mime_type is required with 'data'")


class GraphSpec(_Strict):
    """The whole document. `nodes` is validated node by node in validate.py, so that one
    broken node does not hide the problems of the others."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=10_000)
    defaults: Defaults = Field(default_factory=Defaults)
    input: dict[str, Any] | None = None
    agents: dict[str, AgentProfile] = Field(default_factory=dict, max_length=100)
    nodes: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_NODES)
