"""The validated graph the core runs on: plain frozen dataclasses, defaults merged in.

Built only by `validate.load_graph`, so everything here already holds: ids are unique,
edges point at real nodes, there is no cycle and templates read only ancestors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentgraph.core.model import AgentProfile, Approval, LoopSpec, OnError, RetryPolicy


@dataclass(frozen=True)
class Node:
    id: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    kind: Literal["tool", "agent", "gate", "subgraph"]  # gate: approval only, no work
    pool: str
    on_error: OnError
    retry: RetryPolicy
    timeout_s: float
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    system: str | None = None
    model: str | None = None
    fallback_model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    safety_settings: tuple[dict[str, Any], ...] = ()
    output: Literal["text", "json"] = "text"
    output_schema: dict[str, Any] | None = None
    stream: bool = False
    when: str | None = None
    attach: tuple[str | dict[str, Any], ...] = ()  # templates; rendered when the node runs
    reads: frozenset[str] = frozenset()  # ancestors whose results the templates read
    tools: tuple[str, ...] = ()  # an agent's function-calling tools (engine_agent.py)
    max_turns: int = 10
    on_max_turns: Literal["fail", "return_last"] = "fail"
    approval: Approval | None = None
    # Runs that grow (core/grow.py). A node with map, loop or body is a controller: it
    # runs no call of its own but adds instances to the run and is decided by them.
    map: str | None = None
    max_concurrency: int | None = None
    loop: LoopSpec | None = None
    body: Graph | None = None  # a subgraph's compiled nodes (ids local to it)
    body_output: str | None = None  # a subgraph's `output:` template
    agent: str | None = None  # a template naming one of the graph's `agents:` profiles
    # Agents as tools (engine_delegates.py): the profiles the model may call; the profile
    # this node runs as (set by grow.with_profile), its memory, and for a delegate's
    # instance, the caller whose call it answers.
    delegates: tuple[str, ...] = ()
    profile: str | None = None
    memory: Literal["run", "none"] = "none"
    delegate_of: str | None = None
    delegate_depth: int = 0
    memory_tokens: int = 8_000  # the budget of `memory: run` (core/agent_memory.py)
    # Where an instance sits: the prefix its `nodes.<id>` reads resolve under ("" at the
    # top, "research[2]/" inside the third item of subgraph `research`).
    scope: str = ""

    @property
    def controller(self) -> bool:
        return self.map is not None or self.loop is not None or self.body is not None

    @property
    def max_total_attempts(self) -> int:
        """Attempts on the primary model, then as many again on the fallback model."""
        return self.retry.max_attempts * (2 if self.fallback_model else 1)

    def model_for_attempt(self, attempt: int) -> str | None:
        if self.fallback_model and attempt > self.retry.max_attempts:
            return self.fallback_model
        return self.model


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: dict[str, Node]  # in a topological order
    input_schema: dict[str, Any] | None
    description: str | None = None
    agents: dict[str, AgentProfile] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        return [n.id for n in self.nodes.values() if not n.parents]

    @property
    def sinks(self) -> list[str]:
        return [n.id for n in self.nodes.values() if not n.children]

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def __len__(self) -> int:
        return len(self.nodes)
