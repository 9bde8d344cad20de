"""What an LLM call cost, from a dated price table rather than from the provider.

The Gemini API reports tokens, never money, so cost is computed here from
`agentgraph/data/prices.json` (USD per 1M tokens, with its `as_of` date and source).
Prices change: a user puts a JSON file of the same shape at `AGENTGRAPH_PRICES` and its
models replace the built-in entries of the same name (others are kept).

Model names match by prefix on a `-`/`@` boundary, longest first, after dropping a
`models/` or `publishers/.../models/` path and a `~...` stub suffix: so
`gemini-2.5-flash-lite-001` is priced as gemini-2.5-flash-lite, not gemini-2.5-flash.
An unknown model costs 0.0 (with one warning), because a missing price must never fail
a node that already ran and was paid for.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from agentgraph.core.records import Usage

ENV_PRICES = "AGENTGRAPH_PRICES"
_PER_TOKENS = 1_000_000
_log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens. `long_*` apply when the prompt exceeds `long_above_input_tokens`."""

    input: float
    output: float
    cached: float
    long_above_input_tokens: int | None = None
    long_input: float | None = None
    long_output: float | None = None
    long_cached: float | None = None


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    models: dict[str, ModelPrice]

    def lookup(self, model: str) -> tuple[str, ModelPrice] | None:
        """The table entry priced for `model` (see module docstring), or None."""
        name = canonical_model(model)
        for key in sorted(self.models, key=len, reverse=True):
            rest = name[len(key) :]
            if name.startswith(key) and (not rest or rest[0] in "-@"):
                return key, self.models[key]
        return None


def canonical_model(model: str) -> str:
    """`publishers/google/models/gemini-2.5-flash~fail=1x429` -> `gemini-2.5-flash`."""
    return model.rsplit("/", 1)[-1].split("~", 1)[0].strip().lower()


def cost_usd(model: str, usage: Usage) -> float:
    """Money for one or more calls of `model`. `usage.input_tokens` includes the cached
    ones (as Gemini's promptTokenCount does); thinking tokens are billed as output."""
    found = load_prices().lookup(model)
    if found is None:
        if model not in _warned:
            _warned.add(model)
            _log.warning("no price for model %r; counting its cost as 0.0", model)
        return 0.0
    price = found[1]
    rates = (price.input, price.output, price.cached)
    threshold = price.long_above_input_tokens
    if threshold is not None and usage.input_tokens > threshold:
        rates = (
            price.long_input if price.long_input is not None else price.input,
            price.long_output if price.long_output is not None else price.output,
            price.long_cached if price.long_cached is not None else price.cached,
        )
    cached = min(usage.cached_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    billed_output = usage.output_tokens + usage.thinking_tokens
    total = fresh * rates[0] + billed_output * rates[1] + cached * rates[2]
    return round(total / _PER_TOKENS, 9)


def load_prices() -> PriceTable:
    """The built-in table with the `AGENTGRAPH_PRICES` file merged over it."""
    override = os.environ.get(ENV_PRICES) or None
    stamp = None
    if override is not None:
        try:
            stamp = Path(override).stat().st_mtime_ns
        except OSError as exc:
            raise ValueError(
                f"{ENV_PRICES} names {override!r}, which cannot be read: {exc}. Expected a "
                "JSON file shaped like agentgraph/data/prices.json, or unset the variable."
            ) from exc
    return _load(override, stamp)


@lru_cache(maxsize=8)
def _load(override: str | None, _stamp: int | None) -> PriceTable:
    built_in = json.loads(
        resources.files("agentgraph").joinpath("data/prices.json").read_text("utf-8")
    )
    table = _parse(built_in, "agentgraph/data/prices.json")
    if override is None:
        return table
    try:
        raw = json.loads(Path(override).read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_PRICES} file {override!r} is not valid JSON: {exc}") from exc
    extra = _parse(raw, f"{ENV_PRICES} file {override!r}")
    return PriceTable(
        as_of=extra.as_of or table.as_of,
        source=extra.source or table.source,
        models={**table.models, **extra.models},
    )


def _parse(raw: Any, origin: str) -> PriceTable:
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"{origin}: expected an object with a 'models' mapping of model name to "
            f"{{input, output, cached}} USD per 1M tokens; found {found}"
        )
    models = {
        str(name).lower(): _model_price(entry, f"{origin}: model {name!r}")
        for name, entry in raw["models"].items()
    }
    return PriceTable(str(raw.get("as_of", "")), str(raw.get("source", "")), models)


def _model_price(entry: Any, where: str) -> ModelPrice:
    def number(data: dict[str, Any], key: str, default: float | None = None) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(
                f"{where}: '{key}' must be a non-negative number (USD per 1M tokens); "
                f"found {value!r}"
            )
        return float(value)

    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected {{input, output, cached}}, found {entry!r}")
    input_price = number(entry, "input")
    cached = number(entry, "cached", input_price)
    long = entry.get("long_context")
    if long is None:
        return ModelPrice(input_price, number(entry, "output"), cached)
    if not isinstance(long, dict) or "above_input_tokens" not in long:
        raise ValueError(
            f"{where}: 'long_context' must be {{above_input_tokens, input, output, cached}}; "
            f"found {long!r}"
        )
    return ModelPrice(
        input_price,
        number(entry, "output"),
        cached,
        long_above_input_tokens=int(number(long, "above_input_tokens")),
        long_input=number(long, "input", input_price),
        long_output=number(long, "output", entry.get("output")),
        long_cached=number(long, "cached", cached),
    )
