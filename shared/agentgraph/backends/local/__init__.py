"""The embedded local backend: SQLite state, asyncio workers, in-process timers."""

from agentgraph.backends.local.runtime import LocalRuntime
from agentgraph.backends.local.sqlite_store import SqliteStore

__all__ = ["LocalRuntime", "SqliteStore"]
