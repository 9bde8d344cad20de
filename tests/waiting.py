"""Waiting, with a deadline, for what a test cannot be told about: a file another process
writes, a request an emulator makes. Anything the test process can be notified of
(a store write, a tool call) uses an event instead (see tests/contract/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from test_utils.retry import BackoffFailed, RetryResult

T = TypeVar("T")
_log = logging.getLogger(__name__)


class _QuietLog:
    """RetryResult logs each retry as a warning; these waits are expected, so debug."""

    warning = staticmethod(_log.debug)


def eventually(
    probe: Callable[[], T],
    holds: Callable[[T], bool] = bool,
    *,
    timeout: float = 30,
    interval: float = 0.05,
) -> T:
    """`probe()` once `holds` of it, re-probing every `interval` until `timeout`; fails
    the test (AssertionError) at the deadline."""
    tries = max(1, round(timeout / interval))
    retrying = RetryResult(holds, max_tries=tries, delay=interval, backoff=1, logger=_QuietLog())
    try:
        return retrying(probe)()
    except BackoffFailed:
        raise AssertionError(
            f"{getattr(probe, '__name__', probe)}: not within {timeout} s"
        ) from None
