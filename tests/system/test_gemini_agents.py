"""Agent nodes through the real google-genai SDK, against the local Gemini stub.

The engine owns retries, backoff and the fallback model; the stub injects the faults
(`~fail=2x429`, `~status=503`, …) so every path is driven through the real client.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.errors import LlmNotConfigured
from agentgraph.core.records import Usage
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router
from agentgraph.llm.pricing import cost_usd
from agentgraph.tools import default_registry
from emulator.gemini_stub import GeminiStub


@pytest.fixture
async def runtime(on_stub: GeminiStub) -> AsyncIterator[LocalRuntime]:
    store = SqliteStore(":memory:")
    router = default_router({"gemini-2.5-flash-lite": 2})
    async with LocalRuntime(
        store, router, default_registry, workers=8, partial_interval_s=0.0
    ) as rt:
        yield rt
    store.close()


def agent(node_id: str, model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "model": model, "prompt": prompt, **extra}


def graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"name": "gemini", "nodes": list(nodes)}


async def nodes_of(runtime: LocalRuntime, run_id: str) -> dict[str, Any]:
    return {n.node_id: n for n in await runtime.store.list_nodes(run_id)}


async def test_agent_answers_with_usage_and_cost_summed_into_the_run(runtime: LocalRuntime) -> None:
    run = await runtime.run(
        graph(
            agent("a", "gemini-2.5-flash", "hello world", system="Be brief."),
            agent("b", "gemini-2.5-pro", "{{ nodes.a.output }} again", after=["a"]),
        )
    )
    nodes = await nodes_of(runtime, run.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert nodes["a"].output == "[gemini-2.5-flash] hello world"
    assert run.outputs == {"b": "[gemini-2.5-pro] [gemini-2.5-flash] hello world again"}
    assert nodes["a"].usage.input_tokens == 4  # prompt words + system instruction words
    assert nodes["a"].usage.cost_usd == pytest.approx(
        cost_usd(
            "gemini-2.5-flash", Usage(input_tokens=4, output_tokens=nodes["a"].usage.output_tokens)
        )
    )
    assert nodes["a"].usage.cost_usd > 0
    total = sum((n.usage for n in nodes.values()), Usage())
    assert run.usage.input_tokens == total.input_tokens
    assert run.usage.output_tokens == total.output_tokens
    assert run.usage.cost_usd == pytest.approx(total.cost_usd)
    assert (nodes["a"].model, nodes["b"].model) == ("gemini-2.5-flash", "gemini-2.5-pro")


async def test_json_output_satisfies_the_schema(runtime: LocalRuntime) -> None:
    schema = {
        "type": "object",
        "required": ["verdict", "score"],
        "properties": {"verdict": {"enum": ["approve", "reject"]}, "score": {"type": "integer"}},
    }
    run = await runtime.run(
        graph(agent("j", "gemini-2.5-flash", "judge", output="json", output_schema=schema))
    )
    assert run.outputs == {"j": {"verdict": "approve", "score": 1}}


class _PartialsSeen(SqliteStore):
    """Reads the node back after every partial-text write: what a reader sees then."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.seen: list[tuple[str, NodeStatus, str | None]] = []  # (written, status, read)

    async def set_partial(self, run_id: str, node_id: str, attempt: int, text: str) -> None:
        await super().set_partial(run_id, node_id, attempt, text)
        node = await self.get_node(run_id, node_id)
        assert node is not None
        self.seen.append((text, node.status, node.partial))


async def test_streamed_text_is_visible_while_the_node_runs(on_stub: GeminiStub) -> None:
    words = " ".join(f"w{i}" for i in range(12))
    store = _PartialsSeen()
    async with LocalRuntime(
        store, default_router(), default_registry, workers=2, partial_interval_s=0.0
    ) as runtime:
        run = await runtime.run(
            graph(agent("s", "gemini-2.5-flash~chunkdelay=150ms", words, stream=True))
        )
    store.close()
    assert len(store.seen) >= 2
    assert all(
        read == written and status == NodeStatus.RUNNING for written, status, read in store.seen
    )
    texts = [written for written, _, _ in store.seen]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert run.outputs == {"s": f"[gemini-2.5-flash] {words}"}


async def test_rate_limit_then_success_waits_at_least_the_servers_retry_delay(
    runtime: LocalRuntime, stub: GeminiStub
) -> None:
    model = "gemini-2.5-flash~fail=2x429~retrydelay=300ms"
    run = await runtime.run(
        graph(agent("r", model, "again", retry={"max_attempts": 4, "initial_delay_s": 0.01}))
    )
    node = (await nodes_of(runtime, run.run_id))["r"]
    assert run.status == RunStatus.SUCCEEDED and node.attempt == 3
    assert stub.count(model=model) == 3
    events = await runtime.store.list_events(run.run_id)
    starts = [e.at for e in events if e.node_id == "r" and e.status == "running"]
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(starts))
    retries = [e.message for e in await runtime.store.list_events(run.run_id) if e.kind == "retry"]
    assert len(retries) == 2 and all(
        "429" in m or "RESOURCE_EXHAUSTED" in m or "Rate" in m for m in retries if m
    )


async def test_unavailable_primary_falls_back_to_the_fallback_model(
    runtime: LocalRuntime, stub: GeminiStub
) -> None:
    run = await runtime.run(
        graph(
            agent(
                "f",
                "gemini-2.5-pro~status=503",
                "question",
                fallback_model="gemini-2.5-flash",
                retry={"max_attempts": 2, "initial_delay_s": 0.01, "jitter": False},
            )
        )
    )
    node = (await nodes_of(runtime, run.run_id))["f"]
    assert run.status == RunStatus.SUCCEEDED
    assert node.model == "gemini-2.5-flash" and node.attempt == 3
    assert run.outputs == {"f": "[gemini-2.5-flash] question"}
    assert (
        stub.count(model="gemini-2.5-pro~status=503") == 2
        and stub.count(model="gemini-2.5-flash") == 1
    )


async def test_invalid_argument_fails_at_once_without_retry(
    runtime: LocalRuntime, stub: GeminiStub
) -> None:
    run = await runtime.run(
        graph(agent("x", "gemini-2.5-flash~status=400", "bad", retry={"max_attempts": 5}))
    )
    node = (await nodes_of(runtime, run.run_id))["x"]
    assert run.status == RunStatus.FAILED and stub.count() == 1
    assert node.error is not None and node.error.http_status == 400 and not node.error.retryable


async def test_a_cap_per_model_limits_simultaneous_calls(runtime: LocalRuntime) -> None:
    nodes = [agent(f"n{i}", "gemini-2.5-flash-lite~latency=200ms", f"q{i}") for i in range(6)]
    started = time.monotonic()
    run = await runtime.run(graph(*nodes))
    assert run.status == RunStatus.SUCCEEDED
    assert time.monotonic() - started >= 0.6  # 6 calls of 200 ms, 2 at a time


async def test_a_missing_api_key_fails_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
    ):
        monkeypatch.delenv(name, raising=False)
    store = SqliteStore(":memory:")
    async with LocalRuntime(store, default_router(), default_registry) as runtime:
        with pytest.raises(LlmNotConfigured, match="GEMINI_API_KEY"):
            await runtime.start(graph(agent("a", "gemini-2.5-flash", "hi")))
        assert await store.list_runs() == []
    store.close()
