"""Per-model limits and the circuit breaker, as pure decisions over one small state.

Quotas are per model and per deployment (a Gemini project's requests per minute), so the
caps must hold across every instance that calls the model, not per process. Each model has
one `GateState`: the breaker, a token bucket for the call rate, and the leased slots of the
calls in flight. An adapter (`backends/local/model_gate.py` in memory,
`backends/gcp/firestore_model_gate.py` one Firestore document per model, changed by
compare-and-set) reads it, asks `admit` or `release` here, and writes the answer back if
it changed. The same rules therefore hold in one process and across fifty.

The breaker (closed → open → half-open → closed):
- closed: calls go through. A 429 or 5xx answer adds one to a streak of consecutive
  failures; a success ends the streak; any other failure (a 400, a timeout) changes
  nothing. A streak older than `window_s` starts again at one. At `failures` in a row
  the breaker opens for `cooldown_s`.
- open: every call is refused until the cool-down ends; the engine then sends the node to
  its `fallback_model`, or delays it (never fails it for the breaker).
- half-open (the cool-down is over): exactly one call, the probe, is admitted; the others
  are refused while it is out. The probe's success closes the breaker; its 429/5xx opens
  it again for another cool-down; any other ending frees the probe for the next caller.
  A probe whose caller died is free again when its lease (`hold_s`) runs out.

Concurrency is a set of leased slots, each expiring `hold_s` after it was taken (the
engine passes the node's timeout and a margin, which the call cannot outlive), so a slot
of a dead instance comes back by itself. The rate is a token bucket holding at most one
second's worth of calls (at least one).

Reports of calls admitted before the breaker opened (a late success, a late failure) do
not move an open or half-open breaker: only the probe decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agentgraph.core import names

BreakerState = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "overload", "other"]
RefusedBecause = Literal["open", "probing", "busy", "rate"]

# Bounds of the settings (validated when they are read).
MAX_FAILURES = 100
MAX_WINDOW_S = 3600.0
MAX_COOLDOWN_S = 3600.0
MAX_CONCURRENCY = 1000  # the slots live in one document; this keeps it far below 1 MiB
MAX_RATE_PER_S = 10_000.0
# How soon a caller refused while the probe is out (or all slots are taken) asks again.
RECHECK_S = 2.0


def model_family(model: str) -> str:
    """The model's name without a test stub's fault suffix (`gemini-2.5-flash~fail=2x429`):
    limits are configured per family."""
    return model.split("~", 1)[0]


def is_overload(http_status: int | None) -> bool:
    """The answers that count against a model's health: too many requests, server errors."""
    return http_status is not None and (http_status == 429 or 500 <= http_status <= 599)


@dataclass(frozen=True)
class BreakerSettings:
    """`failures` consecutive 429/5xx within `window_s` open the breaker for `cooldown_s`."""

    failures: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        _bounded("breaker failures", self.failures, 1, MAX_FAILURES)
        _bounded("breaker window_s", self.window_s, 1.0, MAX_WINDOW_S)
        _bounded("breaker cooldown_s", self.cooldown_s, 0.1, MAX_COOLDOWN_S)


@dataclass(frozen=True)
class ModelLimit:
    """Calls in flight at once and calls started per second, across the deployment;
    None is unlimited."""

    concurrency: int | None = None
    rate_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None:
            _bounded("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        if self.rate_per_s is not None:
            _bounded("rate", self.rate_per_s, 0.01, MAX_RATE_PER_S)

    @property
    def burst(self) -> float:
        """The bucket's size: one second's worth of calls, at least one call."""
        return max(1.0, self.rate_per_s or 1.0)


@dataclass(frozen=True)
class GateConfig:
    """Limits per model family ("*" for every other) and one breaker setting for all."""

    limits: Mapping[str, ModelLimit] = field(default_factory=dict)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)

    def limit_for(self, model: str) -> ModelLimit:
        family = model_family(model)
        return self.limits.get(family) or self.limits.get("*") or ModelLimit()


