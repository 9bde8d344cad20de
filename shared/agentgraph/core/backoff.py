"""Retry delays: exponential, capped, with jitter drawn from a given random source.

The formula is the one tenacity's `wait_exponential` and Cloud Tasks' own retry config
use (initial x multiplier^(attempt-1), capped); it is written out here because the core
imports no retry library, and jitter takes the caller's `random.Random`, so the core stays
deterministic under test.
"""

from __future__ import annotations

import random

from agentgraph.core.model import RetryPolicy


def _exponential(policy: RetryPolicy, attempt: int) -> float:
    try:
        grown = policy.initial_delay_s * policy.multiplier ** (attempt - 1)
    except OverflowError:  # a huge attempt number: the cap applies anyway
        return policy.max_delay_s
    return min(grown, policy.max_delay_s)


def retry_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, *, hint_s: float | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Equal jitter: half the exponential delay is kept, the other half is random, so
    retries of many nodes spread out without ever collapsing to zero. A server's own
    hint (a 429's RetryInfo) is a floor: we never come back sooner than we were told.
    """
    base = _exponential(policy, attempt)
    delay = base / 2 + rng.uniform(0, base / 2) if policy.jitter else base
    if hint_s is not None:
        delay = max(delay, hint_s)
    return delay
