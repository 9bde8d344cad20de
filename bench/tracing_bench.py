"""What tracing costs, and where an emulator edge's time goes (from the spans).

1. `tracing` (local): the layered DAG of `bench/local_vs_langgraph.py` on the local
   backend, rounds interleaved with tracing off (the default: every hook is the shared
   no-op) and on (the OpenTelemetry SDK, spans batched to an exporter that drops them, so
   the figure is the SDK's cost without any I/O). Besides, the no-op hooks one node
   attempt calls are timed on their own in a tight loop: that is what tracing off adds.
2. `trace-split` (emulators): a chain of echo nodes through the function processes with
   `AGENTGRAPH_TRACE=otlp` into a loopback collector (emulator/otlp_collector.py). Each
   edge (parent's finish → child's claim) is split by the spans of that edge into its
   hops: the Firestore commits (finish, fan-in, claim), the node-ready publish, its
   publish → push delivery, and the rest of the handlers' time (one push since exec does
   the fan-in of what it finishes; two before, with node-finished to complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agentgraph.observability import metrics, tracing
from agentgraph.observability.logs import log_fields
from bench.local_vs_langgraph import WORKERS, agentgraph_variant
from bench.measure import (
    Context,
    Figure,
    Figures,
    Unavailable,
    Variant,
    interleaved,
    measurement,
    ratio,
)
from bench.topology import layered

WIDTH, DEPTH = 10, 20
NOOP_LOOPS = 20_000
CHAIN = 12
SPLIT_PROJECT = "bench-trace"


def _off_verdict(results: Any) -> tuple[str, bool | None] | None:
    untraced = results.get("local_ms_per_node_untraced")
    share = ratio(results["trace_off_us_per_node"], untraced * 1000 if untraced else None)
    if share is None:
        return None
    return f"{share:.2%} of a local node", share < 0.01


def _on_verdict(results: Any) -> tuple[str, bool | None] | None:
    share = ratio(results["trace_on_ms_per_node"], results.get("local_ms_per_node_untraced"))
    return None if share is None else (f"+{share:.0%} per local node", None)


LOCAL_FIGURES = (
    Figure(
        "trace_off_us_per_node",
        "tracing off: the no-op hooks of one node attempt, timed alone",
        "us",
        "< 1% of a local node",
        _off_verdict,
    ),
    Figure("local_ms_per_node_untraced", "local per node, tracing off (this run)", "ms"),
    Figure("local_ms_per_node_traced", "local per node with tracing on (SDK, no export)", "ms"),
    Figure(
        "trace_on_ms_per_node",
        "tracing on: added per node (traced - untraced)",
        "ms",
        "reported",
        _on_verdict,
    ),
)
SPLIT_FIGURES = (
    Figure("traced_edge_ms", "emulator edge with tracing on (parent finish → child claim)", "ms"),
    Figure("edge_push_ms", "of which node-ready publish → push", "ms"),
    Figure("edge_firestore_ms", "of which Firestore commits (finish, fan-in, claim)", "ms"),
    Figure("edge_publish_ms", "of which the node-ready publish call", "ms"),
    Figure("edge_handler_ms", "of which the rest of the handlers (framework, reads, code)", "ms"),
)
FIGURES = LOCAL_FIGURES + SPLIT_FIGURES


class _Discard:
    """A span exporter that drops what it gets: the SDK's cost, without I/O."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _traced(variant: Variant, provider: Any) -> Variant:
    async def run() -> Any:
        tracing.use(provider)
        try:
            return await variant.run()
        finally:
            tracing.use(None)

    return Variant(run, variant.check)


