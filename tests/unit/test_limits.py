"""Per-owner limits as pure decisions over what the owner has done."""

from __future__ import annotations

import pytest

from agentgraph.core import names
from agentgraph.core.errors import LimitExceeded, kind_of
from agentgraph.core.limits import DAY_S, OwnerActivity, OwnerLimits, check_spend, check_start

LIMITS = OwnerLimits(runs_per_minute=60, running_runs=5, daily_usd=1.0, daily_tokens=1000)
NOW = 10 * DAY_S + 3600.0  # 01:00 UTC


def activity(**changes: float) -> OwnerActivity:
    base = {
        "started_last_minute": 0,
        "oldest_start_in_minute": None,
        "running": 0,
        "usd_today": 0.0,
        "tokens_today": 0,
    }
    return OwnerActivity(**{**base, **changes})  # type: ignore[arg-type]


def test_the_61st_run_in_a_minute_waits_until_the_oldest_leaves_the_window() -> None:
    check_start(LIMITS, activity(started_last_minute=59, oldest_start_in_minute=NOW - 10), NOW)
    with pytest.raises(LimitExceeded) as caught:
        check_start(LIMITS, activity(started_last_minute=60, oldest_start_in_minute=NOW - 10), NOW)
    assert caught.value.limit == "runs_per_minute"
    assert caught.value.retry_after_s == pytest.approx(50.0)
    assert kind_of(caught.value).http_status == 429
    assert kind_of(caught.value).retry_after_s == 50


def test_too_many_running_runs_is_a_limit() -> None:
    with pytest.raises(LimitExceeded, match="running_runs"):
        check_start(LIMITS, activity(running=5), NOW)


def test_the_daily_budget_resets_at_midnight_utc() -> None:
    with pytest.raises(LimitExceeded) as caught:
        check_spend(LIMITS, 1.0, 0, NOW)
    assert caught.value.limit == "daily_usd"
    assert caught.value.retry_after_s == pytest.approx(DAY_S - 3600.0)
    with pytest.raises(LimitExceeded, match="daily_tokens"):
        check_spend(LIMITS, 0.5, 1000, NOW)
    check_spend(LIMITS, 0.99, 999, NOW)


def test_limits_come_from_the_environment_and_a_typo_says_which_variable() -> None:
    limits = OwnerLimits.from_env(
        {names.ENV_LIMIT_RUNS_PER_MINUTE: "5", names.ENV_LIMIT_DAILY_USD: "2.5"}
    )
    assert (limits.runs_per_minute, limits.daily_usd) == (5, 2.5)
    assert limits.running_runs == OwnerLimits().running_runs
    with pytest.raises(ValueError, match=names.ENV_LIMIT_RUNNING_RUNS):
        OwnerLimits.from_env({names.ENV_LIMIT_RUNNING_RUNS: "many"})
