"""Tools for the CLI tests, loaded with `--tools tests/system/cli_tools.py`."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from agentgraph.tools import tool


@tool
async def nap(
    seconds: float, marker: str | None = None, value: object = None, started: str | None = None
) -> object:
    """Sleep, then append to a marker file so tests can count real executions; `started`
    is appended to first, so a test knows the call is under way."""
    if started:
        with Path(started).open("a") as handle:
            handle.write("x")
    await asyncio.sleep(seconds)  # the sleep is the behaviour: a call still running at Ctrl-C
    if marker:
        with Path(marker).open("a") as handle:
            handle.write("x")
    return value


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


@tool
def shout(text: str) -> str:
    """The text in capitals."""
    if not text:
        raise ValueError("nothing to shout")
    return text.upper()


@tool
def fragile(broken: str, marker: str, value: object = None) -> object:
    """Fails while the file `broken` exists (the test 'fixes' it by deleting the file);
    appends to `marker` on every call so tests can count executions."""
    with Path(marker).open("a") as handle:
        handle.write("x")
    if Path(broken).exists():
        raise RuntimeError(f"broken while {broken} exists")
    return value


@tool
def collector_state() -> dict[str, object]:
    """Whether the garbage collector is on, and how many objects are frozen, as a node
    of an `agentgraph run` sees it."""
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
