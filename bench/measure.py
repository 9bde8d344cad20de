"""The small framework every benchmark plugs into: figures, measurements, a registry.

A measurement is an async function `(Context) -> dict[str, float | None]` registered with
`@measurement(...)` under a short name (what `--only` selects). It declares the figures
(results.json keys) it provides, each with its goal, so `bench.run` can print the table
without knowing any benchmark. A measurement that cannot run raises `Unavailable(reason)`:
its figures become `null` and the reason is printed and kept in results.json's `notes`.
A figure it cannot fill on its own (say LangGraph is not installed) it returns as None
after `ctx.note(key, reason)`.

`bench/emulator_bench.py`, once the GCP backend exists, registers one measurement
providing the emulator figures declared in `EMULATOR_FIGURES` (same keys; it may pass
its own `Figure`s with goals). Until then `bench.run` registers a stand-in that raises
`Unavailable`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Figures = dict[str, float | None]
# (ratio text for the table, whether the goal is met); None when the figure has no goal
# or the figures it compares with are missing.
Verdict = tuple[str, bool | None]


class Unavailable(Exception):
    """This measurement cannot run here; the message says why and what would fix it."""


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    goal: str = "-"
    check: Callable[[Mapping[str, Any]], Verdict | None] | None = None

    def verdict(self, results: Mapping[str, Any]) -> Verdict | None:
        if self.check is None or results.get(self.key) is None:
            return None
        return self.check(results)


@dataclass
class Context:
    """What a measurement gets: how often to repeat, where to put files, and where to
    report progress, reasons for missing figures and supplementary details."""

    repeat: int
    workdir: Path
    advance: Callable[[str], None] = lambda _description: None
    notes: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def note(self, key: str, reason: str) -> None:
        self.notes[key] = reason

    def fail(self, part: str, exc: BaseException, keys: Sequence[str]) -> None:
        """One part of a measurement failed: its figures become null with the reason, the
        traceback is kept for the report, and the benchmark run exits 1."""
        self.failures.append(
            f"{part}: " + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        for key in keys:
            self.note(key, f"{part} failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Measurement:
    name: str
    title: str
    figures: tuple[Figure, ...]
    run: Callable[[Context], Awaitable[Figures]]
    steps: Callable[[int], int]  # progress steps for a given --repeat

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.figures)


REGISTRY: dict[str, Measurement] = {}


def measurement(
    name: str, title: str, figures: Sequence[Figure], steps: Callable[[int], int]
) -> Callable[[Callable[[Context], Awaitable[Figures]]], Callable[[Context], Awaitable[Figures]]]:
    """Register `run` as the measurement `name`; a later registration replaces an earlier
    one (which is how emulator_bench replaces the stand-in)."""

    def register(
        run: Callable[[Context], Awaitable[Figures]],
    ) -> Callable[[Context], Awaitable[Figures]]:
        REGISTRY[name] = Measurement(name, title, tuple(figures), run, steps)
        return run

    return register


# ---- timing helpers --------------------------------------------------------------------


@dataclass
class Samples:
    """Wall times of repeated runs of one variant, in seconds."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self, per: int = 1) -> dict[str, Any]:
        """best/median (ms per unit of `per`) and the raw samples, for results details."""
        return {
            "best_ms": round(self.best * 1000 / per, 3),
            "median_ms": round(self.median * 1000 / per, 3),
            "samples_s": [round(s, 4) for s in self.seconds],
        }


@dataclass(frozen=True)
class Variant:
    """One contender: `run` is what is timed; `check` then proves the run did what the
    comparison assumes (it is given what `run` returned and is not timed)."""

    run: Callable[[], Awaitable[Any]]
    check: Callable[[Any], Awaitable[None]]


