"""The writes of a group-committed SQLite transaction that wait for its COMMIT
(`sqlite_tx._together`): the run counts and usage its transitions moved, summed per run,
and its events, inserted together. Split from `sqlite_rows.py` (which writes the rows and
asks `open_batch` whether a transaction is collecting them)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from typing import Any

from agentgraph.core.records import Usage

INSERT_EVENT = (
    "INSERT INTO events (run_id, at, kind, node_id, status, attempt, message) "
    "VALUES (?,?,?,?,?,?,?)"
)


_COSTS_PER_UPDATE = 200  # nested round() terms in one statement (SQLite's depth limit: 1000)


def usage_terms(totals: Mapping[str, int], costs: list[float]) -> tuple[list[str], list[Any]]:
    """`json_set` arguments adding whole-number totals, and each cost in turn rounded to
    9 places after every addition (as one UPDATE per addition would): a batched sum
    gives the run the very same total as transitions committed one by one."""
    terms: list[str] = []
    params: list[Any] = []
    for key, value in totals.items():
        if value:
            path = f"$.{key}"
            terms.append("?, COALESCE(json_extract(usage, ?), 0) + ?")
            params += [path, path, value]
    costs = [c for c in costs if c]
    if costs:
        total = "COALESCE(json_extract(usage, ?), 0)"
        params += ["$.cost_usd", "$.cost_usd"]
        for cost in costs:
            total = f"round({total} + ?, 9)"
            params.append(cost)
        terms.append(f"?, {total}")
    return terms, params


def count_terms(delta: Mapping[str, int]) -> tuple[list[str], list[Any]]:
    """`json_set` arguments adding each delta to its status's count (a key it creates)."""
    pairs: list[str] = []
    params: list[Any] = []
    for status, change in delta.items():
        path = f'$."{status}"'
        pairs.append("?, COALESCE(json_extract(counts, ?), 0) + ?")
        params += [path, path, change]
    return pairs, params


class Batch:
    """The writes of one group-committed transaction that can wait until just before its
    COMMIT (`sqlite_tx._together`): the run counts moved by its transitions, summed per
    run into one UPDATE, and its events, inserted together in the order they were made.
    Nothing reads them inside the transaction, and they commit with it or not at all, so
    every transition is still durable before its caller hears of it; a transaction does
    3 statements per transition fewer than 5 (read, write, counts, event), and a finished
    model call's usage no UPDATE of its own."""

    __slots__ = ("costs", "counts", "events", "tokens")

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.events: list[tuple[Any, ...]] = []
        self.tokens: dict[str, dict[str, int]] = {}  # per run: usage's whole-number sums
        self.costs: dict[str, list[float]] = {}  # per run: each cost, in the order added

    def add_usage(self, run_id: str, usage: Usage) -> None:
        tokens = self.tokens.setdefault(run_id, {})
        for key, value in usage.to_dict().items():
            if key != "cost_usd" and value:
                tokens[key] = tokens.get(key, 0) + value
        if usage.cost_usd:
            self.costs.setdefault(run_id, []).append(usage.cost_usd)

    def write(self, conn: sqlite3.Connection) -> None:
        for run_id in {**self.counts, **self.tokens, **self.costs}:
            # A status moved into and out of within the batch still gets its key (at 0),
            # as it would have one transition at a time.
            pairs, params = count_terms(self.counts.get(run_id, {}))
            sets = [f"counts=json_set(counts, {', '.join(pairs)})"] if pairs else []
            costs = self.costs.get(run_id, [])
            tokens = self.tokens.get(run_id, {})
            for start in range(0, max(len(costs), 1), _COSTS_PER_UPDATE):
                terms, usage_params = usage_terms(
                    tokens if start == 0 else {}, costs[start : start + _COSTS_PER_UPDATE]
                )
                if terms:
                    sets.append(f"usage=json_set(usage, {', '.join(terms)})")
                    params += usage_params
                if sets:
                    conn.execute(
                        f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", (*params, run_id)
                    )
                sets, params = [], []
        if self.events:
            conn.executemany(INSERT_EVENT, self.events)


_batches = threading.local()  # the transaction open on this thread, if any


def begin_batch() -> Batch:
    batch = Batch()
    _batches.open = batch
    return batch


def end_batch() -> None:
    _batches.open = None


def open_batch() -> Batch | None:
    return getattr(_batches, "open", None)
