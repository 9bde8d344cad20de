"""What a tool may know about the call it serves: its run, node and attempt, and the
run's scratch space.

The engine sets `current` around every node attempt (tool nodes, and tools an agent
calls), so a tool that needs its run asks `tool_context()` instead of taking a run id
argument that a graph, or a model, could set to another run's. A tool that does not
ask pays nothing. Sync tools run on a worker thread with a copy of the context
(`asyncio.to_thread`), so they see it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


class ScratchSpace(Protocol):
    """Files of one run, by relative path (already normalised by the caller). Adapters:
    a local folder (tools/run_files.py), a Cloud Storage prefix (backends/gcp/scratch.py)."""

    def location(self, run_id: str) -> str:
        """Where the run's files are, for people (a folder, or gs://bucket/runs/ID/)."""
        ...

    async def read(self, run_id: str, path: str, limit: int) -> bytes:
        """At most limit + 1 bytes of the file (so a caller sees it is over); raises
        FileNotFoundError when there is no such file."""
        ...

    async def write(self, run_id: str, path: str, data: bytes) -> None:
        """Create or replace the file, whole (a reader never sees half of it)."""
        ...

    async def sizes(self, run_id: str) -> dict[str, int]:
        """Every file of the run: path → bytes."""
        ...


@dataclass(frozen=True)
class ToolContext:
    run_id: str
    node_id: str
    attempt: int
    scratch: ScratchSpace | None = None  # None: this deployment has no scratch space


current: ContextVar[ToolContext | None] = ContextVar("agentgraph_tool_context", default=None)


class NoRunContext(RuntimeError):
    """A tool that needs its run was called outside a node attempt."""


def tool_context() -> ToolContext:
    """The call's context; raises NoRunContext outside a node attempt (a direct call)."""
    context = current.get()
    if context is None:
        raise NoRunContext("this tool works only inside a run: the engine tells it which run")
    return context


@contextlib.contextmanager
def bound(context: ToolContext) -> Iterator[None]:
    """`current` is context for the block (the engine wraps each node attempt)."""
    token = current.set(context)
    try:
        yield
    finally:
        current.reset(token)
