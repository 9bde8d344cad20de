"""What every part of `Engine` may use of the others.

`Engine` (`engine.py`) is assembled from parts, one module each (`engine_fanin.py`,
`engine_recovery.py`, `engine_work.py`...). Each part is a class `Engine` inherits from;
this is their common base: the ports and memories `Engine.__init__` sets, and the methods
of `Engine` that most parts call, declared once for the type checker. A part declares
here only what several parts share; what one part alone needs of another it declares
itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agentgraph.core.graph import Node
from agentgraph.core.llm_port import LlmProvider
from agentgraph.core.lru import Lru
from agentgraph.core.ports import Dispatcher, RetryScheduler, Store, ToolRegistry
from agentgraph.core.records import NodeRecord

if TYPE_CHECKING:
    from agentgraph.engine import RunContext


class EngineParts:
    """The base of every part of `Engine`; it holds nothing at run time."""

    store: Store
    dispatcher: Dispatcher
    retries: RetryScheduler
    llm: LlmProvider
    tools: ToolRegistry
    clock: Callable[[], float]
    _ended: Lru[str, None]  # runs this process ended: it starts nothing of them any more

    if TYPE_CHECKING:  # provided by Engine (engine.py) and FanIn (engine_fanin.py)

        async def _context(self, run_id: str) -> RunContext | None: ...

        async def _values(
            self,
            run_id: str,
            context: RunContext,
            node: Node,
            record: NodeRecord | None,
            known: Mapping[str, NodeRecord] | None = None,
        ) -> dict[str, Any]: ...

        async def _has_ended(self, run_id: str) -> bool: ...
