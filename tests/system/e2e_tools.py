"""Tools for the end-to-end tests, loaded by the function processes (AGENTGRAPH_TOOLS).

Every call appends the node's key to a marker file, so a test counts real executions
across processes without trusting the store it is checking.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from agentgraph.tools import tool


def _mark(marker: str | None, key: str | None) -> None:
    if marker and key:
        with Path(marker).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(key + "\n")


@tool
def e2e_value(value: object = None, marker: str | None = None, key: str | None = None) -> object:
    """Return `value`, counting the call."""
    _mark(marker, key)
    return value


@tool
async def e2e_sleep(
    seconds: float, value: object = None, marker: str | None = None, key: str | None = None
) -> object:
    """Sleep, then return `value`, counting the call (when it started)."""
    _mark(marker, key)
    await asyncio.sleep(seconds)  # the sleep is the behaviour: a tool that takes a while
    return value


@tool
def e2e_pool(marker: str | None = None, key: str | None = None) -> str | None:
    """The pool of the exec function that ran this node (AGENTGRAPH_POOL)."""
    _mark(marker, key)
    return os.environ.get("AGENTGRAPH_POOL")


@tool
def e2e_fail(message: str = "failed on purpose") -> None:
    """Fail at once, without a retry (a ValueError is not retryable)."""
    raise ValueError(message)
