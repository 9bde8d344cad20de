"""Tools for the CLI tests, loaded with `--tools tests/system/cli_tools.py`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentgraph.tools import tool


@tool
async def nap(seconds: float, marker: str | None = None, value: object = None) -> object:
    """Sleep, then append to a marker file so tests can count real executions."""
    await asyncio.sleep(seconds)
    if marker:
        with Path(marker).open("a") as handle:
            handle.write("x")
    return value
