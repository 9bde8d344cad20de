"""Property: for random DAGs and random node outcomes, every run ends, every node ends
final, no node starts before all its parents finished, and the run status follows from
the node statuses by the pure rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.readiness import run_outcome
from agentgraph.core.status import TERMINAL_NODE, NodeStatus
from agentgraph.llm import default_router

from .conftest import scripted_tools


@st.composite
def random_graphs(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 10))
    nodes = []
    for i in range(size):
        parents = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        behaviour = draw(st.sampled_from(["ok", "ok", "ok", "fail", "flaky", "skip"]))
        node: dict[str, Any] = {"id": f"n{i}", "after": [f"n{p}" for p in parents]}
        if behaviour == "fail":
            node |= {
                "tool": "boom",
                "args": {"key": f"n{i}"},
                "on_error": draw(st.sampled_from(["fail_run", "continue", "skip_downstream"])),
            }
        elif behaviour == "flaky":
            node |= {
                "tool": "flaky",
                "args": {"key": f"n{i}", "failures": draw(st.integers(1, 3))},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.001, "jitter": False},
                "on_error": "continue",
            }
        else:
            node |= {"tool": "const", "args": {"key": f"n{i}", "value": i}}
            if behaviour == "skip":
                node["when"] = "false"
        nodes.append(node)
    return {"name": "random", "nodes": nodes}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=random_graphs(), workers=st.integers(1, 4))
def test_every_random_run_ends_consistently(document: dict[str, Any], workers: int) -> None:
    asyncio.run(_check(document, workers))


async def _check(document: dict[str, Any], workers: int) -> None:
    store = SqliteStore(":memory:")
    runtime = LocalRuntime(store, default_router(), scripted_tools(Counter()), workers=workers)
    async with runtime:
        run = await runtime.run(document)
        nodes = {n.node_id: n for n in await store.list_nodes(run.run_id)}
    store.close()
    assert all(n.status in TERMINAL_NODE for n in nodes.values())
    for node in nodes.values():
        if node.started_at is not None:
            for parent in node.parents:
                assert nodes[parent].finished_at is not None
                assert nodes[parent].finished_at <= node.started_at
    graph = runtime.engine.compile(document)
    assert run.status == run_outcome(graph, {n: r.status for n, r in nodes.items()})
    ended = sum(run.counts.get(s.value, 0) for s in TERMINAL_NODE)
    assert ended == len(nodes) and run.counts.get(NodeStatus.RUNNING.value, 0) == 0
