"""The per-model gate's rules (core/model_gate.py): the circuit breaker, the token bucket,
the leased concurrency slots, and their configuration. Pure: no clock but the `now` given."""

from __future__ import annotations

import pytest

from agentgraph.core.model_gate import (
    Admitted,
    BreakerSettings,
    GateConfig,
    GateState,
    ModelLimit,
    Refused,
    admit,
    config_from_env,
    release,
)

BREAKER = BreakerSettings(failures=3, window_s=60.0, cooldown_s=30.0)
NO_LIMIT = ModelLimit()
HOLD = 130.0


def fail_n(state: GateState, n: int, now: float, settings: BreakerSettings = BREAKER) -> GateState:
    """n calls admitted and ending in 503, one after the other."""
    for i in range(n):
        state, decision = admit(state, NO_LIMIT, now, f"call{i}", HOLD)
        assert isinstance(decision, Admitted)
        state = release(state, settings, now, decision.lease, "overload")
    return state


def test_a_healthy_model_admits_every_call_without_changing_its_state() -> None:
    state = GateState()
    changed, decision = admit(state, NO_LIMIT, 100.0, "a", HOLD)
    assert decision == Admitted("a", probe=False)
    assert changed == state
    assert release(changed, BREAKER, 101.0, "a", "success") == state


def test_breaker_opens_after_n_consecutive_overloads() -> None:
    state = fail_n(GateState(), 2, 100.0)
    assert state.breaker == "closed" and state.failures == 2
    state = fail_n(state, 1, 100.0)
    assert state.breaker == "open"
    assert state.open_until == 130.0


def test_a_success_ends_the_streak() -> None:
    state = fail_n(GateState(), 2, 100.0)
    state = release(state, BREAKER, 100.0, "x", "success")
    state = fail_n(state, 2, 100.0)
    assert state.breaker == "closed" and state.failures == 2


def test_errors_that_are_not_overload_neither_count_nor_end_the_streak() -> None:
    state = fail_n(GateState(), 2, 100.0)
    state = release(state, BREAKER, 100.0, "bad-request", "other")
    assert state.failures == 2
    assert fail_n(state, 1, 100.0).breaker == "open"


def test_a_streak_older_than_the_window_starts_again() -> None:
    state = fail_n(GateState(), 2, 100.0)
    state = fail_n(state, 1, 161.0)  # 61 s after the streak began
    assert state.breaker == "closed" and state.failures == 1
    state = fail_n(state, 2, 170.0)
    assert state.breaker == "open"


def test_an_open_breaker_refuses_every_call_until_the_cooldown_ends() -> None:
    state = fail_n(GateState(), 3, 100.0)
    for now in (100.0, 115.0, 129.9):
        changed, decision = admit(state, NO_LIMIT, now, "late", HOLD)
        assert decision == Refused("open", retry_at=130.0)
        assert decision.breaker
        assert changed == state


def test_after_the_cooldown_exactly_one_probe_goes_through() -> None:
    state = fail_n(GateState(), 3, 100.0)
    state, first = admit(state, NO_LIMIT, 130.0, "probe", HOLD)
    assert first == Admitted("probe", probe=True)
    assert state.breaker == "half_open"
    for caller in ("b", "c", "d"):
        _, decision = admit(state, NO_LIMIT, 131.0, caller, HOLD)
        assert isinstance(decision, Refused) and decision.because == "probing"


def test_the_probes_success_closes_the_breaker() -> None:
    state = fail_n(GateState(), 3, 100.0)
    state, probe = admit(state, NO_LIMIT, 130.0, "probe", HOLD)
    assert probe == Admitted("probe", probe=True)
    state = release(state, BREAKER, 131.0, "probe", "success")
    assert state == GateState()
    assert isinstance(admit(state, NO_LIMIT, 131.0, "next", HOLD)[1], Admitted)


def test_the_probes_overload_opens_the_breaker_for_another_cooldown() -> None:
    state = fail_n(GateState(), 3, 100.0)
    state, _ = admit(state, NO_LIMIT, 130.0, "probe", HOLD)
    state = release(state, BREAKER, 132.0, "probe", "overload")
    assert state.breaker == "open" and state.open_until == 162.0
    assert admit(state, NO_LIMIT, 150.0, "x", HOLD)[1] == Refused("open", 162.0)


def test_a_probe_that_ends_otherwise_lets_the_next_caller_probe() -> None:
    state = fail_n(GateState(), 3, 100.0)
    state, _ = admit(state, NO_LIMIT, 130.0, "probe", HOLD)
    state = release(state, BREAKER, 131.0, "probe", "other")
    assert state.breaker == "half_open"
    assert admit(state, NO_LIMIT, 131.0, "next", HOLD)[1] == Admitted("next", probe=True)


def test_a_probe_whose_caller_died_is_free_again_after_its_lease() -> None:
    state = fail_n(GateState(), 3, 100.0)
    state, _ = admit(state, NO_LIMIT, 130.0, "dead", HOLD)
    assert isinstance(admit(state, NO_LIMIT, 130.0 + HOLD - 1, "x", HOLD)[1], Refused)
    assert admit(state, NO_LIMIT, 130.0 + HOLD, "x", HOLD)[1] == Admitted("x", probe=True)


