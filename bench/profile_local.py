"""Where agentgraph's local per-node overhead goes: `python -m bench.profile_local`.

Runs the overhead benchmark's graph (10x20 + sink, echo nodes, SQLite file, 10 workers;
`--width/--depth` change the shape, `--sleep-ms 100` makes every node a tool sleeping that
long, which is the parallel benchmark without Gemini) and reports, per node:
- the store calls the engine and runtime make (count, and the time each await takes),
  split into the SQL work (inline on the event loop; writes group-committed, one
  transaction per loop turn) and the wait for that turn's commit;
- how many commits the transitions shared, and what the statements cost by kind;
- a cProfile of the event loop thread (the store thread's SQL is in the first part),
  with `--pyinstrument` a pyinstrument tree instead (pip install pyinstrument).
It is a tool for whoever optimises the engine; the instrumentation slows the runs, so
its absolute times are not the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.llm import default_router
from agentgraph.tools import default_registry
from bench.local_vs_langgraph import WIDTH, WORKERS, echo_node
from bench.topology import agentgraph_document, layered, levels

DEPTH = 20
_STORE_METHODS = (
    "create_run",
    "get_run",
    "list_runs",
    "set_run_status",
    "get_node",
    "list_nodes",
    "get_outputs",
    "claim_node",
    "finish_node",
    "schedule_retry",
    "requeue_node",
    "record_arrival",
    "resolve_node",
    "cancel_not_started",
    "set_partial",
    "append_event",
    "list_events",
    "stale_nodes",
)


class _Census:
    """Per store method: calls, total await time, and total time of the SQL work on the
    store's thread (the rest of the await is the hop and waiting for the thread)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.awaited: dict[str, float] = defaultdict(float)
        self.in_thread: dict[str, float] = defaultdict(float)
        self.statements: dict[str, float] = defaultdict(float)  # BEGIN / COMMIT / SQL
        self.statement_count: dict[str, int] = defaultdict(int)
        self.thread_busy = 0.0
        self.current: str | None = None

    def install(self, store: SqliteStore) -> None:
        original_tx, original_read = store._tx, store._read
        census = self

        def measuring(work: Callable[[Any], Any]) -> Callable[[Any], Any]:
            method = self.current or "?"

            def measured(conn: Any) -> Any:
                started = time.perf_counter()
                try:
                    return work(conn)
                finally:
                    self.in_thread[method] += time.perf_counter() - started

            return measured

        async def timed_tx(work: Callable[[Any], Any]) -> Any:
            return await original_tx(measuring(work))

        async def timed_read(work: Callable[[Any], Any]) -> Any:
            return await original_read(measuring(work))

        class TimedConnection:
            """Times every statement by kind; forwards everything else."""

            def __init__(self, conn: Any) -> None:
                self._conn = conn

            def _timed(self, kind: str, call: Callable[[], Any]) -> Any:
                started = time.perf_counter()
                try:
                    return call()
                finally:
                    census.statements[kind] += time.perf_counter() - started
                    census.statement_count[kind] += 1

            def execute(self, sql: str, *args: Any) -> Any:
                kind = sql.split(None, 1)[0].upper()
                kind = kind if kind in ("BEGIN", "COMMIT", "ROLLBACK") else "SQL"
                return self._timed(kind, lambda: self._conn.execute(sql, *args))

            def executemany(self, sql: str, *args: Any) -> Any:
                return self._timed("SQL", lambda: self._conn.executemany(sql, *args))

            def __getattr__(self, name: str) -> Any:
                return getattr(self._conn, name)

        class TimedExecutor:
            """The store's one thread, with its busy time measured."""

            def __init__(self, executor: Any) -> None:
                self._executor = executor

            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
                def timed() -> Any:
                    started = time.perf_counter()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        census.thread_busy += time.perf_counter() - started

                return self._executor.submit(timed)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._executor, name)

        store._conn = TimedConnection(store._conn)  # type: ignore[assignment]
        store._executor = TimedExecutor(store._executor)  # type: ignore[assignment]
        store._tx = timed_tx  # type: ignore[method-assign]
        store._read = timed_read  # type: ignore[method-assign]
        for name in _STORE_METHODS:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            started = time.perf_counter()
            self.current = name  # read by timed_tx before its first await
            try:
                return await method(*args, **kwargs)
            finally:
                self.awaited[name] += time.perf_counter() - started

        return wrapper

    def report(self, nodes: int, runs: int, wall: float) -> str:
        per = nodes * runs
        lines = [
            f"{runs} runs x {nodes} nodes, {wall * 1000 / per:.3f} ms wall per node (instrumented)",
            f"{'store method':<16} {'calls/node':>10} {'await ms/node':>14} "
            f"{'SQL ms/node':>12} {'wait ms/call':>12}",
        ]
        for name in sorted(self.calls, key=lambda n: -self.awaited[n]):
            calls = self.calls[name]
            hop = (self.awaited[name] - self.in_thread[name]) * 1000 / calls
            lines.append(
                f"{name:<16} {calls / per:>10.2f} {self.awaited[name] * 1000 / per:>14.3f} "
                f"{self.in_thread[name] * 1000 / per:>12.3f} {hop:>12.3f}"
            )
        total_calls = sum(self.calls.values())
        lines.append(
            f"{'total':<16} {total_calls / per:>10.2f} "
            f"{sum(self.awaited.values()) * 1000 / per:>14.3f} "
            f"{sum(self.in_thread.values()) * 1000 / per:>12.3f}"
        )
        lines.append(
            "await ms sums concurrent calls, so it can exceed wall; 'SQL ms' is the work "
            "inside the transaction (statements + JSON + row decoding); 'wait' is the rest: "
            "the loop turn until the group commit, or the thread when the file was busy."
        )
        lines.append("")
        sql = sum(v for k, v in self.statements.items() if k == "SQL")
        work = sum(self.in_thread.values())
        lines.append(
            f"store thread (only when another process held the lock) busy "
            f"{self.thread_busy * 1000 / per:.3f} ms per node; statements per node: "
            + ", ".join(
                f"{kind} {self.statements[kind] * 1000 / per:.3f} ms "
                f"({self.statement_count[kind] / per:.1f}x)"
                for kind in sorted(self.statements)
            )
            + f", Python in the transaction (JSON, rows, records) {(work - sql) * 1000 / per:.3f}"
            " ms"
        )
        return "\n".join(lines)


