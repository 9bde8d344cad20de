"""A run whose owner is over the daily budget fails its next model call with a clear
error, before the model is called; tool nodes are not model calls and still run."""

from __future__ import annotations

import time

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.backends.local.sqlite_owner_activity import SqliteOwnerActivity
from agentgraph.core.limits import OwnerLimits
from agentgraph.core.ports import NodeRecord, RunRecord, Usage
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
