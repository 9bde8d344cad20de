"""Scale on the emulator stack: hot documents, crash takeover and a sustained load run.

Three parts of the `emulator` measurement (bench/emulator_bench.py runs them on its stack):

1. Hot documents (`max_writes_per_doc_per_s`): a root → `FANOUT` children → join run of
   echo nodes through the api. Every function process logs which documents each of its
   commits wrote (bench/ops_log.py, loaded through bench/ops_hook/sitecustomize.py: the
   store's commit path wrapped in the bench only), and the figure is the most writes any
   one document received in any sliding 1 s window during the run. Also the run's billed
   writes and reads per node, counted the same way across every function instance.
2. Crash takeover (`crash_takeover_s`): two Gemini nodes whose calls take `CRASH_CALL_S`
   on the stub; once both calls are in flight the exec function's processes are killed
   (SIGKILL) and a fresh exec is started on the same port, as Cloud Run would; the
   figure is kill → both nodes claimed again (`started_at` of the repeated execution).
   Nothing but the lease (renewed by the dead worker's heartbeat until it died) and the
   sweeper brings them back: a sweep is posted every `CRASH_SWEEP_EVERY_S` (Cloud
   Scheduler's cadence in production: once a minute) from the moment the run starts.
3. Sustained load (`load_*`): `LOAD_RUNS` runs of `LOAD_WIDTH` x `LOAD_DEPTH` Gemini nodes
   (node (k, j) after (k-1, j) and (k-1, j+1 mod width)), all posted to the api at once.
   `load_nodes_per_s` = nodes / (last run's end - first POST); an edge's latency is a
   node's `started_at` - the latest `finished_at` of its parents; `load_lost_or_doubled`
   counts nodes not succeeded (lost or stuck), nodes executed more than once, and prompts
   the Gemini stub saw other than exactly once.

The Pub/Sub emulator pushes at most 2 messages at a time per subscription (production
pushes as many as the subscriber's instances take), so on this stack the exec and
complete functions each work at most 2 messages at once. That caps `load_nodes_per_s`,
lowers the write rate any one document can see (`max_writes_per_doc_per_s` of a 1,000-wide
fan-out is measured with 2 nodes in flight, not 1,000), and stretches the load run's edge
tail (a ready node waits behind up to 4,000 queued messages). Those three figures are
properties of this stack, not of production; the counts (writes, reads, lost, doubled)
are not. docs/scaling.md turns them into production limits.

Sizes come from the environment for a quick check: BENCH_FANOUT (1000), BENCH_LOAD_RUNS
(20), BENCH_LOAD_WIDTH (10), BENCH_LOAD_DEPTH (20), BENCH_CRASH_SWEEP_EVERY_S (60).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.engine import LEASE_S
from bench import ops_log
from bench.measure import Figure, Figures

FANOUT = int(os.environ.get("BENCH_FANOUT", "1000"))
LOAD_RUNS = int(os.environ.get("BENCH_LOAD_RUNS", "20"))
LOAD_WIDTH = int(os.environ.get("BENCH_LOAD_WIDTH", "10"))
LOAD_DEPTH = int(os.environ.get("BENCH_LOAD_DEPTH", "20"))
CRASH_SWEEP_EVERY_S = float(os.environ.get("BENCH_CRASH_SWEEP_EVERY_S", "60"))
CRASH_CALL_S = 8.0
HOT_DOC_GOAL = 5
CRASH_GOAL_S = 45.0
LOAD_TIMEOUT_S = 900.0
GEMINI = "gemini-2.5-flash"


def _at_most(key: str, goal: float) -> Any:
    return lambda results: ("-", results[key] <= goal)


FIGURES = (
    Figure(
        "max_writes_per_doc_per_s",
        f"most writes to one document in any 1 s, root → {FANOUT} → join through the stack "
        "(exec and complete: 2 pushes at a time on the emulator)",
        "writes/s",
        f"<= {HOT_DOC_GOAL}",
        _at_most("max_writes_per_doc_per_s", HOT_DOC_GOAL),
    ),
    Figure(
        "crash_takeover_s",
        "exec killed with 2 Gemini calls in flight → both nodes running again "
        f"(lease + sweep every {CRASH_SWEEP_EVERY_S:g} s)",
        "s",
        f"<= {CRASH_GOAL_S:g}",
        _at_most("crash_takeover_s", CRASH_GOAL_S),
    ),
    Figure(
        "load_nodes_per_s",
        f"{LOAD_RUNS} concurrent runs x {LOAD_WIDTH * LOAD_DEPTH} Gemini nodes through the api "
        "(2 pushes at a time per subscription on the emulator)",
        "nodes/s",
        "reference",
    ),
    Figure("load_edge_p50_ms", "same load: parent finished → child started, median", "ms"),
    Figure("load_edge_p99_ms", "same load: parent finished → child started, 99th pct", "ms"),
    Figure(
        "load_lost_or_doubled",
        "same load: nodes lost, stuck or run twice (records and the stub's call counts)",
        "nodes",
        "0",
        lambda results: ("-", results["load_lost_or_doubled"] == 0),
    ),
)

PART_KEYS = {
    "hot": ("max_writes_per_doc_per_s",),
    "crash": ("crash_takeover_s",),
    "load": ("load_nodes_per_s", "load_edge_p50_ms", "load_edge_p99_ms", "load_lost_or_doubled"),
}


def stack_env(ops_dir: Path) -> dict[str, str]:
    """What the bench stack's functions need so that they log their Firestore I/O."""
    from emulator import harness

    ops_dir.mkdir(parents=True, exist_ok=True)
    path = [str(ops_log.HOOK_DIR), str(harness.REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {ops_log.ENV: str(ops_dir), "PYTHONPATH": os.pathsep.join(p for p in path if p)}


async def _post_run(api: httpx.AsyncClient, graph: dict[str, Any], input: Any = None) -> str:
    response = await api.post("/runs", json={"graph": graph, "input": input})
    if response.status_code != 201:
        raise RuntimeError(f"POST /runs answered {response.status_code}: {response.text[:500]}")
    return str(response.json()["run_id"])


async def _until_ended(store: Any, run_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        # counts=False: a status poll; counting a running run's nodes is for readers
        run = await store.get_run_summary(run_id, counts=False)
        if run is not None and run.status.terminal:
            return await store.get_run_summary(run_id)
        if time.monotonic() > deadline:
            return await store.get_run_summary(run_id)
        await asyncio.sleep(0.2)


# ---- 1. hot documents ----------------------------------------------------------------------


def fanout_graph(width: int) -> dict[str, Any]:
    children = [f"c{i:04d}" for i in range(width)]
    return {
        "name": "bench-hot",
        "nodes": [
            {"id": "root", "model": "echo", "prompt": "go"},
            *({"id": c, "after": ["root"], "model": "echo", "prompt": c} for c in children),
            {"id": "join", "after": children, "model": "echo", "prompt": "joined"},
        ],
    }


async def hot_documents(ctx: Any, stack: Any, ops_dir: Path) -> tuple[Figures, dict[str, Any]]:
    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    ctx.advance(f"hot documents: fan-out → fan-in of {FANOUT}")
    store = FirestoreStore.from_env()
    graph = fanout_graph(FANOUT)
    began = time.time()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
        run_id = await _post_run(api, graph)
    run = await _until_ended(store, run_id, LOAD_TIMEOUT_S)
    ended = time.time()
    if run is None or run.status != RunStatus.SUCCEEDED:
        raise RuntimeError(f"fan-out run {run_id} ended {run.status if run else 'missing'}")
    await asyncio.sleep(1.0)  # the last commits' log lines (written after their commits)
    logged = [e for e in ops_log.entries(ops_dir, began, ended + 1.0) if _of_run(e, run_id)]
    doc, per_s, writes = ops_log.hottest(logged)
    by_doc = ops_log.writes_by_document(logged)
    run_doc = next((d for d in by_doc if d.endswith(f"runs/{run_id}")), "")
    nodes = len(graph["nodes"])
    counts = ops_log.totals(logged)
    details = {
        "nodes": nodes,
        "run_s": round(ended - began, 2),
        "hottest_document": re.sub(r"runs/[^/]+", "runs/{run}", doc),
        "hottest_writes_total": writes,
        # the next ones too: (document, most writes in any 1 s, writes in all)
        "hottest_documents": [
            [re.sub(r"runs/[^/]+", "runs/{run}", d), per_s, total]
            for d, per_s, total in ops_log.hottest_documents(logged, 5)
        ],
        "run_document_writes": len(by_doc.get(run_doc, [])),
        "run_document_max_per_s": ops_log.max_writes_per_second(by_doc.get(run_doc, [])),
        "writes_per_node": round(counts["writes"] / nodes, 2),
        "reads_per_node": round(counts["reads"] / nodes, 2),
        "method": "every commit of every function process logged with its document paths "
        "(bench/ops_log.py); sliding 1 s window per document",
    }
    return {"max_writes_per_doc_per_s": per_s}, details


def _of_run(entry: dict[str, Any], run_id: str) -> bool:
    """A write line touching the run's documents, or any read line (reads carry no path;
    only this run is in flight while it is measured)."""
    return "r" in entry or any(f"/{run_id}" in d or d.endswith(run_id) for d in entry["w"])


# ---- 2. crash takeover -----------------------------------------------------------------------


async def crash_takeover(ctx: Any, stack: Any) -> tuple[Figures, dict[str, Any]]:
    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    ctx.advance("crash takeover: exec killed with 2 calls in flight")
    store = FirestoreStore.from_env()
    nonce = uuid.uuid4().hex[:8]
    model = f"{GEMINI}~latency={CRASH_CALL_S:g}s"
    prompts = {n: f"crash {nonce} {n}" for n in ("a", "b")}
    graph = {
        "name": "bench-crash",
        "nodes": [{"id": n, "model": model, "prompt": p} for n, p in prompts.items()],
    }
    sweeps: list[float] = []
    stop = asyncio.Event()

    async def sweeper(api: httpx.AsyncClient) -> None:
        """Cloud Scheduler's job on the bench's clock."""
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), CRASH_SWEEP_EVERY_S)
            if stop.is_set():
                return
            with contextlib.suppress(httpx.HTTPError):
                await api.post(stack.url("sweep") + "/")
                sweeps.append(time.time())

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api:
        run_id = await _post_run(api, graph)
        ticking = asyncio.create_task(sweeper(api))
        try:
            await _until(lambda: all(stack.stub.count(prompt=p) >= 1 for p in prompts.values()))
            killed = time.time()
            await asyncio.to_thread(_kill_and_restart, stack.servers["exec-default"])
            restarted = time.time()
            again = await _until(
                lambda: _repeated(store, run_id, list(prompts)),
                timeout=LEASE_S + 2 * CRASH_SWEEP_EVERY_S + 60,
            )
            run = await _until_ended(store, run_id, 120)
        finally:
            stop.set()
            await ticking
    if run is None or run.status != RunStatus.SUCCEEDED:
        raise RuntimeError(f"crash run {run_id} ended {run.status if run else 'missing'}")
    takeover = max(again.values()) - killed
    details = {
        "call_s": CRASH_CALL_S,
        "sweep_every_s": CRASH_SWEEP_EVERY_S,
        "exec_restarted_after_s": round(restarted - killed, 2),
        "running_again_after_s": {n: round(t - killed, 2) for n, t in again.items()},
        "sweeps_after_kill_s": [round(t - killed, 2) for t in sweeps if t >= killed],
        "stub_calls": {n: stack.stub.count(prompt=p) for n, p in prompts.items()},
        "figure": "kill → the later of the two nodes claimed again (its new started_at)",
    }
    return {"crash_takeover_s": round(takeover, 2)}, details


def _kill_and_restart(server: Any) -> None:
    """SIGKILL every process of the function (no goodbye), then a fresh one on the port
    its push subscription names."""
    proc = server._proc
    assert proc is not None, "exec is not running"
    proc.signal_group(signal.SIGKILL)
    server.stop()
    server.start()


async def _until(check: Any, timeout: float = 60.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout:.0f} s")
        await asyncio.sleep(interval)


async def _repeated(store: Any, run_id: str, node_ids: list[str]) -> dict[str, float] | None:
    """started_at of each node once every one was claimed again (executions >= 2)."""
    found = await store.get_outputs(run_id, node_ids)
    if all(r.executions >= 2 and r.started_at for r in found.values()) and len(found) == len(
        node_ids
    ):
        return {n: float(r.started_at) for n, r in found.items()}
    return None


# ---- 3. sustained load -----------------------------------------------------------------------


def load_graph(width: int, depth: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    for k in range(depth):
        for j in range(width):
            node: dict[str, Any] = {
                "id": f"n{k}-{j}",
                "model": GEMINI,
                "prompt": "load {{ input.tag }} " + f"n{k}-{j}",
            }
            if k:
                node["after"] = sorted({f"n{k - 1}-{j}", f"n{k - 1}-{(j + 1) % width}"})
            nodes.append(node)
    return {"name": "bench-load", "input": {"type": "object"}, "nodes": nodes}


async def load_run(ctx: Any, stack: Any, ops_dir: Path) -> tuple[Figures, dict[str, Any]]:
    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    per_run = LOAD_WIDTH * LOAD_DEPTH
    ctx.advance(f"sustained load: {LOAD_RUNS} runs x {per_run} nodes")
    store = FirestoreStore.from_env()
    graph = load_graph(LOAD_WIDTH, LOAD_DEPTH)
    tags = [f"{uuid.uuid4().hex[:8]}-{i}" for i in range(LOAD_RUNS)]
    began = time.time()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
        run_ids = await asyncio.gather(*(_post_run(api, graph, {"tag": t}) for t in tags))
    posted = time.time()
    runs = await asyncio.gather(*(_until_ended(store, r, LOAD_TIMEOUT_S) for r in run_ids))
    records = await asyncio.gather(*(store.list_nodes(r) for r in run_ids))
    ended = max((r.finished_at or time.time()) for r in runs if r is not None)
    calls = Counter(entry["prompt"] for entry in stack.stub.calls()["log"])
    lost = doubled = miscalled = 0
    edges: list[float] = []
    for tag, nodes in zip(tags, records, strict=True):
        by_id = {n.node_id: n for n in nodes}
        for node in graph["nodes"]:
            record = by_id.get(node["id"])
            if record is None or record.status != NodeStatus.SUCCEEDED:
                lost += 1
                continue
            if record.executions != 1:
                doubled += 1
            if calls[f"load {tag} {node['id']}"] != 1:
                miscalled += 1
            parents = [by_id[p] for p in node.get("after", ())]
            if parents and record.started_at is not None:
                edges.append(record.started_at - max(p.finished_at or 0.0 for p in parents))
    await asyncio.sleep(1.0)
    logged = ops_log.entries(ops_dir, began, ended + 1.0)
    counts = ops_log.totals(logged)
    doc, per_s, _ = ops_log.hottest(logged)
    total_nodes = LOAD_RUNS * per_run
    edges.sort()
    figures: Figures = {
        "load_nodes_per_s": round(total_nodes / (ended - began), 2),
        "load_edge_p50_ms": round(statistics.median(edges) * 1000, 1) if edges else None,
        "load_edge_p99_ms": round(edges[int(0.99 * (len(edges) - 1))] * 1000, 1) if edges else None,
        "load_lost_or_doubled": lost + doubled + miscalled,
    }
    details = {
        "runs": LOAD_RUNS,
        "nodes_per_run": per_run,
        "shape": f"{LOAD_WIDTH} wide x {LOAD_DEPTH} deep, each node after 2 of the layer above",
        "posted_s": round(posted - began, 2),
        "wall_s": round(ended - began, 2),
        "statuses": dict(Counter(r.status.value for r in runs if r is not None)),
        "lost_or_stuck": lost,
        "executed_twice": doubled,
        "stub_calls_not_once": miscalled,
        "edges": len(edges),
        "writes_per_node": round(counts["writes"] / total_nodes, 2),
        "reads_per_node": round(counts["reads"] / total_nodes, 2),
        "hottest_document": re.sub(r"runs/[^/]+", "runs/{run}", doc),
        "hottest_document_max_per_s": per_s,
    }
    return figures, details
