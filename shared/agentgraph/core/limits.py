"""Per-owner limits: how many runs a caller may start per minute, how many may run at
once, and how much model use (USD and tokens) their runs may spend per UTC day.

Anyone who can sign in can call the api, so what one owner may cost is bounded
(docs/security.md). The decisions are pure: given what an owner has done (counted by the
store from the runs themselves, never from a per-owner counter document that a busy
owner would write many times a second) and the limits, they say whether the next step is
allowed, and if not, which limit and when to come back.

The counts are read, then acted on: two requests at the same instant may both pass at the
last unit of a limit, so a limit can be exceeded by the number of requests in flight at
once. That is the price of not serialising every owner's requests on one document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from agentgraph.core import names
from agentgraph.core.errors import LimitExceeded

DAY_S = 86_400.0
MINUTE_S = 60.0


@dataclass(frozen=True)
class OwnerLimits:
    """The limits, from the environment the deployment sets (Terraform variables)."""

    runs_per_minute: int = 60
    running_runs: int = 20
    daily_usd: float = 20.0
    daily_tokens: int = 5_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OwnerLimits:
        values: dict[str, float | int] = {}
        for field, variable in _VARIABLES.items():
            raw = env.get(variable)
            if raw is None or not raw.strip():
                continue
            kind = int if isinstance(getattr(cls(), field), int) else float
            try:
                values[field] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"{variable}={raw!r}: expected a number") from exc
        return cls(**values)  # type: ignore[arg-type]


_VARIABLES = {
    "runs_per_minute": names.ENV_LIMIT_RUNS_PER_MINUTE,
    "running_runs": names.ENV_LIMIT_RUNNING_RUNS,
    "daily_usd": names.ENV_LIMIT_DAILY_USD,
    "daily_tokens": names.ENV_LIMIT_DAILY_TOKENS,
}
assert set(_VARIABLES) == {f.name for f in fields(OwnerLimits)}


@dataclass(frozen=True)
class OwnerActivity:
    """What an owner has done, as the store counts it."""

    started_last_minute: int
    oldest_start_in_minute: float | None  # created_at of the oldest run in that minute
    running: int
    usd_today: float
    tokens_today: int


def day_start(now: float) -> float:
    """The start of the UTC day `now` is in: budgets reset at midnight UTC."""
    return math.floor(now / DAY_S) * DAY_S


def check_start(limits: OwnerLimits, activity: OwnerActivity, now: float) -> None:
    """May this owner start one more run now? LimitExceeded says which limit, and when."""
    if activity.started_last_minute >= limits.runs_per_minute:
        oldest = activity.oldest_start_in_minute or now
        raise LimitExceeded(
            "runs_per_minute",
            f"{activity.started_last_minute} runs started in the last minute; "
            f"the limit is {limits.runs_per_minute}",
            retry_after_s=max(1.0, oldest + MINUTE_S - now),
        )
    if activity.running >= limits.running_runs:
        raise LimitExceeded(
            "running_runs",
            f"{activity.running} runs are running; the limit is {limits.running_runs} at once",
            retry_after_s=10.0,
        )
    check_spend(limits, activity.usd_today, activity.tokens_today, now)


def check_spend(limits: OwnerLimits, usd_today: float, tokens_today: int, now: float) -> None:
    """May this owner's runs spend more on models today?"""
    until_midnight = max(1.0, day_start(now) + DAY_S - now)
    if usd_today >= limits.daily_usd:
        raise LimitExceeded(
            "daily_usd",
            f"runs spent {usd_today:.4f} USD on models today; the daily budget is "
            f"{limits.daily_usd:g} USD (it resets at midnight UTC)",
            retry_after_s=until_midnight,
        )
    if tokens_today >= limits.daily_tokens:
        raise LimitExceeded(
            "daily_tokens",
            f"runs used {tokens_today:,} tokens today; the daily budget is "
            f"{limits.daily_tokens:,} (it resets at midnight UTC)",
            retry_after_s=until_midnight,
        )
