"""The GCP backend on the local emulators: edge latency against its floor, Firestore
operations and money per node, and three scale figures.

Starts its own `emulator.stack.Stack` (Firestore, Pub/Sub and Cloud Tasks emulators, the
Gemini stub, every function under functions-framework, the push subscriptions) and:

1. Edge latency: a chain of `CHAIN` echo nodes through the running stack (POST /runs to
   the api, Pub/Sub push to exec, which finishes the node and decides its child,
   node-ready to exec, ...). One edge = (claim time of the last node - claim time of the
   first) / (CHAIN - 1), from the nodes' own `started_at`: finish commit, fan-in,
   node-ready delivery and the next claim. In the same rounds, with the same clients,
   the floor: the median publish -> push delivery to an HTTP endpoint that answers at
   once, plus the median commits shaped like a claim, a finish and the child's decision.
2. Operations per node: chains of 2 and 12 nodes, success path (a node's figure is the
   difference over the 10 extra nodes; the rest of the 2-node run is the run's), run through three engines
   (api, exec, complete: one per function instance, as deployed; exec does the fan-in of
   what it finishes, so complete gets only the messages other steps send) on the Firestore
   emulator, each with its own FirestoreStore, whose `stats` count billed document reads
   and writes (the events timeline included); publishes and retry tasks are counted at
   the dispatcher and scheduler. Converted to USD with `agentgraph/data/gcp_prices.json`.
3. Scale: 1,000 parents finishing together and one child (their attempts run by the
   bench as their exec instances would, 64 at a time, each with its fan-in; then again
   with their node-finished messages sent at once to the stack's complete function; the
   child's node-ready messages are counted on a pull subscription), a 2,000-node run
   created through the api, and a
   10 MB output written and read back through the Firestore store.
4. Hot documents, crash takeover and a sustained load run: bench/scale_bench.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import httpx

from agentgraph.core import names
from agentgraph.core.messages import NodeFinished, NodeReady
from agentgraph.core.records import Outcome, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from bench import map_bench, scale_bench
from bench.measure import (
    Context,
    Figure,
    Figures,
    Unavailable,
    Verdict,
    environment,
    measurement,
)

CHAIN = 20
FLOOR_SAMPLES = 8  # of each round trip, per round
FANIN_PARENTS = 1000
CREATE_WIDTH, CREATE_DEPTH = 100, 20  # 2,000 nodes
OUTPUT_BYTES = 10_000_000
# One topic with a push subscription, relayed like node-ready along a chain: its endpoint
# publishes the next message before it answers, as exec publishes the child's node-ready
# before it acks its own. (The emulator pushes a message published after the
# subscription's last ack only after a pause, 25-100 ms measured, which an edge never
# waits: probes that answered first and published after came out above the edge.)
PROBE_TOPIC = "agentgraph-bench-probe"
PROBE_SUBSCRIPTION = f"{PROBE_TOPIC}-push"
WATCH_SUBSCRIPTION = "agentgraph-bench-node-ready-watch"
# The fan-in's floor: as many messages as the fan-in has parents, pushed to an endpoint
# that answers at once.
FANIN_PROBE_TOPIC = "agentgraph-bench-probe-fanin"
FANIN_PROBE_SUBSCRIPTION = f"{FANIN_PROBE_TOPIC}-push"
# Nodes the benchmark finishes itself: no exec function serves this pool, so their
# node-ready messages are acked unrun (the emulator ignores filters; exec-default drops
# other pools' messages).
IDLE_POOL = "bench-idle"
PROJECT = "bench-agentgraph"
EDGE_GOAL = 1.2
FANIN_GOAL_S = 3.0  # issue 14; the emulator's push floor is reported beside it
WRITES_GOAL, READS_GOAL = 5, 3  # issue 14: at most 5 billed writes and 3 reads a node
RUN_TIMEOUT_S = 300.0
OPS_LOG = "ops-log"  # where the stack's functions log their Firestore I/O (bench/ops_log.py)


def _edge_verdict(results: Any) -> Verdict | None:
    floor = results.get("emulator_edge_floor_ms")
    if not floor:
        return None
    ratio = results["emulator_edge_ms"] / floor
    return f"{ratio:.2f}x floor", ratio <= EDGE_GOAL


def _at_most(key: str, goal: float) -> Callable[[Any], Verdict]:
    return lambda results: ("-", results[key] <= goal)


FIGURES = (
    Figure(
        "emulator_edge_ms",
        f"one edge of a {CHAIN}-node echo chain through the stack (median of rounds)",
        "ms",
        f"<= {EDGE_GOAL}x floor",
        _edge_verdict,
    ),
    Figure(
        "emulator_edge_floor_ms",
        "2 push deliveries + claim, finish and fan-in commits (medians)",
        "ms",
        "reference",
    ),
    Figure(
        "firestore_writes_per_node",
        "billed document writes one more node costs (12- minus 2-node chain, events included)",
        "writes",
        f"<= {WRITES_GOAL}",
        _at_most("firestore_writes_per_node", WRITES_GOAL),
    ),
    Figure(
        "firestore_reads_per_node",
        "billed document reads one more node costs (same runs)",
        "reads",
        f"<= {READS_GOAL}",
        _at_most("firestore_reads_per_node", READS_GOAL),
    ),
    Figure(
        "firestore_writes_per_run",
        "billed writes a run costs once (create, end, first graph reads): the rest of the 2-node run",
        "writes",
        "reference",
    ),
    Figure(
        "firestore_reads_per_run",
        "billed reads a run costs once (same runs)",
        "reads",
        "reference",
    ),
    Figure(
        "infra_cost_usd_per_node",
        "Firestore + Pub/Sub + Cloud Tasks + functions, list prices (gcp_prices.json)",
        "USD",
        "reference",
    ),
    Figure(
        "fanin_1000_enqueues",
        f"node-ready messages of a child whose {FANIN_PARENTS} parents finish together",
        "count",
        "1",
        lambda results: ("-", results["fanin_1000_enqueues"] == 1),
    ),
    Figure(
        "fanin_1000_s",
        "last parent finished → child ready (through the complete function)",
        "s",
        f"<= {FANIN_GOAL_S:g}",
        _at_most("fanin_1000_s", FANIN_GOAL_S),
    ),
    Figure(
        "fanin_1000_push_floor_s",
        f"{FANIN_PARENTS} messages published at once → all pushed to an endpoint that answers "
        "at once (the emulator pushes 2 at a time)",
        "s",
        "reference",
    ),
    Figure(
        "create_2000_nodes_s",
        "POST /runs of a 2,000-node graph until 201 (validation + writes)",
        "s",
        "reference",
    ),
    Figure(
        "output_10mb_roundtrip_s",
        "a 10 MB node output written (finish_node) and read back (get_node)",
        "s",
        "reference",
    ),
    *scale_bench.FIGURES,
    *map_bench.FIGURES,
)


_PART_KEYS = {
    "edge": ("emulator_edge_ms", "emulator_edge_floor_ms"),
    "ops": (
        "firestore_writes_per_node",
        "firestore_reads_per_node",
        "firestore_writes_per_run",
        "firestore_reads_per_run",
        "infra_cost_usd_per_node",
    ),
    "fanin": ("fanin_1000_enqueues", "fanin_1000_s", "fanin_1000_push_floor_s"),
    "create": ("create_2000_nodes_s",),
    "output": ("output_10mb_roundtrip_s",),
    **scale_bench.PART_KEYS,
    **map_bench.PART_KEYS,
}
# Only these parts (comma-separated names of _PART_KEYS), for a quick check of one; the
# figures of the others are null with the reason. Unset: every part.
PARTS_ENV = "BENCH_EMULATOR_PARTS"


def _steps(repeat: int) -> int:
    return 1 + (repeat + 1) + 1 + 3 + 3 + 1 + 1


# ---- the stack and the bench process's clients --------------------------------------------


@contextlib.asynccontextmanager
async def _running_stack(ctx: Context) -> AsyncIterator[Any]:
    from emulator import harness
    from emulator.stack import Stack

    try:
        harness.ensure_tasks_venv(harness.REPO_ROOT)
    except harness.EmulatorNotInstalled as exc:
        raise Unavailable(f"the emulator stack cannot start: {exc}") from exc
    stack = Stack(
        project=PROJECT,
        sweep_every_s=None,
        log_dir=ctx.workdir / "stack-logs",
        env=scale_bench.stack_env(ctx.workdir / OPS_LOG),  # the functions log their I/O
    )
    try:
        await asyncio.to_thread(stack.start)
    except harness.EmulatorNotInstalled as exc:
        raise Unavailable(f"the emulator stack cannot start: {exc}") from exc
    try:
        with environment(stack.env()):
            yield stack
    finally:
        await asyncio.to_thread(stack.stop)


class _PushReceiver:
    """An HTTP endpoint for a push subscription that notes when each message (attribute
    `k`) arrived and answers 204: at once, or after `relay(k)` (in the server's thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.relay: Callable[[str], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = body["message"].get("attributes", {}).get("k", "")
                if receiver.relay is not None:
                    receiver.relay(key)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                future = receiver.waiting.get(key)
                if future is not None:
                    receiver.loop.call_soon_threadsafe(_resolve, future, arrived)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/push"

    def expect(self, key: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = self.loop.create_future()
        self.waiting[key] = future
        return future

    def __enter__(self) -> _PushReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _resolve(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


@contextlib.contextmanager
def _probe(stack: Any, topic: str, subscription: str) -> Iterator[_PushReceiver]:
    """A probe topic whose push subscription goes to a `_PushReceiver`, for as long as
    the block runs (the subscription is deleted after, so nothing pushes to a stopped
    endpoint)."""
    from emulator import harness

    host = stack.emulators.pubsub.host
    harness.create_topics(PROJECT, [topic], host=host)
    with _PushReceiver(asyncio.get_running_loop()) as receiver:
        harness.create_push_subscription(PROJECT, subscription, topic, receiver.url, host=host)
        try:
            yield receiver
        finally:
            with contextlib.suppress(Exception):
                harness.delete_subscription(PROJECT, subscription, host=host)


# ---- 1. edge latency and its floor ----------------------------------------------------------


def chain_graph(length: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    for i in range(length):
        node: dict[str, Any] = {"id": f"n{i:02d}", "model": "echo", "prompt": f"step {i}"}
        if i:
            node["after"] = [f"n{i - 1:02d}"]
        nodes.append(node)
    return {"name": "bench-chain", "nodes": nodes}


async def _wait_run(store: Any, run_id: str, timeout: float = RUN_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        # counts=False: a status poll; counting a running run's nodes is for readers
        run = await store.get_run(run_id, counts=False)
        if run is not None and run.status.terminal:
            return await store.get_run(run_id)
        if time.monotonic() > deadline:
            run = await store.get_run(run_id)
            counts = run.counts if run is not None else None
            raise TimeoutError(f"run {run_id} not finished after {timeout:.0f} s: {counts}")
        await asyncio.sleep(0.1)


async def _chain_round(api: httpx.AsyncClient, store: Any) -> float:
    """Seconds per edge of one chain run through the stack (checked: each node ran once)."""
    response = await api.post("/runs", json={"graph": chain_graph(CHAIN), "input": None})
    if response.status_code != 201:
        raise RuntimeError(f"POST /runs answered {response.status_code}: {response.text}")
    run_id = response.json()["run_id"]
    run = await _wait_run(store, run_id)
    nodes = {record.node_id: record for record in await store.list_nodes(run_id)}
    wrong = [n for n, r in nodes.items() if r.status != NodeStatus.SUCCEEDED or r.executions != 1]
    if run.status != RunStatus.SUCCEEDED or wrong or len(nodes) != CHAIN:
        raise RuntimeError(f"chain run {run_id} is {run.status}; not run exactly once: {wrong}")
    started = [nodes[f"n{i:02d}"].started_at for i in range(CHAIN)]
    assert all(s is not None for s in started)
    return (started[-1] - started[0]) / (CHAIN - 1)  # type: ignore[operator]


@dataclass
class _Floor:
    push: list[float] = field(default_factory=list)
    claim: list[float] = field(default_factory=list)
    finish: list[float] = field(default_factory=list)
    fanin: list[float] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        return {
            name: statistics.median(getattr(self, name))
            for name in ("push", "claim", "finish", "fanin")
        }

    def total(self) -> float:
        m = self.medians()
        return m["push"] + m["claim"] + m["finish"] + m["fanin"]


async def _floor_round(
    floor: _Floor, dispatcher: Any, receiver: _PushReceiver, client: Any, keep: bool
) -> None:
    """FLOOR_SAMPLES of each round trip an edge cannot do without, with the functions'
    own client classes: the dispatcher's publisher, the store's AsyncClient."""
    keys = [uuid.uuid4().hex for _ in range(FLOOR_SAMPLES + 1)]
    following = dict(itertools.pairwise(keys))
    arrivals = [receiver.expect(k) for k in keys]
    topic = f"projects/{PROJECT}/topics/{PROBE_TOPIC}"

    def relay(key: str) -> None:  # publish the next, wait until accepted, then answer
        if key in following:
            dispatcher.publisher.publish(topic, b"{}", k=following[key]).result(60)

    receiver.relay = relay
    try:
        await dispatcher.publish_raw(PROBE_TOPIC, b"{}", k=keys[0])
        arrived = await asyncio.wait_for(asyncio.gather(*arrivals), 120)
    finally:
        receiver.relay = None
    if keep:  # one hop: a push arrived -> the next published from its handler -> pushed
        floor.push.extend(b - a for a, b in itertools.pairwise(arrived))

    run = client.collection("bench-floor").document(uuid.uuid4().hex)
    node = run.collection(names.COLLECTION_NODES).document("node")
    child = run.collection(names.COLLECTION_NODES).document("child")
    setup = client.batch()
    setup.set(node, {"status": "ready", "attempt": 1})
    setup.set(child, {"status": "waiting"})
    results = await setup.commit()
    times = {"node": results[0].update_time, "child": results[1].update_time}

    async def timed(batch: Any) -> tuple[float, Any]:
        began = time.perf_counter()
        results = await batch.commit()
        return time.perf_counter() - began, results

    async def transition(doc: Any, key: str, status: str) -> float:
        """The shape of a node transition: one document on its update time (its timeline
        line rides in the same write)."""
        batch = client.batch()
        option = client.write_option(last_update_time=times[key])
        batch.update(doc, {"status": status, "op": uuid.uuid4().hex}, option=option)
        seconds, results = await timed(batch)
        times[key] = results[0].update_time
        return seconds

    for _ in range(FLOOR_SAMPLES):
        claim = await transition(node, "node", "running")
        finish = await transition(node, "node", "ready")
        fanin = await transition(child, "child", "ready")  # the child decided
        if keep:
            floor.claim.append(claim)
            floor.finish.append(finish)
            floor.fanin.append(fanin)


async def _edge(ctx: Context, stack: Any) -> tuple[Figures, dict[str, Any]]:
    from agentgraph.backends.gcp.firestore_store import FirestoreStore
    from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher

    store = FirestoreStore.from_env()
    dispatcher = PubSubDispatcher.from_env()
    edges: list[float] = []
    floor = _Floor()
    with _probe(stack, PROBE_TOPIC, PROBE_SUBSCRIPTION) as receiver:
        try:
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api:
                for round_ in range(ctx.repeat + 1):
                    ctx.advance("edge " + (f"{round_}/{ctx.repeat}" if round_ else "warm-up"))
                    seconds = await _chain_round(api, store)
                    await _floor_round(floor, dispatcher, receiver, store.client, bool(round_))
                    if round_:
                        edges.append(seconds)
        finally:
            dispatcher.close()
    edge_ms = statistics.median(edges) * 1000
    floor_ms = floor.total() * 1000
    details = {
        "chain_nodes": CHAIN,
        "edge_ms_samples": [round(s * 1000, 1) for s in edges],
        "edge_ms_best": round(min(edges) * 1000, 1),
        "floor_medians_ms": {k: round(v * 1000, 2) for k, v in floor.medians().items()},
        "floor": "push hop (relayed) + claim + finish + fanin (the child's decision)",
        "ratio": round(edge_ms / floor_ms, 3),
    }
    return {
        "emulator_edge_ms": round(edge_ms, 2),
        "emulator_edge_floor_ms": round(floor_ms, 2),
    }, details


# ---- 2. operations and money per node --------------------------------------------------------


class _Wire:
    """Dispatcher and RetryScheduler in one: counts what would go to Pub/Sub and Cloud
    Tasks and keeps the messages in an outbox for the caller to deliver."""

    def __init__(self) -> None:
        self.outbox: list[NodeReady | NodeFinished] = []
        self.counts: Counter[str] = Counter()

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        self.counts["publishes"] += 1
        self.outbox.append(NodeReady(run_id=run_id, node_id=node_id, attempt=attempt))

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        self.counts["publishes"] += 1
        self.outbox.append(NodeFinished(run_id=run_id, node_id=node_id, status=status))

    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None:
        self.counts["tasks"] += 1


class _CountedStore:
    """The FirestoreStore, with its `stats` deltas attributed to the method called."""

    def __init__(self, store: Any, role: str, by_call: Counter[str]) -> None:
        self._store = store
        self._role = role
        self._by_call = by_call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            before = Counter(self._store.stats)
            try:
                return await attr(*args, **kwargs)
            finally:
                delta = Counter(self._store.stats)
                delta.subtract(before)
                for kind in ("reads", "writes"):
                    if delta[kind]:
                        self._by_call[f"{self._role}.{name} {kind}"] += delta[kind]

        return counted


def _engine(role: str, wire: _Wire, by_call: Counter[str]) -> tuple[Any, Any]:
    """An engine as one function instance has it, on a store of its own whose operations
    count under `role`; its messages and retries go to `wire`."""
    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    store = FirestoreStore.from_env()
    counted = _CountedStore(store, role, by_call)
    return _deployed_engine(counted, wire, wire), store


def _deployed_engine(store: Any, dispatcher: Any, retries: Any) -> Any:
    """The engine the functions build (as deployed: exec does the fan-in of what it
    finishes), on the bench's store, dispatcher and retry scheduler."""
    from agentgraph.engine import Engine
    from agentgraph.llm import default_router
    from agentgraph.tools import default_registry

    return Engine(
        store,
        dispatcher,
        retries,
        default_router(),
        default_registry,
        check_llm_config=False,
        fanin_inline=True,
    )


def load_prices() -> dict[str, Any]:
    text = resources.files("agentgraph").joinpath("data/gcp_prices.json").read_text()
    prices: dict[str, Any] = json.loads(text)
    return prices


def cost_per_node(
    per_node: dict[str, float], seconds_per_node: float, prices: dict[str, Any]
) -> dict[str, float]:
    """USD per node by service, from counted operations and measured function time."""
    fs, ps, tasks = prices["firestore"], prices["pubsub"], prices["cloud_tasks"]
    run, deployed = prices["cloud_run_functions"], prices["deployment"]
    pubsub_bytes = per_node["publishes"] * 2 * ps["min_bytes_per_request"]  # publish + push
    return {
        "firestore": per_node["reads"] * fs["read_per_100k"] / 1e5
        + per_node["writes"] * fs["write_per_100k"] / 1e5,
        "pubsub": pubsub_bytes / 2**40 * ps["throughput_per_tib"],
        "cloud_tasks": per_node["tasks"] * 2 * tasks["per_million_operations"] / 1e6,
        "functions_requests": per_node["invocations"] * run["per_million_requests"] / 1e6,
        "functions_compute": seconds_per_node
        * (
            deployed["function_vcpu"] * run["vcpu_second"]
            + deployed["function_memory_gib"] * run["gib_second"]
        ),
    }


@dataclass
class _OpsRun:
    """One chain run through the three roles' engines: what it cost in total."""

    nodes: int
    totals: Counter[str]
    by_call: Counter[str]
    invocations: Counter[str]
    busy: dict[str, float]


async def _ops_run(nodes: int) -> _OpsRun:
    """A chain of `nodes` echo nodes on the success path, each message delivered to the
    engine of its function (api, exec, complete: one warm instance each, as deployed)."""
    wire = _Wire()
    by_call: Counter[str] = Counter()
    engines = {role: _engine(role, wire, by_call) for role in ("api", "exec", "complete")}
    invocations: Counter[str] = Counter()
    busy: dict[str, float] = {}

    async def invoke(role: str, call: Awaitable[Any]) -> Any:
        began = time.perf_counter()
        try:
            return await call
        finally:
            invocations[role] += 1
            busy[role] = busy.get(role, 0.0) + time.perf_counter() - began

    ids = [f"n{i:02d}" for i in range(nodes)]
    graph = {
        "name": f"bench-ops-{nodes}",
        "nodes": [
            {"id": ids[0], "model": "echo", "prompt": "hello"},
            *(
                {
                    "id": node,
                    "after": [parent],
                    "model": "echo",
                    "prompt": f"{{{{ nodes.{parent}.output }}}}",
                }
                for parent, node in itertools.pairwise(ids)
            ),
        ],
    }
    api_engine, exec_engine, complete_engine = (engines[r][0] for r in ("api", "exec", "complete"))
    run = await invoke("api", api_engine.start_run(graph, None, owner="bench"))
    while wire.outbox:
        message = wire.outbox.pop(0)
        if isinstance(message, NodeReady):
            await invoke(
                "exec", exec_engine.execute(message.run_id, message.node_id, message.attempt)
            )
        else:
            await invoke(
                "complete",
                complete_engine.complete(message.run_id, message.node_id, message.status),
            )
    final = await engines["api"][1].get_run(run.run_id)
    if final is None or final.status != RunStatus.SUCCEEDED:
        raise RuntimeError(f"the operations run ended {final.status if final else 'missing'}")
    totals = Counter(wire.counts)
    for _, store in engines.values():
        totals["reads"] += store.stats["reads"]
        totals["writes"] += store.stats["writes"]
        totals["commits"] += store.stats["commits"]
    totals["invocations"] = sum(invocations.values())
    return _OpsRun(nodes, totals, by_call, invocations, busy)


_OPS_KINDS = ("reads", "writes", "publishes", "tasks", "invocations")
OPS_SHORT, OPS_LONG = 2, 12  # chain lengths: the difference is what a node costs


async def _ops(ctx: Context) -> tuple[Figures, dict[str, Any]]:
    """What one more node costs, and what a run costs once.

    A node's figure is the difference between a 12-node and a 2-node chain, divided by the
    10 nodes between them (the subtraction the CLI figure uses): creating and ending the
    run, and each function instance's first read of the run's graph, cancel out. Those are
    the run's fixed cost, reported beside it (`firestore_writes_per_run`). The 2-node run's
    whole cost divided by 2, the figure this bench reported before, stays in the details."""
    ctx.advance("Firestore operations per node")
    await _ops_run(OPS_SHORT)  # a warm-up: imports and clients would count as node time
    short, long = await _ops_run(OPS_SHORT), await _ops_run(OPS_LONG)
    extra = long.nodes - short.nodes
    per_node = {k: (long.totals[k] - short.totals[k]) / extra for k in _OPS_KINDS}
    per_run = {k: short.totals[k] - short.nodes * per_node[k] for k in _OPS_KINDS}
    seconds_per_node = (sum(long.busy.values()) - sum(short.busy.values())) / extra
    prices = load_prices()
    cost = cost_per_node(per_node, max(seconds_per_node, 0.0), prices)
    marginal_calls = Counter(long.by_call)
    marginal_calls.subtract(short.by_call)
    details = {
        "run": (
            f"chains of {OPS_SHORT} and {OPS_LONG} echo nodes, success path; api, exec and "
            "complete each one warm instance"
        ),
        "figure": f"(chain of {OPS_LONG} - chain of {OPS_SHORT}) / {extra} nodes",
        "per_node": per_node,
        "per_run": per_run,
        "by_call_per_node": {
            k: round(v / extra, 2) for k, v in sorted(marginal_calls.items()) if v
        },
        "by_call_2_node_run": dict(sorted(short.by_call.items())),
        "totals_2_node_run": dict(sorted(short.totals.items())),
        "per_node_2_node_run": {k: short.totals[k] / short.nodes for k in _OPS_KINDS},
        "invocations_2_node_run": dict(short.invocations),
        "function_seconds_per_node": round(seconds_per_node, 4),
        "cost_usd_per_node": {k: float(f"{v:.3g}") for k, v in cost.items()},
        "cost_basis": (
            "function compute = measured handler wall time on the emulators x (1 vCPU + "
            "0.5 GiB), no 100 ms rounding and no sharing between concurrent requests; "
            f"prices as of {prices['as_of']} (agentgraph/data/gcp_prices.json)"
        ),
    }
    figures: Figures = {
        "firestore_writes_per_node": per_node["writes"],
        "firestore_reads_per_node": per_node["reads"],
        "firestore_writes_per_run": per_run["writes"],
        "firestore_reads_per_run": per_run["reads"],
        "infra_cost_usd_per_node": float(f"{sum(cost.values()):.3g}"),
    }
    return figures, details


# ---- 3. scale ----------------------------------------------------------------------------------


async def _fanin(ctx: Context, stack: Any) -> tuple[Figures, dict[str, Any]]:
    """A child of 1,000 parents that finish at once, twice: as deployed (each parent's
    executor does its own fan-in: the figure), and by 1,000 node-finished messages pushed
    to the stack's complete function (the path of redeliveries; in the details)."""
    ctx.advance(f"fan-in of {FANIN_PARENTS}")
    parents = [f"p{i:04d}" for i in range(FANIN_PARENTS)]
    graph = {
        "name": "bench-fanin",
        "nodes": [
            *({"id": p, "model": "echo", "prompt": "x", "pool": IDLE_POOL} for p in parents),
            {"id": "join", "after": parents, "model": "echo", "prompt": "joined"},
        ],
    }
    inline = await _fanin_round(stack, graph, parents, by_messages=False)
    messages = await _fanin_round(stack, graph, parents, by_messages=True)
    floor_s = await _fanin_push_floor(stack)
    seconds = inline.pop("seconds")
    details = {
        "parents": FANIN_PARENTS,
        "figure": "child's ready event commit time - last parent's finish (bench clock)",
        "executors_fan_in": inline,
        "by_node_finished_messages": messages,
        "push_floor_s": round(floor_s, 3),
        "by_messages_ratio_to_push_floor": round(messages["seconds"] / floor_s, 2)
        if floor_s > 0
        else None,
    }
    figures: Figures = {
        "fanin_1000_enqueues": inline["enqueues"],
        "fanin_1000_s": round(seconds, 3),
        "fanin_1000_push_floor_s": round(floor_s, 3),
    }
    return figures, details


async def _fanin_round(
    stack: Any, graph: dict[str, Any], parents: list[str], *, by_messages: bool
) -> dict[str, Any]:
    """One run of the fan-in graph; the roots are never delivered (their pool has no
    function). `by_messages`: the bench finishes the parents in the store, then publishes
    their node-finished messages together to the complete function. Otherwise it plays
    the parents' exec instances (64 at a time): each attempt runs as exec runs it
    (`Engine.execute`, echo model), its fan-in included, and the child's node-ready
    goes to Pub/Sub, where the stack's exec runs it."""
    from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher
    from emulator import harness

    starter, store = _engine("fanin", _Wire(), Counter())  # its node-ready go nowhere
    subscriber = harness.subscriber_client(stack.emulators.pubsub.host)
    watch = subscriber.subscription_path(PROJECT, WATCH_SUBSCRIPTION)
    subscriber.create_subscription(
        request={"name": watch, "topic": f"projects/{PROJECT}/topics/{names.TOPIC_NODE_READY}"}
    )
    dispatcher = PubSubDispatcher.from_env()
    executor = _deployed_engine(store, dispatcher, _Wire())
    gate = asyncio.Semaphore(64)
    try:
        run = await starter.start_run(graph, None, owner="bench")
        began = time.time()

        async def finish(parent: str) -> None:
            async with gate:
                now = time.time()
                await store.claim_node(run.run_id, parent, 1, now, now + 600)
                outcome = Outcome(NodeStatus.SUCCEEDED, output=parent, usage=Usage(), model="echo")
                await store.finish_node(run.run_id, parent, 1, outcome, time.time())

        async def execute(parent: str) -> None:
            async with gate:
                await executor.execute(run.run_id, parent, 1)

        if by_messages:
            await asyncio.gather(*(finish(p) for p in parents))
            published = time.time()
            await asyncio.gather(
                *(dispatcher.node_finished(run.run_id, p, NodeStatus.SUCCEEDED) for p in parents)
            )
        else:
            await asyncio.gather(*(execute(p) for p in parents))
        final = await _wait_run(store, run.run_id)
        events = await store.list_events(run.run_id)
        ready = [e for e in events if e.node_id == "join" and e.status == NodeStatus.READY.value]
        join = await store.get_node(run.run_id, "join")
        finished = [r.finished_at for r in (await store.get_outputs(run.run_id, parents)).values()]
        arrived = [
            float(s.get("at"))
            async for s in store._node_ref(run.run_id, "join")
            .collection(names.COLLECTION_ARRIVALS)
            .select(["at"])
            .stream()
        ]
        enqueues = await asyncio.to_thread(_count_ready, subscriber, watch, run.run_id, "join")
    finally:
        dispatcher.close()
        with contextlib.suppress(Exception):
            subscriber.delete_subscription(request={"subscription": watch})
        subscriber.close()
    if final.status != RunStatus.SUCCEEDED or join is None or join.executions != 1 or not ready:
        raise RuntimeError(
            f"fan-in run {run.run_id} ended {final.status}, child executions "
            f"{join.executions if join else None}, ready events {len(ready)}"
        )
    assert ready[0].seq is not None and None not in finished
    ready_at = ready[0].seq / 1e6
    last_finish = max(f for f in finished if f is not None)
    return {
        "seconds": round(ready_at - last_finish, 3),
        "enqueues": enqueues,
        "ready_events": len(ready),
        "child_executions": join.executions,
        # the whole burst: the first parent's claim (or, by messages, the first publish)
        # to the child's ready
        "burst_s": round(ready_at - (published if by_messages else began), 2),
        # the arrivals' own clock (`at`): from the last parent's finish, and to ready
        "first_arrival_s": round(min(arrived) - last_finish, 2) if arrived else None,
        "last_arrival_s": round(max(arrived) - last_finish, 2) if arrived else None,
        "last_arrival_to_ready_s": round(ready_at - max(arrived), 3) if arrived else None,
    }


async def _fanin_push_floor(stack: Any) -> float:
    """FANIN_PARENTS messages published together → the last of them pushed to an endpoint
    that answers at once: what the emulator's push delivery alone takes for the fan-in's
    messages, whatever the complete function does with them."""
    from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher

    dispatcher = PubSubDispatcher.from_env()
    with _probe(stack, FANIN_PROBE_TOPIC, FANIN_PROBE_SUBSCRIPTION) as receiver:
        try:
            keys = [uuid.uuid4().hex for _ in range(FANIN_PARENTS)]
            arrivals = [receiver.expect(k) for k in keys]
            await asyncio.gather(
                *(dispatcher.publish_raw(FANIN_PROBE_TOPIC, b"{}", k=k) for k in keys)
            )
            published = time.perf_counter()
            last = max(await asyncio.wait_for(asyncio.gather(*arrivals), RUN_TIMEOUT_S))
        finally:
            dispatcher.close()
    return last - published


def _count_ready(subscriber: Any, subscription: str, run_id: str, node_id: str) -> int:
    """node-ready messages for (run, node) on a pull subscription made before the run."""
    from google.api_core.exceptions import DeadlineExceeded

    count = 0
    quiet_until = time.monotonic() + 3.0
    while time.monotonic() < quiet_until:
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 1000}, timeout=2.0
            )
        except DeadlineExceeded:
            continue
        received = list(response.received_messages)
        if not received:
            continue
        quiet_until = time.monotonic() + 3.0
        for item in received:
            attributes = item.message.attributes
            if attributes.get("run_id") == run_id and attributes.get("node_id") == node_id:
                count += 1
        subscriber.acknowledge(
            request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]}
        )
    return count


def layered_graph(width: int, depth: int) -> dict[str, Any]:
    """width x depth echo nodes, (k, j) after (k-1, j) and (k-1, (j+1) mod width); the
    roots sit in the idle pool, so the run waits until it is cancelled."""
    nodes: list[dict[str, Any]] = []
    for k in range(depth):
        for j in range(width):
            node: dict[str, Any] = {"id": f"n{k}-{j}", "model": "echo", "prompt": "x"}
            if k:
                node["after"] = sorted({f"n{k - 1}-{j}", f"n{k - 1}-{(j + 1) % width}"})
            else:
                node["pool"] = IDLE_POOL
            nodes.append(node)
    return {"name": "bench-create", "nodes": nodes}


async def _create(ctx: Context, stack: Any) -> tuple[Figures, dict[str, Any]]:
    ctx.advance(f"create a {CREATE_WIDTH * CREATE_DEPTH}-node run")
    graph = layered_graph(CREATE_WIDTH, CREATE_DEPTH)
    body = json.dumps({"graph": graph, "input": None}).encode()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
        began = time.perf_counter()
        response = await api.post(
            "/runs", content=body, headers={"Content-Type": "application/json"}
        )
        seconds = time.perf_counter() - began
        if response.status_code != 201:
            raise RuntimeError(f"POST /runs answered {response.status_code}: {response.text[:500]}")
        run = response.json()
        cancelled = await api.post(f"/runs/{run['run_id']}/cancel")
    if run.get("node_count") not in (None, len(graph["nodes"])):
        raise RuntimeError(f"the run has {run.get('node_count')} nodes, not {len(graph['nodes'])}")
    details = {
        "nodes": len(graph["nodes"]),
        "request_bytes": len(body),
        "cancel_status": cancelled.status_code,
    }
    return {"create_2000_nodes_s": round(seconds, 3)}, details


async def _output(ctx: Context) -> tuple[Figures, dict[str, Any]]:
    ctx.advance("10 MB output round trip")
    wire = _Wire()
    engine, store = _engine("output", wire, Counter())
    graph = {"name": "bench-output", "nodes": [{"id": "big", "model": "echo", "prompt": "x"}]}
    run = await engine.start_run(graph, None, owner="bench")
    now = time.time()
    await store.claim_node(run.run_id, "big", 1, now, now + 600)
    output = "x" * (OUTPUT_BYTES - 2)  # 10,000,000 bytes as JSON
    before = Counter(store.stats)
    began = time.perf_counter()
    outcome = Outcome(NodeStatus.SUCCEEDED, output=output, usage=Usage(), model="echo")
    await store.finish_node(run.run_id, "big", 1, outcome, time.time())
    written = time.perf_counter()
    record = await store.get_node(run.run_id, "big")
    read = time.perf_counter()
    if record is None or record.output != output:
        raise RuntimeError("the 10 MB output read back differs from what was written")
    ops = Counter(store.stats)
    ops.subtract(before)
    details = {
        "bytes": OUTPUT_BYTES,
        "write_s": round(written - began, 3),
        "read_s": round(read - written, 3),
        "store_ops": {k: v for k, v in ops.items() if v},
    }
    return {"output_10mb_roundtrip_s": round(read - began, 3)}, details


# ---- the measurement ---------------------------------------------------------------------------


@measurement("emulator", "the GCP backend on the emulators", FIGURES, _steps)
async def emulator(ctx: Context) -> Figures:
    ctx.advance("starting the emulator stack")
    figures: Figures = {}
    details: dict[str, Any] = {}
    async with _running_stack(ctx) as stack:
        details["startup_s"] = {k: round(v, 2) for k, v in stack.startup_seconds.items()}
        parts: list[tuple[str, Callable[[], Awaitable[tuple[Figures, dict[str, Any]]]]]] = [
            ("edge", lambda: _edge(ctx, stack)),
            ("ops", lambda: _ops(ctx)),
            ("fanin", lambda: _fanin(ctx, stack)),
            ("create", lambda: _create(ctx, stack)),
            ("output", lambda: _output(ctx)),
            ("hot", lambda: scale_bench.hot_documents(ctx, stack, ctx.workdir / OPS_LOG)),
            ("load", lambda: scale_bench.load_run(ctx, stack, ctx.workdir / OPS_LOG)),
            ("map", lambda: map_bench.map_run(ctx, stack, ctx.workdir / OPS_LOG)),
            ("crash", lambda: scale_bench.crash_takeover(ctx, stack)),  # last: it kills exec
        ]
        wanted = {p.strip() for p in os.environ.get(PARTS_ENV, "").split(",") if p.strip()}
        for name, part in parts:
            if wanted and name not in wanted:
                for key in _PART_KEYS[name]:
                    ctx.note(key, f"not run ({PARTS_ENV}={','.join(sorted(wanted))})")
                continue
            try:
                got, more = await part()
            except Exception as exc:  # the other parts still run; the run exits 1
                ctx.fail(name, exc, [f.key for f in FIGURES if f.key in _PART_KEYS[name]])
                continue
            figures.update(got)
            details[name] = more
        ctx.advance("stopping the emulator stack")
    ctx.details["emulator"] = details
    return figures