@dataclass(frozen=True)
class GateState:
    """One model's shared state; `to_dict`/`from_dict` are its stored form."""

    breaker: BreakerState = "closed"
    failures: int = 0  # the current streak of consecutive 429/5xx (closed only)
    streak_since: float | None = None  # when the streak's first failure was reported
    open_until: float | None = None
    probe: str | None = None  # the lease of the half-open breaker's probe
    probe_until: float | None = None
    tokens: float | None = None  # None: a full bucket
    tokens_at: float | None = None
    slots: Mapping[str, float] = field(default_factory=dict)  # lease -> expires at

    def to_dict(self) -> dict[str, Any]:
        return {
            "breaker": self.breaker,
            "failures": self.failures,
            "streak_since": self.streak_since,
            "open_until": self.open_until,
            "probe": self.probe,
            "probe_until": self.probe_until,
            "tokens": self.tokens,
            "tokens_at": self.tokens_at,
            "slots": dict(self.slots),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GateState:
        if not data:
            return cls()
        breaker = data.get("breaker")
        return cls(
            breaker=breaker if breaker in ("open", "half_open") else "closed",
            failures=int(data.get("failures") or 0),
            streak_since=data.get("streak_since"),
            open_until=data.get("open_until"),
            probe=data.get("probe"),
            probe_until=data.get("probe_until"),
            tokens=data.get("tokens"),
            tokens_at=data.get("tokens_at"),
            slots={str(k): float(v) for k, v in (data.get("slots") or {}).items()},
        )

    @property
    def quiet(self) -> bool:
        """Closed with no streak and nothing held: a success changes nothing."""
        return self.breaker == "closed" and self.failures == 0 and not self.slots


@dataclass(frozen=True)
class Admitted:
    lease: str
    probe: bool = False  # the one call a half-open breaker lets through


@dataclass(frozen=True)
class Refused:
    because: RefusedBecause
    retry_at: float  # the earliest time asking again can succeed

    @property
    def breaker(self) -> bool:
        """Refused for the model's health (use the fallback model, or delay)."""
        return self.because in ("open", "probing")


def admit(
    state: GateState,
    limit: ModelLimit,
    now: float,
    lease: str,
    hold_s: float,
) -> tuple[GateState, Admitted | Refused]:
    """May one more call start now? Admitting takes a token and a slot (when limited) and,
    after a cool-down, makes this call the probe. A refusal changes nothing but forgetting
    expired slots, which needs no write."""
    slots = {k: v for k, v in state.slots.items() if v > now}
    state = replace(state, slots=slots)
    probe = False
    if state.breaker == "open":
        if state.open_until is not None and now < state.open_until:
            return state, Refused("open", state.open_until)
        probe = True
    elif state.breaker == "half_open":
        if state.probe is not None and state.probe_until is not None and state.probe_until > now:
            return state, Refused("probing", now + RECHECK_S)
        probe = True
    if limit.concurrency is not None and len(slots) >= limit.concurrency:
        return state, Refused("busy", min(min(slots.values()), now + RECHECK_S))
    tokens, tokens_at = state.tokens, state.tokens_at
    if limit.rate_per_s is not None:
        rate = limit.rate_per_s
        have = limit.burst if tokens is None else tokens
        since = now if tokens_at is None else tokens_at
        have = min(limit.burst, have + max(0.0, now - since) * rate)
        if have < 1.0:
            return state, Refused("rate", now + (1.0 - have) / rate)
        tokens, tokens_at = have - 1.0, now
    if limit.concurrency is not None:
        slots[lease] = now + hold_s
    admitted = replace(state, tokens=tokens, tokens_at=tokens_at, slots=slots)
    if probe:
        admitted = replace(admitted, breaker="half_open", probe=lease, probe_until=now + hold_s)
    return admitted, Admitted(lease, probe)


def release(
    state: GateState,
    breaker: BreakerSettings,
    now: float,
    lease: str,
    outcome: Outcome,
) -> GateState:
    """A call admitted under `lease` ended with `outcome`: free its slot and move the
    breaker (see the module docstring)."""
    slots = {k: v for k, v in state.slots.items() if k != lease and v > now}
    state = replace(state, slots=slots)
    if state.probe == lease:
        if outcome == "success":
            return _closed(state)
        if outcome == "overload":
            return _opened(state, breaker, now)
        return replace(state, probe=None, probe_until=None)
    if state.breaker != "closed" or outcome == "other":
        return state
    if outcome == "success":
        return replace(state, failures=0, streak_since=None)
    if state.streak_since is None or now - state.streak_since > breaker.window_s:
        state = replace(state, failures=1, streak_since=now)
    else:
        state = replace(state, failures=state.failures + 1)
    return _opened(state, breaker, now) if state.failures >= breaker.failures else state


def _opened(state: GateState, breaker: BreakerSettings, now: float) -> GateState:
    return replace(
        state,
        breaker="open",
        failures=0,
        streak_since=None,
        open_until=now + breaker.cooldown_s,
        probe=None,
        probe_until=None,
    )


def _closed(state: GateState) -> GateState:
    return replace(
        state,
        breaker="closed",
        failures=0,
        streak_since=None,
        open_until=None,
        probe=None,
        probe_until=None,
    )


# ---- configuration ------------------------------------------------------------------------


def parse_limits(spec: str, what: str, kind: type[int] | type[float]) -> dict[str, Any]:
    """`gemini-2.5-pro=4,*=16` → {"gemini-2.5-pro": 4, "*": 16} ("*": every other model)."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        model, sep, number = item.partition("=")
        try:
            value = kind(number.strip()) if sep and model.strip() else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{what} {item!r}: expected MODEL=N with N > 0, e.g. gemini-2.5-pro=4")
        values[model.strip()] = value
    return values


def config_from_env(env: Mapping[str, str]) -> GateConfig:
    """AGENTGRAPH_MODEL_CONCURRENCY (`gemini-2.5-pro=4,*=16`: calls in flight per model
    across the deployment), AGENTGRAPH_MODEL_RATE (`gemini-2.5-pro=2`: calls started per
    second), AGENTGRAPH_BREAKER_FAILURES / _WINDOW_S / _COOLDOWN_S (defaults 5, 60, 30).
    Unset: no deployment-wide cap, the default breaker. ValueError names what is wrong."""
    concurrency = parse_limits(
        env.get(names.ENV_MODEL_CONCURRENCY, ""), names.ENV_MODEL_CONCURRENCY, int
    )
    rate = parse_limits(env.get(names.ENV_MODEL_RATE, ""), names.ENV_MODEL_RATE, float)
    limits = {
        model: ModelLimit(concurrency.get(model), rate.get(model))
        for model in {*concurrency, *rate}
    }
    settings: dict[str, Any] = {}
    for name, variable, kind in (
        ("failures", names.ENV_BREAKER_FAILURES, int),
        ("window_s", names.ENV_BREAKER_WINDOW_S, float),
        ("cooldown_s", names.ENV_BREAKER_COOLDOWN_S, float),
    ):
        raw = env.get(variable, "").strip()
        if raw:
            try:
                settings[name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"{variable}={raw!r}: expected a number") from exc
    return GateConfig(limits, BreakerSettings(**settings))


def _bounded(what: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and low <= value <= high):
        raise ValueError(f"{what} must be between {low:g} and {high:g}, got {value!r}")
