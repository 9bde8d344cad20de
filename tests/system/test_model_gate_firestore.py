"""Per-model limits and the circuit breaker shared through Firestore (on the emulator):
two engines (each its own client, as two function instances would be) share one cap; one
probe gets through a half-open breaker whoever asks; a dead instance's slot comes back; and
with the Gemini stub answering 503s a run's nodes go to the fallback model or wait out the
cool-down, never failing for the breaker, and the run succeeds once the model recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_utils.system import EmulatorCreds

from agentgraph.backends.gcp.firestore_model_gate import FirestoreModelGate
from agentgraph.backends.gcp.firestore_store import FirestoreStore
from agentgraph.backends.local import LocalRuntime
from agentgraph.core.model_gate import (
    Admitted,
    BreakerSettings,
    GateConfig,
    GateState,
    ModelLimit,
    Refused,
)
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router
from agentgraph.tools import Registry, default_registry
from emulator.gemini_stub import GeminiStub
from tests.unit.test_model_gate_engine import ScriptedModels

MODEL = "gemini-2.5-flash"


class Clock:
    """A clock the test moves: cool-downs and leases pass without waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def second_client(isolated_firestore: Any) -> AsyncIterator[Any]:
    """Another client on the same database: another function instance."""
    from google.cloud import firestore

    client = firestore.AsyncClient(project=isolated_firestore.project, credentials=EmulatorCreds())
    yield client
    await client._firestore_api.transport.close()


async def test_two_engines_on_separate_clients_share_one_concurrency_cap(
    isolated_firestore: Any, second_client: Any
) -> None:
    models = ScriptedModels({}, latency_s=0.05)
    config = GateConfig(limits={"fake-capped": ModelLimit(concurrency=3)})
    graph = {
        "name": "wide",
        "nodes": [{"id": f"n{i}", "model": "fake-capped", "prompt": f"say {i}"} for i in range(8)],
    }
    runtimes = []
    for client in (isolated_firestore, second_client):
        runtime = LocalRuntime(FirestoreStore(client), models, Registry(), workers=16)
        runtime.engine.gate = FirestoreModelGate(client, config)
        runtimes.append(runtime)

    async with runtimes[0], runtimes[1]:
        started = [await rt.start(graph) for rt in runtimes]
        runs = await asyncio.gather(
            *(rt.wait(run.run_id, timeout=120) for rt, run in zip(runtimes, started, strict=True))
        )

    assert [run.status for run in runs] == [RunStatus.SUCCEEDED] * 2
    assert models.count("fake-capped") == 16
    assert models.most_in_flight <= 3  # across both engines, not 3 each
    gate = runtimes[0].engine.gate
    assert isinstance(gate, FirestoreModelGate)
    assert (await gate.state("fake-capped")).slots == {}  # every slot given back


async def test_a_half_open_breaker_lets_exactly_one_probe_through_across_instances(
    isolated_firestore: Any, second_client: Any
) -> None:
    clock = Clock()
    config = GateConfig(breaker=BreakerSettings(failures=2, window_s=60, cooldown_s=30))
    gates = [
        FirestoreModelGate(c, config, clock=clock) for c in (isolated_firestore, second_client)
    ]
    for gate in gates:  # one 503 seen by each instance: two in a row for the model
        permit = await gate.admit(MODEL, 60)
        assert isinstance(permit, Admitted)
        await gate.release(MODEL, permit, "overload")
    assert (await gates[0].state(MODEL)).breaker == "open"
    assert await gates[1].admit(MODEL, 60) == Refused("open", clock.now + 30)

    clock.now += 30
    decisions = await asyncio.gather(*(gates[i % 2].admit(MODEL, 60) for i in range(10)))
    probes = [d for d in decisions if isinstance(d, Admitted)]
    assert len(probes) == 1 and probes[0].probe
    assert all(
        isinstance(d, Refused) and d.because == "probing" for d in decisions if d not in probes
    )

    await gates[1].release(MODEL, probes[0], "overload")  # the probe failed: open again
    assert (await gates[0].admit(MODEL, 60)) == Refused("open", clock.now + 30)
    clock.now += 30
    probe = await gates[0].admit(MODEL, 60)
    assert isinstance(probe, Admitted) and probe.probe
    await gates[0].release(MODEL, probe, "success")  # the probe succeeded: closed
    assert await gates[1].state(MODEL) == GateState()
    decisions = await asyncio.gather(*(gates[i % 2].admit(MODEL, 60) for i in range(6)))
    assert all(isinstance(d, Admitted) and not d.probe for d in decisions)


async def test_a_dead_instances_slots_come_back_when_their_leases_end(
    isolated_firestore: Any, second_client: Any
) -> None:
    clock = Clock()
    config = GateConfig(limits={MODEL: ModelLimit(concurrency=2)})
    dead = FirestoreModelGate(isolated_firestore, config, clock=clock)
    alive = FirestoreModelGate(second_client, config, clock=clock)
    for _ in range(2):  # taken, never given back
        assert isinstance(await dead.admit(MODEL, 130), Admitted)
    refused = await alive.admit(MODEL, 130)
    assert isinstance(refused, Refused) and refused.because == "busy"

    clock.now += 130
    permit = await alive.admit(MODEL, 130)
    assert isinstance(permit, Admitted)
    await alive.release(MODEL, permit, "success")
    assert (await alive.state(MODEL)).slots == {}


