"""Trying a conditional Firestore write again after it lost to a concurrent one.

Every compare-and-set of the Firestore store (a node transition on `last_update_time`, a
run status change, creating node documents, cancelling a batch of nodes) goes through
`until_settled`: one policy for how often and how far apart, and one error when it gives
up, `core.errors.Contention` (the api answers 503 with Retry-After, a message handler
lets the message be redelivered). Nothing is written by an attempt that lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.api_core.exceptions import FailedPrecondition
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
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
