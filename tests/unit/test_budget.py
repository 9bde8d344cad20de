"""A run whose owner is over the daily budget fails its next model call with a clear
error, before the model is called; tool nodes are not model calls and still run."""

from __future__ import annotations

import time

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.backends.local.sqlite_owner_activity import SqliteOwnerActivity
from agentgraph.core.limits import OwnerLimits
from agentgraph.core.records import NodeRecord, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router
from agentgraph.tools import Registry

GRAPH = {
    "name": "spender",
    "defaults": {"model": "echo"},
    "nodes": [
        {"id": "count", "tool": "count", "args": {}},
        {"id": "ask", "after": ["count"], "prompt": "{{ nodes.count.output }}"},
    ],
}


async def earlier_spend(store: SqliteStore, owner: str, usd: float) -> None:
    run = RunRecord(
        run_id=f"earlier-{owner}",
        graph_name="earlier",
        graph={"name": "earlier", "nodes": [{"id": "a", "tool": "count"}]},
        input=None,
        status=RunStatus.SUCCEEDED,
        created_at=time.time(),
        node_count=1,
        owner=owner,
        usage=Usage(input_tokens=10, output_tokens=10, cost_usd=usd, calls=1),
    )
    await store.create_run(run, [NodeRecord(run.run_id, "a", NodeStatus.SUCCEEDED, [], [])])


async def test_an_owner_over_the_daily_budget_gets_a_failed_node_not_a_model_call() -> None:
    tools = Registry()
    tools.tool(lambda: 3, name="count")
    store = SqliteStore(":memory:")
    runtime = LocalRuntime(store, default_router(), tools)
    runtime.engine.owner_activity = SqliteOwnerActivity(store)
    runtime.engine.owner_limits = OwnerLimits(daily_usd=0.01)
    try:
        await earlier_spend(store, "ann", usd=0.02)
        async with runtime:
            over = await runtime.wait((await runtime.start(GRAPH, owner="ann")).run_id, timeout=30)
            within = await runtime.wait(
                (await runtime.start(GRAPH, owner="bob")).run_id, timeout=30
            )
        ask = await store.get_node(over.run_id, "ask")
    finally:
        store.close()

    assert over.status == RunStatus.FAILED
    assert ask is not None and ask.status == NodeStatus.FAILED and ask.usage.calls == 0
    assert ask.error is not None and ask.error.type == "LimitExceeded"
    assert "daily_usd" in ask.error.message and "midnight UTC" in ask.error.message
    assert within.status == RunStatus.SUCCEEDED


class CountingActivity:
    """An owner's spend today as a fixed figure, counting how often it is asked."""

    def __init__(self, usd: float) -> None:
        self.usd = usd
        self.asked = 0

    async def spend_today(self, owner: str, now: float) -> tuple[float, int]:
        self.asked += 1
        return self.usd, 0


async def test_spend_is_read_once_a_few_seconds_and_this_process_adds_its_own() -> None:
    """Ten agent nodes read the owner's spend once (an aggregation on Firestore, not one
    a model call); the calls this process makes count at once: with a budget the first
    call's cost crosses, the later nodes fail without calling the model."""
    from agentgraph.core.llm_port import LlmResponse

    class Pricey:
        calls = 0

        def supports(self, model: str) -> bool:
            return model == "pricey"

        async def generate(self, request: object, on_partial: object = None) -> LlmResponse:
            Pricey.calls += 1
            return LlmResponse(text="ok", model="pricey", usage=Usage(cost_usd=0.5, calls=1))

    chain = [
        {"id": f"n{i}", "model": "pricey", "prompt": "x", **({"after": [f"n{i - 1}"]} if i else {})}
        for i in range(10)
    ]
    store = SqliteStore(":memory:")
    runtime = LocalRuntime(store, Pricey(), Registry())
    activity = CountingActivity(usd=0.0)
    runtime.engine.owner_activity = activity  # type: ignore[assignment]
    runtime.engine.owner_limits = OwnerLimits(daily_usd=1.2)
    try:
        async with runtime:
            run = await runtime.run({"name": "pricey", "nodes": chain}, owner="ann")
    finally:
        store.close()

    assert activity.asked == 1
    assert Pricey.calls == 3  # 0.5 + 0.5 + 0.5 >= 1.2: the fourth is refused
    assert run.status == RunStatus.FAILED
