"""A 1,000-item map on the emulator stack (issue 12): each item one Gemini call.

One run through the api: `each` maps `input.things` (MAP_ITEMS of them) with one
`gemini-2.5-flash` call per item, answered by the stack's Gemini stub, then `join` reads
the list. Reported:

- `map_1000_llm_calls`: the calls the stub saw with this run's item prompts (each prompt
  carries the run's tag and the item's index): exactly MAP_ITEMS when every item ran once.
  Any prompt seen other than once is in `details.emulator.map.items_not_called_once`.
- `map_1000_s`: POST /runs until the run document says succeeded.
- `map_1000_writes_per_item`: every Firestore write the functions committed for the run
  (bench/ops_log.py, as `max_writes_per_doc_per_s` counts them), divided by MAP_ITEMS.
- `map_1000_max_writes_per_doc_per_s`: the most writes one document received in any
  sliding 1 s window during the run (the expansion must not write a burst to one document:
  the hottest document is named in the details).

`BENCH_MAP_ITEMS` changes the item count (the figures keep their names); run only this
part with `BENCH_EMULATOR_PARTS=map python -m bench.run --only emulator --output /tmp/x.json`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from agentgraph.core.status import RunStatus
from bench import ops_log
from bench.measure import Figure, Figures
from bench.scale_bench import GEMINI, HOT_DOC_GOAL, LOAD_TIMEOUT_S, _of_run, _post_run, _until_ended

MAP_ITEMS = int(os.environ.get("BENCH_MAP_ITEMS", "1000"))
MAP_CONCURRENCY = 100  # the default max_concurrency, written out


FIGURES = (
    Figure(
        "map_1000_llm_calls",
        f"a map over {MAP_ITEMS} items, one Gemini call each, through the api: item calls the "
        "stub saw",
        "calls",
        f"{MAP_ITEMS}",
        lambda results: ("-", results["map_1000_llm_calls"] == MAP_ITEMS),
    ),
    Figure("map_1000_s", "same map: POST /runs → run succeeded", "s", "reference"),
    Figure(
        "map_1000_writes_per_item",
        "same map: Firestore writes of every function for the run / items",
        "writes",
        "reference",
    ),
    Figure(
        "map_1000_max_writes_per_doc_per_s",
        "same map: most writes to one document in any 1 s",
        "writes/s",
        f"<= {HOT_DOC_GOAL}",
        lambda results: ("-", results["map_1000_max_writes_per_doc_per_s"] <= HOT_DOC_GOAL),
    ),
)
PART_KEYS = {"map": tuple(f.key for f in FIGURES)}


def map_graph() -> dict[str, Any]:
    return {
        "name": "bench-map",
        "input": {"type": "object"},
        "nodes": [
            {
                "id": "each",
                "map": "input.things",
                "max_concurrency": MAP_CONCURRENCY,
                "model": GEMINI,
                "prompt": "map {{ input.tag }} {{ index }}",
            },
            {
                "id": "join",
                "after": ["each"],
                "model": "echo",
                "prompt": "{{ nodes.each.output | length }} answers",
            },
        ],
    }


async def map_run(ctx: Any, stack: Any, ops_dir: Path) -> tuple[Figures, dict[str, Any]]:
    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    ctx.advance(f"a map over {MAP_ITEMS} items")
    store = FirestoreStore.from_env()
    tag = uuid.uuid4().hex[:8]
    began = time.time()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
        run_id = await _post_run(api, map_graph(), {"tag": tag, "things": list(range(MAP_ITEMS))})
    run = await _until_ended(store, run_id, LOAD_TIMEOUT_S)
    if run is None or run.status != RunStatus.SUCCEEDED:
        failed = [n for n in await store.list_nodes(run_id) if n.error is not None][:3]
        errors = "; ".join(f"{n.node_id}: {n.error.type}: {n.error.message}" for n in failed)  # type: ignore[union-attr]
        raise RuntimeError(f"map run {run_id} ended {run.status if run else 'missing'}: {errors}")
    ended = run.finished_at or time.time()
    calls = Counter(
        entry["prompt"]
        for entry in stack.stub.calls()["log"]
        if str(entry.get("prompt", "")).startswith(f"map {tag} ")
    )
    not_once = {p: n for p, n in calls.items() if n != 1}
    not_once.update(
        {f"map {tag} {i}": 0 for i in range(MAP_ITEMS) if f"map {tag} {i}" not in calls}
    )
    await asyncio.sleep(1.0)  # the last commits' log lines (written after their commits)
    logged = [e for e in ops_log.entries(ops_dir, began, ended + 1.0) if _of_run(e, run_id)]
    counts = ops_log.totals(logged)
    doc, per_s, writes = ops_log.hottest(logged)
    by_doc = ops_log.writes_by_document(logged)
    figures: Figures = {
        "map_1000_llm_calls": sum(calls.values()),
        "map_1000_s": round(ended - began, 2),
        "map_1000_writes_per_item": round(counts["writes"] / MAP_ITEMS, 2),
        "map_1000_max_writes_per_doc_per_s": per_s,
    }
    details = {
        "items": MAP_ITEMS,
        "max_concurrency": MAP_CONCURRENCY,
        "node_count": run.node_count,
        "items_not_called_once": dict(list(not_once.items())[:20]),
        "writes": counts["writes"],
        "reads_per_item": round(counts["reads"] / MAP_ITEMS, 2),
        "hottest_document": re.sub(r"runs/[^/]+", "runs/{run}", doc),
        # the map node's own document takes the expansion and every item's arrival; the
        # run document takes every status change's counts
        "map_node_document_max_per_s": _max_per_s(by_doc, f"{run_id}/nodes/each"),
        "map_node_document_writes": len(by_doc.get(_doc(by_doc, f"{run_id}/nodes/each"), [])),
        "run_document_max_per_s": _max_per_s(by_doc, f"runs/{run_id}"),
        "hottest_writes_total": writes,
        # the next ones too: (document, most writes in any 1 s, writes in all)
        "hottest_documents": [
            [re.sub(r"runs/[^/]+", "runs/{run}", d), per_s, total]
            for d, per_s, total in ops_log.hottest_documents(logged, 5)
        ],
        "method": "item prompts counted at the Gemini stub; every commit of every function "
        "process logged with its document paths (bench/ops_log.py); sliding 1 s window",
    }
    return figures, details


def _doc(by_doc: dict[str, list[float]], suffix: str) -> str:
    return next((d for d in by_doc if d.endswith(suffix)), "")


def _max_per_s(by_doc: dict[str, list[float]], suffix: str) -> int:
    return ops_log.max_writes_per_second(by_doc.get(_doc(by_doc, suffix), []))
