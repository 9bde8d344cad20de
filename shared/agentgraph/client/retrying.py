"""When the client tries a request again, and how long it waits first.

Only answers that say "not now" are retried: 429 (a per-owner limit) and 503 (contention,
a backing service unavailable), and a connection that failed or dropped before the answer
arrived. Every request the client sends is safe to repeat: reads, cancel (cancelling twice
changes nothing), POST /graphs (the same definition is the same version) and POST /runs,
which carries an `Idempotency-Key` that is the same on every try of one call.

The wait is the server's `Retry-After` when it gives one, else a jittered exponential
backoff. A `Retry-After` longer than the longest wait the caller allows stops the retries
at once: waiting less than the server asked would only earn another 429.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.wait import wait_exponential_jitter

RETRY_STATUSES = frozenset({429, 503})


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A `Retry-After` header as seconds from `now`: delta-seconds or an HTTP date (RFC
    9110 §10.2.3). None when absent or unreadable; never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _asked_wait(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return getattr(exc, "retry_after_s", None)


def wait_strategy(initial_s: float, max_s: float) -> Callable[[RetryCallState], float]:
    """The server's Retry-After when the failure carries one, else exponential backoff
    with jitter from `initial_s`, never more than `max_s`."""
    backoff = wait_exponential_jitter(initial=initial_s, max=max_s, jitter=initial_s)

    def wait(state: RetryCallState) -> float:
        asked = _asked_wait(state)
        if asked is not None:
            return asked
        return min(max_s, backoff(state))

    return wait


def stop_strategy(attempts: int, max_s: float) -> Callable[[RetryCallState], bool]:
    """Stop after `attempts` tries in all, or as soon as the server asks for a longer wait
    than `max_s`."""

    def stop(state: RetryCallState) -> bool:
        asked = _asked_wait(state)
        return state.attempt_number >= attempts or (asked is not None and asked > max_s)

    return stop
