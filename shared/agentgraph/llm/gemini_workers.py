"""How many worker processes make Gemini calls (`sdk_pool.py`), and what they inherit.

Measured on the benchmark's 10x5 graph of Gemini agents (bench/parallel.py) on 2 cores:
the SDK costs about 2.1 ms of CPU per call and the engine about 1.1 ms per node; on one
interpreter lock the two add up on the critical path of every layer, in workers they
overlap. Each worker is a fork of this process, so it starts without importing anything;
what it still builds on its first call (pydantic validators the SDK creates lazily) is
built once here before the first fork instead (`warm_sdk`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping

from google.genai import types

from agentgraph.core.names import ENV_GEMINI_PROCESSES

# What the SDK's HTTP client (httpx over anyio) imports on its first request, not before.
_IMPORTED_ON_FIRST_REQUEST = ("anyio._backends._asyncio", "anyio.streams.stapled")


def processes(env: Mapping[str, str], default: int = 0) -> int:
    """AGENTGRAPH_GEMINI_PROCESSES (0: calls stay in this process), else `default`."""
    raw = env.get(ENV_GEMINI_PROCESSES, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{ENV_GEMINI_PROCESSES}: expected a number of processes, found {raw!r}")
    return int(raw)


def warm_sdk() -> None:
    """Build one request's parameters and parse one canned answer: pydantic builds the
    validators of both on first use (about 50 ms of CPU); built before forking, every
    worker inherits them instead of building them on its first call. The parameters'
    class is private to the SDK, hence the lookup: without it only the answer's half is
    warmed, which costs the workers time, not correctness. Likewise the HTTP stack's
    asyncio backend (anyio's), which httpx imports on its first request: about 12 ms
    of each worker's first call otherwise."""
    for module in _IMPORTED_ON_FIRST_REQUEST:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    parameters = getattr(types, "_GenerateContentParameters", None)
    if parameters is not None:
        with contextlib.suppress(Exception):
            parameters(model="gemini", contents=[{"role": "user", "parts": [{"text": "ok"}]}])
    types.GenerateContentResponse._from_response(
        response={
            "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
            "modelVersion": "gemini",
        },
        kwargs={},
    )