def test_late_reports_of_calls_admitted_before_opening_do_not_move_the_breaker() -> None:
    state = fail_n(GateState(), 3, 100.0)
    assert release(state, BREAKER, 101.0, "earlier", "success") == state
    assert release(state, BREAKER, 101.0, "earlier", "overload") == state
    state, _ = admit(state, NO_LIMIT, 130.0, "probe", HOLD)
    assert release(state, BREAKER, 131.0, "earlier", "success").breaker == "half_open"


def test_concurrency_is_capped_and_a_released_slot_is_free_again() -> None:
    limit = ModelLimit(concurrency=2)
    state = GateState()
    state, a = admit(state, limit, 0.0, "a", HOLD)
    state, b = admit(state, limit, 0.0, "b", HOLD)
    state, c = admit(state, limit, 0.0, "c", HOLD)
    assert isinstance(a, Admitted) and isinstance(b, Admitted)
    assert isinstance(c, Refused) and c.because == "busy" and not c.breaker
    state = release(state, BREAKER, 1.0, "a", "success")
    assert isinstance(admit(state, limit, 1.0, "c", HOLD)[1], Admitted)


def test_a_slot_of_a_dead_caller_expires_after_its_lease() -> None:
    limit = ModelLimit(concurrency=1)
    state, _ = admit(GateState(), limit, 0.0, "dead", 10.0)
    assert isinstance(admit(state, limit, 9.9, "x", 10.0)[1], Refused)
    state, decision = admit(state, limit, 10.0, "x", 10.0)
    assert isinstance(decision, Admitted)
    assert set(state.slots) == {"x"}


def test_the_rate_is_a_bucket_of_one_seconds_worth_of_calls() -> None:
    limit = ModelLimit(rate_per_s=2.0)
    state = GateState()
    state, first = admit(state, limit, 0.0, "1", HOLD)
    state, second = admit(state, limit, 0.0, "2", HOLD)
    state, third = admit(state, limit, 0.0, "3", HOLD)
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    assert third == Refused("rate", retry_at=0.5)
    assert isinstance(admit(state, limit, 0.5, "3", HOLD)[1], Admitted)


def test_a_slow_rate_admits_one_call_then_waits_for_the_next_token() -> None:
    limit = ModelLimit(rate_per_s=0.1)
    state, first = admit(GateState(), limit, 0.0, "1", HOLD)
    assert isinstance(first, Admitted)
    assert admit(state, limit, 5.0, "2", HOLD)[1] == Refused("rate", retry_at=10.0)


def test_a_refusal_takes_no_token_and_no_probe() -> None:
    limit = ModelLimit(concurrency=1, rate_per_s=1.0)
    state = fail_n(GateState(), 3, 100.0)
    state, holder = admit(state, limit, 130.0, "holder", HOLD)  # the probe holds the slot
    assert holder == Admitted("holder", probe=True)
    unchanged, refused = admit(state, limit, 130.0, "x", HOLD)
    assert isinstance(refused, Refused) and unchanged == state


def test_the_state_survives_its_stored_form() -> None:
    state = fail_n(GateState(), 3, 100.0)
    state, _ = admit(state, ModelLimit(concurrency=3, rate_per_s=5), 130.0, "p", HOLD)
    assert GateState.from_dict(state.to_dict()) == state
    assert GateState.from_dict(None) == GateState()


def test_limits_are_configured_per_family_with_a_default_for_the_rest() -> None:
    config = config_from_env(
        {
            "AGENTGRAPH_MODEL_CONCURRENCY": "gemini-2.5-pro=4,*=16",
            "AGENTGRAPH_MODEL_RATE": "gemini-2.5-pro=0.5",
            "AGENTGRAPH_BREAKER_FAILURES": "2",
            "AGENTGRAPH_BREAKER_COOLDOWN_S": "10",
        }
    )
    assert config.limit_for("gemini-2.5-pro~fail=2x503") == ModelLimit(4, 0.5)
    assert config.limit_for("gemini-2.5-flash") == ModelLimit(16, None)
    assert config.breaker == BreakerSettings(failures=2, window_s=60.0, cooldown_s=10.0)
    assert GateConfig().limit_for("anything") == ModelLimit()
    assert config_from_env({}) == GateConfig()


@pytest.mark.parametrize(
    "env",
    [
        {"AGENTGRAPH_BREAKER_FAILURES": "0"},
        {"AGENTGRAPH_BREAKER_FAILURES": "101"},
        {"AGENTGRAPH_BREAKER_WINDOW_S": "0.5"},
        {"AGENTGRAPH_BREAKER_COOLDOWN_S": "7200"},
        {"AGENTGRAPH_BREAKER_COOLDOWN_S": "soon"},
        {"AGENTGRAPH_MODEL_CONCURRENCY": "gemini-2.5-pro=0"},
        {"AGENTGRAPH_MODEL_CONCURRENCY": "gemini-2.5-pro=5000"},
        {"AGENTGRAPH_MODEL_CONCURRENCY": "gemini-2.5-pro"},
        {"AGENTGRAPH_MODEL_RATE": "gemini-2.5-pro=nan"},
        {"AGENTGRAPH_MODEL_RATE": "=3"},
    ],
)
def test_breaker_and_limit_settings_out_of_bounds_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        config_from_env(env)
