"""Overhead per node: agentgraph's local backend against LangGraph on the same DAG.

The issue's layered DAG (10 wide x 20 deep + sink = 201 nodes) with trivial nodes, so
what is measured is the orchestrator: agentgraph with `model: echo` nodes through
`LocalRuntime.run` on a SqliteStore file; LangGraph compiled in memory, and with
`AsyncSqliteSaver` on a file. Everything is invoked async on one event loop (agentgraph
is asyncio-native; LangGraph via `ainvoke` with async nodes, which is why the
checkpointer is the async one: the sync `SqliteSaver` refuses `aget_tuple`). LangGraph
keeps its default durability ("async": a superstep's checkpoint is written while the
next step runs); agentgraph commits every transition before the next message.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.records import RunRecord
from agentgraph.core.status import RunStatus
from agentgraph.llm import default_router
from agentgraph.tools import default_registry
from bench.measure import (
    Context,
    Figure,
    Figures,
    Variant,
    Verdict,
    against_langgraph,
    interleaved,
    measurement,
    ratio,
)
from bench.topology import (
    RanState,
    Topology,
    agentgraph_document,
    check_each_ran_once,
    langgraph_graph,
    layered,
)

WIDTH, DEPTH = 10, 20
WORKERS = WIDTH  # one worker per column, as LangGraph runs a whole superstep at once
GOAL_VS_SQLITE, GOAL_VS_MEMORY = 1.0, 2.0
LARGE_DEPTH = 199  # 10 x 199 + sink = 1,991 nodes, the most a graph may have rounded down
GOAL_LARGE = 1.5  # cost per node of the large graph at most this times the 201-node one
# A 201-node run lasts 35 to 90 ms; a burst of noise as long (this machine has 2 cores)
# moves one sample by 20%, and the goals sit within 5% of the figures: the best of three
# times the rounds.
ROUNDS_PER_REPEAT = 3
_LANGGRAPH_MISSING = "langgraph is not installed: pip install -e '.[bench]' (make bench does)"


def _large_verdict(results: Any) -> Verdict | None:
    growth = ratio(results["local_2000_ms_per_node"], results.get("local_ms_per_node"))
    return None if growth is None else (f"{growth:.2f}x 201 nodes", growth <= GOAL_LARGE)


FIGURES = (
    Figure(
        "local_ms_per_node",
        "agentgraph local (SQLite file), wall / nodes",
        "ms",
        f"≤ {GOAL_VS_SQLITE:g}x LG+SQLite, ≤ {GOAL_VS_MEMORY:g}x LG memory",
        against_langgraph("local_ms_per_node", GOAL_VS_SQLITE, GOAL_VS_MEMORY),
    ),
    Figure(
        "local_2000_ms_per_node",
        f"agentgraph local, {WIDTH}x{LARGE_DEPTH} + sink (validated and run), wall / nodes",
        "ms",
        f"≤ {GOAL_LARGE:g}x the 201-node figure",
        _large_verdict,
    ),
    Figure("langgraph_ms_per_node", "LangGraph in memory, wall / nodes", "ms", "reference"),
    Figure(
        "langgraph_sqlite_ms_per_node",
        "LangGraph + AsyncSqliteSaver (file), wall / nodes",
        "ms",
        "reference",
    ),
)


def echo_node(node: str) -> dict[str, Any]:
    return {"model": "echo", "prompt": f"node {node}"}


@contextlib.asynccontextmanager
async def agentgraph_variant(
    path: Path, topology: Topology, workers: int = WORKERS, validate_each_run: bool = False
) -> AsyncIterator[Variant]:
    """One runtime and one store file for every round, as a long-lived process has. The
    engine caches a validated graph by its content; `validate_each_run` renames the graph
    each round, so every timed run validates it too."""
    document = agentgraph_document("bench-layered", topology, echo_node)
    rounds = iter(range(1_000_000))
    store = SqliteStore(path)
    try:
        async with LocalRuntime(store, default_router({}), default_registry, workers=workers) as rt:

            async def run() -> RunRecord:
                if validate_each_run:
                    document["name"] = f"bench-layered-{next(rounds)}"
                return await rt.run(document)

            async def check(run: RunRecord) -> None:
                if run.status != RunStatus.SUCCEEDED:
                    raise AssertionError(f"agentgraph run {run.run_id} ended {run.status}")
                nodes = await store.list_nodes(run.run_id)
                ran = [n.node_id for n in nodes for _ in range(n.executions)]
                check_each_ran_once("agentgraph", ran, topology)

            yield Variant(run, check)
    finally:
        store.close()


def _trivial(node: str) -> Any:
    async def step(state: RanState) -> dict[str, list[str]]:
        return {"ran": [node]}

    return step


def _langgraph_check(topology: Topology, variant: str) -> Any:
    async def check(state: dict[str, Any]) -> None:
        check_each_ran_once(variant, state["ran"], topology)

    return check


def langgraph_memory_variant(topology: Topology) -> Variant:
    compiled = langgraph_graph(topology, _trivial).compile()
    config = {"recursion_limit": 10_000}

    async def run() -> dict[str, Any]:
        return await compiled.ainvoke({"ran": []}, config)

    return Variant(run, _langgraph_check(topology, "langgraph"))


@contextlib.asynccontextmanager
async def langgraph_sqlite_variant(path: Path, topology: Topology) -> AsyncIterator[Variant]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        compiled = langgraph_graph(topology, _trivial).compile(checkpointer=saver)

        async def run() -> dict[str, Any]:
            config = {"recursion_limit": 10_000, "configurable": {"thread_id": uuid.uuid4().hex}}
            return await compiled.ainvoke({"ran": []}, config)

        yield Variant(run, _langgraph_check(topology, "langgraph_sqlite"))


@measurement(
    "local",
    f"overhead per node: agentgraph local vs LangGraph ({WIDTH}x{DEPTH} + sink)",
    FIGURES,
    steps=lambda repeat: 4 * (ROUNDS_PER_REPEAT * repeat + 1),
)
async def measure(ctx: Context) -> Figures:
    topology, large = layered(WIDTH, DEPTH), layered(WIDTH, LARGE_DEPTH)
    nodes = len(topology)
    async with contextlib.AsyncExitStack() as stack:
        variants = {
            "agentgraph": await stack.enter_async_context(
                agentgraph_variant(ctx.workdir / "agentgraph-local.db", topology)
            ),
            "agentgraph_2000": await stack.enter_async_context(
                agentgraph_variant(
                    ctx.workdir / "agentgraph-large.db", large, validate_each_run=True
                )
            ),
        }
        try:
            import langgraph  # noqa: F401
        except ImportError:
            for figure in FIGURES[2:]:
                ctx.note(figure.key, _LANGGRAPH_MISSING)
        else:
            variants["langgraph"] = langgraph_memory_variant(topology)
            variants["langgraph_sqlite"] = await stack.enter_async_context(
                langgraph_sqlite_variant(ctx.workdir / "langgraph.db", topology)
            )
        samples = await interleaved(ctx, variants, ROUNDS_PER_REPEAT * ctx.repeat)
    ctx.details["local"] = {
        "nodes": nodes,
        "workers": WORKERS,
        "rounds": ROUNDS_PER_REPEAT * ctx.repeat,
        "figure": "best of the rounds (wall / nodes); median alongside",
        "invocation": "async on one event loop: LocalRuntime.run, CompiledStateGraph.ainvoke",
        "large_nodes": len(large),
        **{
            name: s.summary(per=len(large) if name == "agentgraph_2000" else nodes)
            for name, s in samples.items()
        },
    }

    def per_node(name: str, count: int = nodes) -> float | None:
        return round(samples[name].best * 1000 / count, 4) if name in samples else None

    return {
        "local_ms_per_node": per_node("agentgraph"),
        "local_2000_ms_per_node": per_node("agentgraph_2000", len(large)),
        "langgraph_ms_per_node": per_node("langgraph"),
        "langgraph_sqlite_ms_per_node": per_node("langgraph_sqlite"),
    }