def _noop_hooks_seconds(loops: int) -> float:
    """Seconds per node of the hooks `Engine.execute` and the fan-in call with tracing
    off: the node, claim, run, finish and fan-in spans, the attempt's metrics and log
    fields, and the annotations."""
    assert not tracing.enabled()
    instruments = metrics.instruments()
    labels = {"status": "succeeded", "kind": "llm", "model": "echo"}
    started = time.perf_counter()
    for _ in range(loops):
        with log_fields("r", "n", 1), tracing.span("node n", labels):
            with tracing.span("claim"):
                pass
            with tracing.span("chat echo", labels):
                instruments.tokens.add(1, labels)
                instruments.tokens.add(1, labels)
                instruments.cost.add(0.0, labels)
            instruments.node_attempts.add(1, labels)
            instruments.node_duration.record(0.001, labels)
            tracing.annotate(agentgraph__node__status="succeeded")
            with tracing.span("finish"):
                pass
            with tracing.span("publish", None, tracing.SpanKind.PRODUCER):
                tracing.inject({})
        with tracing.continued({}, "complete"), tracing.span("fanin n"):
            tracing.annotate(agentgraph__fanin__verdict="ready")
    return (time.perf_counter() - started) / loops


@measurement(
    "tracing",
    f"tracing cost per node on the local backend ({WIDTH}x{DEPTH} + sink)",
    LOCAL_FIGURES,
    steps=lambda repeat: 2 * (repeat + 1) + 1,
)
async def measure_local(ctx: Context) -> Figures:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    topology = layered(WIDTH, DEPTH)
    nodes = len(topology)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))  # type: ignore[arg-type]
    tracing.use(None)
    async with contextlib.AsyncExitStack() as stack:
        off = await stack.enter_async_context(
            agentgraph_variant(ctx.workdir / "off.db", topology, WORKERS)
        )
        on = await stack.enter_async_context(
            agentgraph_variant(ctx.workdir / "on.db", topology, WORKERS)
        )
        samples = await interleaved(ctx, {"off": off, "on": _traced(on, provider)})
    provider.shutdown()
    ctx.advance("no-op hooks")
    noop_s = min(_noop_hooks_seconds(NOOP_LOOPS) for _ in range(3))
    off_ms = samples["off"].best * 1000 / nodes
    on_ms = samples["on"].best * 1000 / nodes
    ctx.details["tracing"] = {
        "nodes": nodes,
        "figure": "best of the rounds (wall / nodes); off and on interleaved",
        "exporter": "BatchSpanProcessor into a discarding exporter (no I/O)",
        "noop_loops": NOOP_LOOPS,
        **{name: s.summary(per=nodes) for name, s in samples.items()},
    }
    return {
        "trace_off_us_per_node": round(noop_s * 1e6, 3),
        "local_ms_per_node_untraced": round(off_ms, 4),
        "local_ms_per_node_traced": round(on_ms, 4),
        "trace_on_ms_per_node": round(on_ms - off_ms, 4),
    }


# ---- 2. the emulator edge, split by its spans ------------------------------------------------