async def test_a_rate_cap_holds_across_instances(
    isolated_firestore: Any, second_client: Any
) -> None:
    clock = Clock()
    config = GateConfig(limits={MODEL: ModelLimit(rate_per_s=4)})
    gates = [
        FirestoreModelGate(c, config, clock=clock) for c in (isolated_firestore, second_client)
    ]
    decisions = await asyncio.gather(*(gates[i % 2].admit(MODEL, 60) for i in range(10)))
    assert sum(isinstance(d, Admitted) for d in decisions) == 4  # one second's worth
    clock.now += 0.5
    decisions = await asyncio.gather(*(gates[i % 2].admit(MODEL, 60) for i in range(10)))
    assert sum(isinstance(d, Admitted) for d in decisions) == 2


async def test_a_healthy_uncapped_model_costs_one_read_and_no_write_per_call(
    isolated_firestore: Any,
) -> None:
    clock = Clock()
    gate = FirestoreModelGate(isolated_firestore, GateConfig(), clock=clock)
    for _ in range(3):
        permit = await gate.admit(MODEL, 60)
        assert isinstance(permit, Admitted)
        await gate.release(MODEL, permit, "success")
        clock.now += 2  # past the one second this instance trusts what it read
    assert gate.stats == {"reads": 3}
    for _ in range(2):  # the second within a second of the first: not even a read
        permit = await gate.admit(MODEL, 60)
        assert isinstance(permit, Admitted)
        await gate.release(MODEL, permit, "success")
    assert gate.stats == {"reads": 4}


async def runtime_on(client: Any, config: GateConfig) -> LocalRuntime:
    runtime = LocalRuntime(FirestoreStore(client), default_router(), default_registry, workers=8)
    runtime.engine.gate = FirestoreModelGate(client, config)
    return runtime


def agent(node_id: str, model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    retry = {"max_attempts": 5, "initial_delay_s": 0.01, "jitter": False}
    return {"id": node_id, "model": model, "prompt": prompt, "retry": retry, **extra}


async def test_with_the_stub_answering_503s_nodes_wait_out_the_cooldown_and_the_run_succeeds(
    isolated_firestore: Any, on_stub: GeminiStub
) -> None:
    flaky = f"{MODEL}~fail=3x503"
    config = GateConfig(breaker=BreakerSettings(failures=2, window_s=60, cooldown_s=0.5))
    # One conversation (same model, same prompt): its first three calls answer 503.
    graph = {
        "name": "recovering",
        "nodes": [agent("a", flaky, "same"), agent("b", flaky, "same", after=["a"])],
    }
    runtime = await runtime_on(isolated_firestore, config)
    async with runtime:
        run = await runtime.run(graph)
        nodes = {n.node_id: n for n in await runtime.store.list_nodes(run.run_id)}
        events = await runtime.store.list_events(run.run_id)
        gate = runtime.engine.gate
        assert isinstance(gate, FirestoreModelGate)
        state = await gate.state(flaky)

    statuses = [entry["status"] for entry in on_stub.calls()["log"]]
    assert run.status == RunStatus.SUCCEEDED
    # 503, 503 (open) · cool-down · probe 503 (open again) · cool-down · probe 200 (closed).
    assert statuses == [503, 503, 503, 200, 200]
    assert nodes["a"].status == NodeStatus.SUCCEEDED and nodes["a"].attempt == 4
    assert nodes["b"].attempt == 1
    delays = [e for e in events if "not counted as an attempt" in (e.message or "")]
    assert len(delays) >= 2 and {e.node_id for e in delays} == {"a"}
    assert state.breaker == "closed"


async def test_with_the_stub_answering_503s_later_nodes_go_straight_to_the_fallback_model(
    isolated_firestore: Any, on_stub: GeminiStub
) -> None:
    down, backup = f"{MODEL}~status=503", "gemini-2.5-flash-lite"
    config = GateConfig(breaker=BreakerSettings(failures=2, window_s=60, cooldown_s=600))
    retry = {"max_attempts": 2, "initial_delay_s": 0.01, "jitter": False}
    graph = {
        "name": "falling-back",
        "nodes": [
            agent("a", down, "first", fallback_model=backup, retry=retry),
            agent("b", down, "second", fallback_model=backup, retry=retry, after=["a"]),
            agent("c", down, "third", fallback_model=backup, retry=retry, after=["b"]),
        ],
    }
    runtime = await runtime_on(isolated_firestore, config)
    async with runtime:
        run = await runtime.run(graph)
        nodes = {n.node_id: n for n in await runtime.store.list_nodes(run.run_id)}

    assert run.status == RunStatus.SUCCEEDED
    assert on_stub.count(model=down) == 2  # the two 503s that opened the circuit
    assert on_stub.count(model=backup) == 3
    assert [nodes[n].attempt for n in "abc"] == [3, 1, 1]
    assert {nodes[n].model for n in "abc"} == {backup}
