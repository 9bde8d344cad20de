"""Which Firestore documents the functions write, and when: for the bench only.

The emulator stack's functions run in processes of their own, so the bench cannot count
their writes from its own store. With `AGENTGRAPH_BENCH_OPS_LOG=<dir>` and
`bench/ops_hook` on PYTHONPATH, every function process loads `sitecustomize.py` from
there, which calls `install`: it wraps the Firestore store's counted I/O
(`FirestoreIO._commit`, `_get`, `_get_all`, `_query`, the one path every read and write
of the store takes, and the arrivals' `count()`, `FirestoreStore._count_arrivals`) so that each process appends to `<dir>/<pid>.jsonl` one line per
committed batch, `{"t": commit time, "w": [document paths]}`, and one per read,
`{"t": time, "r": documents billed, "by": the store method that read}`. Nothing of agentgraph changes; the wrappers time
the commit as the client saw it return.

`writes_by_document`, `max_writes_per_second` and `hottest_documents` read those files back.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENV = "AGENTGRAPH_BENCH_OPS_LOG"
HOOK_DIR = Path(__file__).with_name("ops_hook")


def install(folder: str) -> None:
    """Wrap FirestoreIO's I/O in this process (called by ops_hook/sitecustomize.py)."""
    from agentgraph.backends.gcp import firestore_io

    path = Path(folder) / f"{os.getpid()}.jsonl"
    lock = threading.Lock()

    def emit(entry: dict[str, Any]) -> None:
        line = json.dumps(entry) + "\n"
        with lock, open(path, "a", encoding="utf-8") as out:
            out.write(line)

    writes_cls = firestore_io.Writes
    io = firestore_io.FirestoreIO
    for name in ("create", "set", "update"):
        original = getattr(writes_cls, name)

        def record(self: Any, ref: Any, *args: Any, _original: Any = original, **kw: Any) -> None:
            self.__dict__.setdefault("paths", []).append(ref.path)
            _original(self, ref, *args, **kw)

        setattr(writes_cls, name, record)

    commit = io._commit

    async def logged_commit(self: Any, writes: Any) -> list[Any]:
        results = await commit(self, writes)
        emit({"t": time.time(), "w": writes.__dict__.get("paths", [])})
        return results

    io._commit = logged_commit  # type: ignore[method-assign]

    # Reads billed as FirestoreIO counts them, from each call's own arguments and result
    # (not from `stats` deltas, which other coroutines of the process move meanwhile).
    billed = {
        "_get": lambda args, result: 1,
        "_get_all": lambda args, result: len(args[0]) if args else 0,
        "_query": lambda args, result: max(1, len(result)),
    }
    for name, count in billed.items():
        original = getattr(io, name)

        async def counted(
            self: Any, *args: Any, _original: Any = original, _count: Any = count, **kw: Any
        ) -> Any:
            result = await _original(self, *args, **kw)
            caller = sys._getframe(1).f_code.co_name  # the store method reading
            emit({"t": time.time(), "r": _count(args, result), "by": caller})
            return result

        setattr(io, name, counted)

    # An arrival's count() aggregation: one read per 1,000 index entries counted.
    from agentgraph.backends.gcp import firestore_store

    store_cls = firestore_store.FirestoreStore
    count_arrivals = store_cls._count_arrivals

    async def counted_arrivals(self: Any, arrivals: Any) -> int:
        found = await count_arrivals(self, arrivals)
        emit({"t": time.time(), "r": max(1, -(-found // 1000)), "by": "_count_arrivals"})
        return found

    store_cls._count_arrivals = counted_arrivals  # type: ignore[method-assign]


def entries(folder: Path, since: float = 0.0, until: float = float("inf")) -> list[dict[str, Any]]:
    """Every line the processes logged between `since` and `until`."""
    found = []
    for file in folder.glob("*.jsonl"):
        for line in file.read_text(encoding="utf-8").splitlines():
            with_time = json.loads(line)
            if since <= with_time["t"] <= until:
                found.append(with_time)
    return found


def writes_by_document(logged: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    by_doc: dict[str, list[float]] = defaultdict(list)
    for entry in logged:
        for doc in entry.get("w", ()):
            by_doc[doc].append(entry["t"])
    return by_doc


def max_writes_per_second(times: list[float], window_s: float = 1.0) -> int:
    """The most of `times` inside any window of `window_s` (sliding, not bucketed)."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def totals(logged: Iterable[dict[str, Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for entry in logged:
        counts["writes"] += len(entry.get("w", ()))
        counts["reads"] += entry.get("r", 0)
    return counts


def hottest(logged: list[dict[str, Any]]) -> tuple[str, int, int]:
    """(document, its most writes in any 1 s, its writes in all) of the hottest one."""
    return (hottest_documents(logged, 1) or [("", 0, 0)])[0]


def hottest_documents(logged: list[dict[str, Any]], n: int = 5) -> list[tuple[str, int, int]]:
    """The `n` hottest documents, hottest first: (document, its most writes in any 1 s,
    its writes in all)."""
    by_doc = writes_by_document(logged)
    ranked = sorted(
        ((d, max_writes_per_second(t), len(t)) for d, t in by_doc.items()),
        key=lambda found: (found[1], found[2]),
        reverse=True,
    )
    return ranked[:n]