def chain(length: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    for i in range(length):
        node: dict[str, Any] = {"id": f"n{i:02d}", "model": "echo", "prompt": f"step {i}"}
        if i:
            node["after"] = [f"n{i - 1:02d}"]
        nodes.append(node)
    return {"name": "bench-trace-chain", "nodes": nodes}


def edge_split(spans: Sequence[Any], parent: str, child: str) -> dict[str, float]:
    """Seconds of each hop of the edge parent → child, from one run's spans (collected
    by emulator/otlp_collector.py); raises KeyError when a span is missing."""
    by_id = {s.span_id: s for s in spans}

    def node(node_id: str) -> Any:
        return next(s for s in spans if s.name == f"node {node_id}")

    def child_of(span: Any, name: str) -> Any:
        return next(s for s in spans if s.parent_id == span.span_id and s.name.startswith(name))

    upper, lower = node(parent), node(child)
    finish = child_of(upper, "finish")
    complete = child_of(upper, "complete")  # exec's own fan-in, inside the node's span
    fanin = child_of(complete, "fanin")
    published_ready = child_of(fanin, "publish")
    execute = by_id[lower.parent_id]
    claim = child_of(lower, "claim")
    total = claim.end_ns - finish.start_ns
    hops = {
        "push": execute.start_ns - published_ready.end_ns,
        "firestore": finish.end_ns
        - finish.start_ns
        + (fanin.end_ns - fanin.start_ns)
        - (published_ready.end_ns - published_ready.start_ns)
        + (claim.end_ns - claim.start_ns),
        "publish": published_ready.end_ns - published_ready.start_ns,
    }
    hops["handler"] = total - sum(hops.values())
    return {"total": total / 1e9, **{k: v / 1e9 for k, v in hops.items()}}


@contextlib.asynccontextmanager
async def _traced_stack(ctx: Context, collector_url: str) -> AsyncIterator[Any]:
    from emulator import harness
    from emulator.stack import Stack

    try:
        harness.ensure_tasks_venv(harness.REPO_ROOT)
    except harness.EmulatorNotInstalled as exc:
        raise Unavailable(f"the emulator stack cannot start: {exc}") from exc
    env = {
        "AGENTGRAPH_TRACE": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "AGENTGRAPH_LOG_LEVEL": "WARNING",
    }
    stack = Stack(project=SPLIT_PROJECT, sweep_every_s=None, log_dir=ctx.workdir / "logs", env=env)
    try:
        await asyncio.to_thread(stack.start)
    except harness.EmulatorNotInstalled as exc:
        raise Unavailable(f"the emulator stack cannot start: {exc}") from exc
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


@measurement(
    "trace-split",
    f"the emulator edge split into hops by its spans (chain of {CHAIN})",
    SPLIT_FIGURES,
    steps=lambda repeat: repeat + 2,
)
async def measure_split(ctx: Context) -> Figures:
    import httpx

    from emulator.otlp_collector import OtlpCollector

    edges: list[dict[str, float]] = []
    with OtlpCollector() as collector:
        async with (
            _traced_stack(ctx, collector.url) as stack,
            httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api,
        ):
            ctx.advance("stack started")
            for round_ in range(ctx.repeat + 1):
                ctx.advance("chain " + (f"{round_}/{ctx.repeat}" if round_ else "warm-up"))
                run_id = await _run_chain(api)
                last = f"n{CHAIN - 1:02d}"

                def has_all(spans: list[Any], run_id: str = run_id, last: str = last) -> bool:
                    return any(
                        s.name == f"node {last}" and s.attributes.get(tracing.RUN_ID) == run_id
                        for s in spans
                    )

                spans = await asyncio.to_thread(collector.wait_for, has_all, 60, "chain spans")
                trace_id = next(
                    s.trace_id for s in spans if s.attributes.get(tracing.RUN_ID) == run_id
                )
                ours = [s for s in spans if s.trace_id == trace_id]
                if round_:
                    edges += [
                        edge_split(ours, f"n{i:02d}", f"n{i + 1:02d}") for i in range(CHAIN - 1)
                    ]
                collector.clear()
    median = {k: statistics.median(e[k] for e in edges) * 1000 for k in edges[0]}
    ctx.details["trace_split"] = {
        "edges": len(edges),
        "figure": "median over every edge of every timed chain",
        "hops_ms_median": {k: round(v, 2) for k, v in median.items()},
        "push": "node-ready publish accepted → exec's push request handled",
        "firestore": "the finish, fan-in (reads and commit) and claim transactions",
    }
    return {
        "traced_edge_ms": round(median["total"], 2),
        "edge_push_ms": round(median["push"], 2),
        "edge_firestore_ms": round(median["firestore"], 2),
        "edge_publish_ms": round(median["publish"], 2),
        "edge_handler_ms": round(median["handler"], 2),
    }


async def _run_chain(api: Any) -> str:
    response = await api.post("/runs", json={"graph": chain(CHAIN), "input": None})
    if response.status_code != 201:
        raise RuntimeError(f"POST /runs answered {response.status_code}: {response.text}")
    run_id = str(response.json()["run_id"])
    deadline = time.monotonic() + 120
    while True:
        run = (await api.get(f"/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"chain run {run_id} did not finish")
        await asyncio.sleep(0.1)
    if run["status"] != "succeeded":
        raise RuntimeError(f"chain run {run_id} ended {run['status']}")
    return run_id
