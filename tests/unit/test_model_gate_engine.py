"""The engine behind the model gate (engine_gate.py), on the local backend: an open
circuit sends nodes to their fallback model or delays them, never fails them for it, and
lets one probe through after the cool-down; a concurrency cap holds for every node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.errors import LlmError
from agentgraph.core.llm_port import LlmRequest, LlmResponse, OnPartial
from agentgraph.core.model_gate import BreakerSettings, GateConfig, ModelLimit
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.engine_gate import LocalModelGate
from agentgraph.tools import Registry


class ScriptedModels:
    """A provider for models named `fake-*`: each model answers from its script (an
    HTTP status to fail with, or None for success), then succeeds. Counts the calls it
    gets, when, and how many were in flight at once."""

    def __init__(self, scripts: dict[str, Sequence[int | None]], latency_s: float = 0.0) -> None:
        self.scripts = {model: list(script) for model, script in scripts.items()}
        self.latency_s = latency_s
        self.calls: list[tuple[str, float]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def supports(self, model: str) -> bool:
        return model.startswith("fake-")

    async def generate(self, request: LlmRequest, on_partial: OnPartial | None = None) -> Any:
        self.calls.append((request.model, time.monotonic()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)  # a model call takes time
            script = self.scripts.get(request.model, [])
            status = script.pop(0) if script else None
            if status is not None:
                raise LlmError(
                    f"HTTP {status}", type="Unavailable", retryable=True, http_status=status
                )
            return LlmResponse(text=f"[{request.model}] ok", model=request.model)
        finally:
            self.in_flight -= 1

    def count(self, model: str) -> int:
        return sum(1 for m, _ in self.calls if m == model)


def agent(node_id: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "model": model,
        "prompt": f"say {node_id}",
        "retry": {"max_attempts": 5, "initial_delay_s": 0.01, "jitter": False},
        **extra,
    }


async def run_graph(
    models: ScriptedModels, config: GateConfig, nodes: list[dict[str, Any]]
) -> tuple[Any, dict[str, Any], list[Any]]:
    store = SqliteStore(":memory:")
    runtime = LocalRuntime(store, models, Registry())
    runtime.engine.gate = LocalModelGate(config)
    try:
        async with runtime:
            run = await runtime.run({"name": "gated", "nodes": nodes})
        records = {n.node_id: n for n in await store.list_nodes(run.run_id)}
        events = await store.list_events(run.run_id)
    finally:
        store.close()
    return run, records, events


def notes(events: list[Any], text: str) -> list[Any]:
    return [e for e in events if e.kind == "message" and text in (e.message or "")]


async def test_an_open_circuit_delays_the_node_then_one_probe_at_a_time_until_it_recovers() -> None:
    cooldown = 0.2
    models = ScriptedModels({"fake-flaky": [503, 503, 503]})
    config = GateConfig(breaker=BreakerSettings(failures=2, window_s=60, cooldown_s=cooldown))

    run, nodes, events = await run_graph(models, config, [agent("a", "fake-flaky")])

    assert run.status == RunStatus.SUCCEEDED
    # Three real failures and the success: the delays spent no attempt.
    assert nodes["a"].status == NodeStatus.SUCCEEDED and nodes["a"].attempt == 4
    assert models.count("fake-flaky") == 4
    # Opened after the 2nd failure, re-opened by the failed probe (3rd): each time the
    # node waited out the cool-down before the next (single) call.
    times = [at for _, at in models.calls]
    assert times[2] - times[1] >= cooldown and times[3] - times[2] >= cooldown
    delays = notes(events, "not counted as an attempt")
    assert len(delays) >= 2 and all(e.node_id == "a" for e in delays)


async def test_nodes_go_to_their_fallback_model_while_the_circuit_is_open() -> None:
    models = ScriptedModels({"fake-down": [503] * 100})
    config = GateConfig(breaker=BreakerSettings(failures=2, window_s=60, cooldown_s=600))
    retry = {"max_attempts": 2, "initial_delay_s": 0.01, "jitter": False}
    nodes = [
        agent("a", "fake-down", fallback_model="fake-backup", retry=retry),
        agent("b", "fake-down", fallback_model="fake-backup", retry=retry, after=["a"]),
        agent("c", "fake-down", fallback_model="fake-backup", retry=retry, after=["b"]),
    ]

    run, records, events = await run_graph(models, config, nodes)

    assert run.status == RunStatus.SUCCEEDED
    assert models.count("fake-down") == 2  # the two failures that opened the circuit
    assert records["a"].attempt == 3 and records["a"].model == "fake-backup"
    for later in ("b", "c"):  # never called the failing model, spent no attempt on it
        assert records[later].attempt == 1 and records[later].model == "fake-backup"
    assert {e.node_id for e in notes(events, "uses fallback_model fake-backup")} == {"b", "c"}


async def test_the_breaker_never_fails_a_node_that_has_attempts_left() -> None:
    models = ScriptedModels({"fake-flaky": [429, 429]})
    config = GateConfig(breaker=BreakerSettings(failures=1, window_s=60, cooldown_s=0.1))
    nodes = [agent(f"n{i}", "fake-flaky") for i in range(6)]

    run, records, _ = await run_graph(models, config, nodes)

    assert run.status == RunStatus.SUCCEEDED
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())
    # Only real failures spend attempts: two 429s in all, whoever got them.
    assert sum(r.attempt for r in records.values()) == 6 + 2


async def test_a_concurrency_cap_holds_for_a_wide_layer() -> None:
    models = ScriptedModels({}, latency_s=0.02)
    config = GateConfig(limits={"fake-capped": ModelLimit(concurrency=2)})
    nodes = [agent(f"n{i}", "fake-capped") for i in range(8)]

    run, records, _ = await run_graph(models, config, nodes)

    assert run.status == RunStatus.SUCCEEDED
    assert models.count("fake-capped") == 8
    assert models.most_in_flight == 2
    assert all(r.attempt == 1 for r in records.values())


async def test_a_healthy_unlimited_model_leaves_no_state_and_its_failures_still_open_the_breaker() -> (
    None
):
    """The gate's shortcut for a model without limits and without a streak: nothing is
    remembered for its successes, and overloads are counted as without the shortcut."""
    gate = LocalModelGate(GateConfig(breaker=BreakerSettings(failures=2, cooldown_s=30)))
    permit = await gate.admit("gemini-2.5-flash", 60)
    await gate.release("gemini-2.5-flash", permit, "success")  # type: ignore[arg-type]
    assert gate.states == {}
    for _ in range(2):
        permit = await gate.admit("gemini-2.5-flash", 60)
        await gate.release("gemini-2.5-flash", permit, "overload")  # type: ignore[arg-type]
    refused = await gate.admit("gemini-2.5-flash", 60)
    assert getattr(refused, "because", None) == "open"


async def test_a_planned_subagent_is_admitted_on_its_profiles_model() -> None:
    """The cap of the profile's model holds for the map's subagents, whose template names
    another model: the gate admits the model each call goes to."""
    models = ScriptedModels({}, latency_s=0.02)
    config = GateConfig(limits={"fake-profile": ModelLimit(concurrency=1)})
    graph_nodes = [
        {
            "id": "team",
            "map": "{{ ['scout', 'scout', 'scout', 'scout'] }}",
            "agent": "{{ item }}",
            "model": "fake-template",
            "prompt": "task {{ index }}",
        }
    ]
    store = SqliteStore(":memory:")
    runtime = LocalRuntime(store, models, Registry())
    runtime.engine.gate = LocalModelGate(config)
    try:
        async with runtime:
            run = await runtime.run(
                {
                    "name": "profiles",
                    "agents": {"scout": {"model": "fake-profile", "system": "scout"}},
                    "nodes": graph_nodes,
                }
            )
    finally:
        store.close()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert models.count("fake-profile") == 4 and models.count("fake-template") == 0
    assert models.most_in_flight == 1
