"""The local runtime runs many nodes at once; what guards a model's quota is its cap."""

from __future__ import annotations

from agentgraph.backends.local.runtime import DEFAULT_WORKERS
from agentgraph.llm import DEFAULT_MAX_CONCURRENCY, default_router


def test_a_layer_of_ten_agents_runs_at_once_by_default() -> None:
    assert DEFAULT_WORKERS >= 10 and DEFAULT_MAX_CONCURRENCY["*"] >= 10


def test_each_model_is_capped_by_default_and_a_cap_given_wins() -> None:
    router = default_router({"gemini-2.5-pro": 4})
    assert router._semaphore("gemini-2.5-flash")._value == DEFAULT_MAX_CONCURRENCY["*"]  # type: ignore[union-attr]
    assert router._semaphore("gemini-2.5-pro")._value == 4  # type: ignore[union-attr]
    assert default_router({"*": 2})._semaphore("gemini-2.5-flash")._value == 2  # type: ignore[union-attr]
