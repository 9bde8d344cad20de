"""Retry delays: exponential, capped, with jitter drawn from a given random source.

The exponential-and-cap part is tenacity's `wait_exponential`; jitter is applied here
with the caller's `random.Random`, so the core stays deterministic under test.
"""

from __future__ import annotations

import random

from tenacity import RetryCallState, wait_exponential

from agentgraph.model import RetryPolicy


def _exponential(policy: RetryPolicy, attempt: int) -> float:
    wait = wait_exponential(
        multiplier=policy.initial_delay_s, max=policy.max_delay_s, exp_base=policy.multiplier
    )
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(wait(state))


def retry_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, *, hint_s: float | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Equal jitter: half the exponential delay is kept, the other half is random, so
    retries of many nodes spread out without ever collapsing to zero. A server's own
    hint (a 429's RetryInfo) is a floor: we never come back sooner than we were told.
    """
    base = min(_exponential(policy, attempt), policy.max_delay_s)
    delay = base / 2 + rng.uniform(0, base / 2) if policy.jitter else base
    if hint_s is not None:
        delay = max(delay, hint_s)
    return delay
