"""Contract: a model's circuit breaker delays nodes through each backend's own retry
delivery (a timer, Cloud Tasks), without spending an attempt, and the run succeeds."""

from __future__ import annotations

from typing import Any

from agentgraph.core.errors import LlmError
from agentgraph.core.llm_port import LlmProvider, LlmRequest, LlmResponse, OnPartial
from agentgraph.core.model_gate import BreakerSettings, GateConfig
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.engine_gate import LocalModelGate

from .conftest import Harness


class FirstCallUnavailable:
    """The engine's models, except that the first call of each prompt answers 503."""

    def __init__(self, inner: LlmProvider) -> None:
        self.inner = inner
        self.seen: set[str] = set()

    def supports(self, model: str) -> bool:
        return self.inner.supports(model)

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        if request.prompt not in self.seen:
            self.seen.add(request.prompt)
            raise LlmError("HTTP 503", type="Unavailable", retryable=True, http_status=503)
        return await self.inner.generate(request, on_partial)


async def test_an_open_circuit_delays_the_retry_without_spending_an_attempt(
    harness: Harness,
) -> None:
    engine: Any = harness.engine
    engine.llm = FirstCallUnavailable(engine.llm)
    breaker = BreakerSettings(failures=1, window_s=60, cooldown_s=1.0)
    engine.gate = LocalModelGate(GateConfig(breaker=breaker), clock=engine.clock)
    retry = {"max_attempts": 2, "initial_delay_s": 0.01, "jitter": False}
    document = {
        "name": "contract",
        "nodes": [{"id": "a", "model": "echo", "prompt": "hello", "retry": retry}],
    }

    run = await harness.run(document)

    # Attempt 1 answered 503 and opened the circuit; attempt 2 came due while it was open,
    # was delayed (a second delivery of attempt 2, kept apart from the retry's), then was
    # the probe, and succeeded. Two attempts of two: the delay spent none.
    assert run.status == RunStatus.SUCCEEDED
    node = (await harness.nodes(run.run_id))["a"]
    assert node.status == NodeStatus.SUCCEEDED and node.attempt == 2
    events = await harness.events(run.run_id)
    assert any("not counted as an attempt" in (e.message or "") for e in events)
    assert engine.gate.states == {}  # closed again, nothing held