async def _profile(
    runs: int, width: int, depth: int, sleep_ms: float, use_pyinstrument: bool, top: int
) -> None:
    topology = layered(width, depth)
    tools = default_registry.child()

    @tools.tool(name="bench_sleep")
    async def _sleep() -> str:
        await asyncio.sleep(sleep_ms / 1000)
        return "slept"

    def sleeping_node(node: str) -> dict[str, Any]:
        return {"tool": "bench_sleep"}

    document = agentgraph_document(
        "bench-layered", topology, sleeping_node if sleep_ms else echo_node
    )
    ideal = levels(topology) * sleep_ms / 1000
    with tempfile.TemporaryDirectory() as workdir:
        store = SqliteStore(Path(workdir) / "profile.db")
        try:
            async with LocalRuntime(store, default_router({}), tools, workers=WORKERS) as rt:
                await rt.run(document)  # warm-up: imports, compiled templates, caches
                started = time.perf_counter()
                uninstrumented = [await rt.run(document) for _ in range(runs)]
                plain = time.perf_counter() - started
                assert all(r.status == "succeeded" for r in uninstrumented)
                print(f"uninstrumented: {plain * 1000 / (runs * len(topology)):.3f} ms per node")
                if sleep_ms:
                    print(
                        f"  nodes sleep {sleep_ms:g} ms: efficiency {ideal * runs / plain:.3f}, "
                        f"overhead {(plain / runs - ideal) * 1000 / levels(topology):.2f} ms "
                        "per level"
                    )
                print()

                census = _Census()
                census.install(store)
                started = time.perf_counter()
                for _ in range(runs):
                    await rt.run(document)
                print(census.report(len(topology), runs, time.perf_counter() - started))
                print()

                if use_pyinstrument:
                    from pyinstrument import Profiler

                    profiler = Profiler(async_mode="enabled")
                    profiler.start()
                    for _ in range(runs):
                        await rt.run(document)
                    profiler.stop()
                    print(profiler.output_text(unicode=True, color=False, show_all=False))
                else:
                    cprofile = cProfile.Profile()
                    cprofile.enable()
                    for _ in range(runs):
                        await rt.run(document)
                    cprofile.disable()
                    out = io.StringIO()
                    stats = pstats.Stats(cprofile, stream=out)
                    stats.sort_stats("tottime").print_stats(top)
                    stats.sort_stats("cumulative").print_stats(top)
                    print(out.getvalue())
        finally:
            store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--depth", type=int, default=DEPTH)
    parser.add_argument(
        "--sleep-ms", type=float, default=0, help="tool nodes sleeping this long instead of echo"
    )
    parser.add_argument("--top", type=int, default=30, help="cProfile rows to print")
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(
        _profile(args.runs, args.width, args.depth, args.sleep_ms, args.pyinstrument, args.top)
    )


if __name__ == "__main__":
    main()
