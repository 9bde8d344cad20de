"""Trying a conditional Firestore write again after it lost to a concurrent one.

Every compare-and-set of the Firestore store (a node transition on `last_update_time`, a
run status change, creating node documents, cancelling a batch of nodes) goes through
`until_settled`: one policy for how often and how far apart, and one error when it gives
up, `core.errors.Contention` (the api answers 503 with Retry-After, a message handler
lets the message be redelivered). Nothing is written by an attempt that lost.
`until_found` is its counterpart for reads: waiting a moment for a document another writer
is still writing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.api_core.exceptions import FailedPrecondition
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)

from agentgraph.core.errors import Contention

T = TypeVar("T")

MAX_TRIES = 50  # attempts before giving up on a contended document


class TryAgain(Exception):
    """Raised by an attempt whose premise changed (a remembered state was stale, some of
    its documents already existed): read again and decide again."""


async def until_settled(
    attempt: Callable[[int], Awaitable[T]], what: str, tries: int = MAX_TRIES
) -> T:
    """`attempt(n)` (n = 0, 1, …) until it returns; it is repeated when it raises
    FailedPrecondition (its precondition no longer held) or TryAgain, after a short random
    pause that grows with the tries, so writers that collided do not collide again."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(tries),
        wait=wait_random_exponential(multiplier=0.001, max=0.05),
        retry=retry_if_exception_type((FailedPrecondition, TryAgain)),
    )
    try:
        async for trying in retrying:
            with trying:
                return await attempt(trying.retry_state.attempt_number - 1)
    except RetryError as exc:
        raise Contention(f"{what}: kept losing to concurrent writes ({tries} tries)") from exc
    raise AssertionError("unreachable: tenacity either returns, raises or retries")


async def until_found(read: Callable[[], Awaitable[T | None]], tries: int = 6) -> T | None:
    """`read()` until it finds something, waiting 50 ms, 100 ms, … 800 ms between tries
    (about 1.5 s in all); None when it never does."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(tries),
        wait=wait_exponential(multiplier=0.05, max=0.8),
        retry=retry_if_result(lambda found: found is None),
        retry_error_callback=lambda _state: None,
    )
    found: T | None = None
    async for trying in retrying:
        with trying:
            found = await read()
        outcome = trying.retry_state.outcome
        if outcome is not None and not outcome.failed:
            trying.retry_state.set_result(found)
    return found
