"""Importing the CLI's modules without the garbage collector.

An `agentgraph` command imports a few hundred thousand objects (the CLI, the engine, the
local backend), none of them garbage, and the collections their allocations trigger
walk them again and again: about 45 ms of `agentgraph run` on a 1-node graph (0.50 →
0.455 s, measured). So the modules are imported with the collector off and then frozen
(left out of every later collection); the collector is back on before any node runs, so
a long run collects its garbage as usual. For the CLI's process only: a library must not
freeze its host's objects.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """The collector off for the block, then everything alive frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
