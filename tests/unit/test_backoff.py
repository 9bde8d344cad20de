"""Retry delays: exponential, capped, jittered within bounds, never below a server hint."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from agentgraph.core.backoff import retry_delay
from agentgraph.core.model import RetryPolicy


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(
        max_attempts=8, initial_delay_s=1, max_delay_s=10, multiplier=2, jitter=False
    )
    assert [retry_delay(policy, a, random.Random(0)) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_a_retry_hint_from_the_server_is_a_floor() -> None:
    policy = RetryPolicy(initial_delay_s=1, jitter=False)
    assert retry_delay(policy, 1, random.Random(0), hint_s=7.5) == 7.5


@given(
    attempt=st.integers(1, 20),
    initial=st.floats(0.01, 10),
    cap=st.floats(0.01, 100),
    multiplier=st.floats(1, 5),
    seed=st.integers(0, 2**32),
)
def test_jittered_delay_stays_between_half_and_all_of_the_capped_delay(
    attempt: int, initial: float, cap: float, multiplier: float, seed: int
) -> None:
    jittered = RetryPolicy(
        initial_delay_s=initial, max_delay_s=cap, multiplier=multiplier, jitter=True
    )
    plain = jittered.model_copy(update={"jitter": False})
    base = retry_delay(plain, attempt, random.Random(seed))
    delay = retry_delay(jittered, attempt, random.Random(seed))
    assert base <= cap + 1e-9
    assert base / 2 - 1e-9 <= delay <= base + 1e-9
