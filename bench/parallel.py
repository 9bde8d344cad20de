"""Parallel efficiency: does a layer of 100 ms calls take 100 ms, whatever the width?

10 wide x 5 deep + sink; ideal wall = levels x 100 ms = 0.6 s, efficiency = ideal / wall.
agentgraph: every node a Gemini agent (gemini-2.5-flash) called through the real
google-genai SDK against the local GeminiStub answering after 100 ms, LocalRuntime with
10 workers. LangGraph: nodes that `asyncio.sleep(0.1)`, `max_concurrency=10`.

The same split, as figures: agentgraph with tool nodes sleeping 100 ms (the engine
without the SDK and HTTP), and LangGraph nodes making the same google-genai call with
LangGraph's defaults (no cap on async nodes: the SDK and HTTP without agentgraph's engine).

And the path users take: `agentgraph run graph.yaml --json` with the CLI's defaults, in
its own process, against the same stub. Its efficiency is the extra levels' ideal time
over the extra wall time against a 1-node Gemini graph, (levels - 1) x 100 ms /
(wall 51 nodes - wall 1 node), so process start and imports cancel out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.names import ENV_GEMINI_BASE_URL
from agentgraph.core.records import RunRecord
from agentgraph.core.status import RunStatus
from agentgraph.llm import default_router
from agentgraph.tools import Registry, default_registry
from bench.cli_path import cli_variant, interleaved_wall, process_rounds, write_graph
from bench.measure import (
    Context,
    Figure,
    Figures,
    Variant,
    Verdict,
    environment,
    interleaved,
    measurement,
)
from bench.topology import (
    RanState,
    Topology,
    agentgraph_document,
    check_each_ran_once,
    langgraph_graph,
    layered,
    levels,
)

WIDTH, DEPTH = 10, 5
WORKERS = 10
LATENCY_S = 0.1
MODEL = "gemini-2.5-flash"
GOAL = 0.95
_SLEEP_TOOL = "bench_sleep"
# Variables that would send google-genai somewhere other than the stub.
_ENV_OVERRIDES = {"GOOGLE_GENAI_USE_VERTEXAI": "false", "GOOGLE_VERTEX_BASE_URL": None}


def _verdict(results: Any) -> Verdict | None:
    return "-", results["parallel_efficiency_local"] >= GOAL


def _tools_verdict(results: Any) -> Verdict | None:
    return "-", results["parallel_efficiency_tools"] >= GOAL


def _cli_verdict(results: Any) -> Verdict | None:
    peer = results.get("parallel_efficiency_langgraph_gemini")
    if peer is None:
        return None
    got = results["parallel_efficiency_cli"]
    return f"{got / peer:.2f}x LG genai", got >= peer


FIGURES = (
    Figure(
        "parallel_efficiency_local",
        f"agentgraph efficiency: Gemini stub {LATENCY_S * 1000:g} ms, {WORKERS} workers",
        "ideal/wall",
        f"≥ {GOAL:g}",
        _verdict,
    ),
    Figure(
        "parallel_efficiency_tools",
        f"agentgraph efficiency: tool nodes sleeping {LATENCY_S * 1000:g} ms, {WORKERS} workers",
        "ideal/wall",
        f"≥ {GOAL:g}",
        _tools_verdict,
    ),
    Figure(
        "parallel_efficiency_cli",
        "`agentgraph run` (own process, defaults): Gemini stub, minus a 1-node graph",
        "ideal/wall",
        "≥ LG with google-genai",
        _cli_verdict,
    ),
    Figure(
        "parallel_efficiency_langgraph",
        f"LangGraph efficiency: sleep {LATENCY_S * 1000:g} ms, max_concurrency {WORKERS}",
        "ideal/wall",
        "reference",
    ),
    Figure(
        "parallel_efficiency_langgraph_gemini",
        "LangGraph efficiency: the same google-genai calls, LangGraph's defaults",
        "ideal/wall",
        "reference",
    ),
)


def _prompt(node: str) -> str:
    return f"node {node}"


class _StubProcess:
    """The Gemini stub in a process of its own. Gemini is remote: a stand-in served from
    threads of the measured process would take the GIL from the engine being measured
    (and from LangGraph's genai variant alike), and the figure would be the stub's."""

    def __init__(self, latency_s: float) -> None:
        ms = latency_s * 1000
        self._process = subprocess.Popen(
            [sys.executable, "-m", "emulator.gemini_stub", "--port=0", f"--latency-ms={ms:g}"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "gemini stub on http://HOST:PORT"
        if not line.strip():
            self._process.kill()
            raise RuntimeError("the Gemini stub process did not start")
        self.url = line.split()[-1]

    def calls(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stub/calls", timeout=10) as answer:
            calls: dict[str, Any] = json.load(answer)
            return calls

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/stub/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def __enter__(self) -> _StubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@contextlib.asynccontextmanager
async def _agentgraph(
    path: Path, topology: Topology, spec: Any, tools: Registry, stub: _StubProcess | None
) -> AsyncIterator[Variant]:
    document = agentgraph_document("bench-parallel", topology, spec)
    document["defaults"] = {"retry": {"max_attempts": 1}}  # a failed call fails the check
    store = SqliteStore(path)
    try:
        async with LocalRuntime(store, default_router({}), tools, workers=WORKERS) as rt:

            async def run() -> RunRecord:
                if stub is not None:
                    stub.reset()
                return await rt.run(document)

            async def check(run: RunRecord) -> None:
                if run.status != RunStatus.SUCCEEDED:
                    raise AssertionError(f"agentgraph run {run.run_id} ended {run.status}")
                nodes = await store.list_nodes(run.run_id)
                check_each_ran_once(
                    "agentgraph", [n.node_id for n in nodes for _ in range(n.executions)], topology
                )
                if stub is not None:
                    prompts = [entry["prompt"] for entry in stub.calls()["log"]]
                    expected = [(_prompt(node), parents) for node, parents in topology]
                    check_each_ran_once("agentgraph → Gemini stub", prompts, expected)

            yield Variant(run, check)
    finally:
        store.close()


def _langgraph(topology: Topology, make_node: Any, capped: bool = True) -> Variant:
    compiled = langgraph_graph(topology, make_node).compile()
    config: dict[str, Any] = {"recursion_limit": 10_000}
    if capped:
        config["max_concurrency"] = WORKERS

    async def run() -> dict[str, Any]:
        return await compiled.ainvoke({"ran": []}, config)

    async def check(state: dict[str, Any]) -> None:
        check_each_ran_once("langgraph", state["ran"], topology)

    return Variant(run, check)


def _sleeping(node: str) -> Any:
    async def step(state: RanState) -> dict[str, list[str]]:
        await asyncio.sleep(LATENCY_S)
        return {"ran": [node]}

    return step


def _calling_gemini(client: Any) -> Any:
    def make(node: str) -> Any:
        async def step(state: RanState) -> dict[str, list[str]]:
            await client.aio.models.generate_content(model=MODEL, contents=_prompt(node))
            return {"ran": [node]}

        return step

    return make


@measurement(
    "parallel",
    f"parallel efficiency ({WIDTH}x{DEPTH} + sink, {LATENCY_S * 1000:g} ms per node)",
    FIGURES,
    steps=lambda repeat: 4 * (repeat + 1) + 2 * (process_rounds(repeat) + 1),
)
async def measure(ctx: Context) -> Figures:
    topology = layered(WIDTH, DEPTH)
    ideal = levels(topology) * LATENCY_S
    tools = default_registry.child()

    @tools.tool(name=_SLEEP_TOOL)
    async def _sleep() -> str:
        await asyncio.sleep(LATENCY_S)
        return "slept"

    def gemini_node(node: str) -> dict[str, Any]:
        return {"model": MODEL, "prompt": _prompt(node)}

    def tool_node(node: str) -> dict[str, Any]:
        return {"tool": _SLEEP_TOOL}

    with (
        _StubProcess(LATENCY_S) as stub,
        environment({ENV_GEMINI_BASE_URL: stub.url, **_ENV_OVERRIDES}),
    ):
        async with contextlib.AsyncExitStack() as stack:
            variants = {
                "agentgraph_gemini": await stack.enter_async_context(
                    _agentgraph(ctx.workdir / "parallel.db", topology, gemini_node, tools, stub)
                ),
                "agentgraph_sleep_tool": await stack.enter_async_context(
                    _agentgraph(ctx.workdir / "parallel-tool.db", topology, tool_node, tools, None)
                ),
            }
            try:
                import langgraph  # noqa: F401
            except ImportError:
                ctx.note(
                    "parallel_efficiency_langgraph",
                    "langgraph is not installed: pip install -e '.[bench]' (make bench does)",
                )
            else:
                from google import genai
                from google.genai import types

                client = genai.Client(
                    api_key="stub-api-key",
                    http_options=types.HttpOptions(
                        base_url=stub.url, retry_options=types.HttpRetryOptions(attempts=1)
                    ),
                )
                stack.push_async_callback(client.aio.aclose)
                variants["langgraph_sleep"] = _langgraph(topology, _sleeping)
                variants["langgraph_gemini"] = _langgraph(
                    topology, _calling_gemini(client), capped=False
                )
            samples = await interleaved(ctx, variants)
            one = topology[:1]
            cli = {
                "cli_gemini_1_node": cli_variant(
                    write_graph(ctx.workdir / "one.yaml", "bench-one", one, gemini_node),
                    ctx.workdir / "cli.db",
                    one,
                ),
                "cli_gemini": cli_variant(
                    write_graph(
                        ctx.workdir / "parallel.yaml", "bench-parallel", topology, gemini_node
                    ),
                    ctx.workdir / "cli.db",
                    topology,
                ),
            }
            cli_samples = await interleaved_wall(ctx, cli)

    def efficiency(name: str) -> float | None:
        return round(ideal / samples[name].best, 4) if name in samples else None

    ctx.details["parallel"] = {
        "nodes": len(topology),
        "levels": levels(topology),
        "ideal_s": round(ideal, 3),
        "workers": WORKERS,
        "rounds": ctx.repeat,
        "figure": "ideal / best wall of the rounds; median alongside",
        "stub": "emulator/gemini_stub.py in its own process",
        **{
            name: {
                "efficiency_best": efficiency(name),
                "efficiency_median": round(ideal / s.median, 4),
                "overhead_per_level_ms_best": round((s.best - ideal) * 1000 / levels(topology), 2),
                "samples_s": [round(x, 4) for x in s.seconds],
            }
            for name, s in samples.items()
        },
        "cli": {
            "figure": "(levels - 1) x latency / (best wall 51 nodes - best wall 1 node)",
            "rounds": process_rounds(ctx.repeat),
            **{name: s.summary() for name, s in cli_samples.items()},
        },
    }
    extra_wall = cli_samples["cli_gemini"].best - cli_samples["cli_gemini_1_node"].best
    return {
        "parallel_efficiency_local": efficiency("agentgraph_gemini"),
        "parallel_efficiency_tools": efficiency("agentgraph_sleep_tool"),
        "parallel_efficiency_cli": round((levels(topology) - 1) * LATENCY_S / extra_wall, 4),
        "parallel_efficiency_langgraph": efficiency("langgraph_sleep"),
        "parallel_efficiency_langgraph_gemini": efficiency("langgraph_gemini"),
    }