async def interleaved(
    ctx: Context, variants: Mapping[str, Variant], rounds: int | None = None
) -> dict[str, Samples]:
    """One warm-up round, then `rounds` (default `ctx.repeat`) timed rounds; each round
    runs every variant once, so a burst of noise on this machine hits all of them rather
    than one."""
    rounds = rounds or ctx.repeat
    samples = {name: Samples(name) for name in variants}
    for round_ in range(rounds + 1):
        for name, variant in variants.items():
            ctx.advance(f"{name} " + (f"{round_}/{rounds}" if round_ else "warm-up"))
            gc.collect()  # start each run without the previous one's garbage
            started = time.perf_counter()
            evidence = await variant.run()
            seconds = time.perf_counter() - started
            await variant.check(evidence)
            if round_:
                samples[name].seconds.append(seconds)
    return samples


def ratio(a: Any, b: Any) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def against_langgraph(
    key: str, goal_vs_sqlite: float, goal_vs_memory: float
) -> Callable[[Any], Verdict | None]:
    """The verdict of a per-node figure against LangGraph measured in the same run: with
    its SQLite checkpointer and in memory, each ratio held to its own goal."""

    def verdict(results: Any) -> Verdict | None:
        vs_sqlite = ratio(results[key], results.get("langgraph_sqlite_ms_per_node"))
        vs_memory = ratio(results[key], results.get("langgraph_ms_per_node"))
        if vs_sqlite is None and vs_memory is None:
            return None
        parts, met = [], True
        if vs_sqlite is not None:
            parts.append(f"{vs_sqlite:.2f}x LG+SQLite")
            met = met and vs_sqlite <= goal_vs_sqlite
        if vs_memory is not None:
            parts.append(f"{vs_memory:.2f}x LG memory")
            met = met and vs_memory <= goal_vs_memory
        return ", ".join(parts), met

    return verdict


# ---- the emulator figures (provided later by bench/emulator_bench.py) ------------------

EMULATOR_FIGURES: tuple[Figure, ...] = (
    Figure("emulator_edge_ms", "edge latency on the emulators (node finished → child runs)", "ms"),
    Figure("emulator_edge_floor_ms", "edge latency floor (emulator round trips alone)", "ms"),
    Figure("firestore_writes_per_node", "Firestore writes per node", "writes"),
    Figure("firestore_reads_per_node", "Firestore reads per node", "reads"),
    Figure("firestore_writes_per_run", "Firestore writes a run costs once", "writes"),
    Figure("firestore_reads_per_run", "Firestore reads a run costs once", "reads"),
    Figure("infra_cost_usd_per_node", "infrastructure cost per node", "USD"),
    Figure("fanin_1000_enqueues", "enqueues of a child with 1000 parents", "count"),
    Figure("fanin_1000_s", "fan-in of 1000 parents, wall time", "s"),
    Figure("fanin_1000_push_floor_s", "1000 messages pushed by the emulator alone", "s"),
    Figure("create_2000_nodes_s", "creating a run of 2000 nodes", "s"),
    Figure("output_10mb_roundtrip_s", "10 MB output written and read back", "s"),
    Figure("max_writes_per_doc_per_s", "most writes to one document in 1 s (fan-out)", "/s"),
    Figure("crash_takeover_s", "exec killed mid-call → node running again", "s"),
    Figure("load_nodes_per_s", "sustained load: nodes per second", "nodes/s"),
    Figure("load_edge_p50_ms", "sustained load: edge latency, median", "ms"),
    Figure("load_edge_p99_ms", "sustained load: edge latency, 99th percentile", "ms"),
    Figure("load_lost_or_doubled", "sustained load: nodes lost, stuck or run twice", "nodes"),
    Figure("map_1000_llm_calls", "a 1,000-item map: item calls at the LLM stub", "calls"),
    Figure("map_1000_s", "a 1,000-item map: wall time", "s"),
    Figure("map_1000_writes_per_item", "a 1,000-item map: Firestore writes per item", "writes"),
    Figure("map_1000_max_writes_per_doc_per_s", "a 1,000-item map: hottest document", "/s"),
)


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) these variables for the measurement, then put every one
    back: the clients a measurement builds read their endpoints from the environment."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
