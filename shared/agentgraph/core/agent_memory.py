"""`memory: run` on an agent profile: what the profile's earlier conversations in the
run (its loop iterations, its repeated calls as a delegate or an `agent:` node) carry
into its next one. Pure; the engine reads and writes entries in `engine_memory.py`.

A conversation is remembered when its node answers: one *entry* (a `Step` under the
run-level key `_memory@<profile>`, which names no node: user ids hold no `@`, instance
ids only `@<digits>`) holding the prompt and the node's steps, i.e. its model turns and
tool results. Entries are written create-if-absent at the next free index, and at most
once per node id, so a repeated or taken-over answer adds nothing. Being steps, they are
in the store: a crash, another worker or another function instance sees them.

The next conversation of the profile is sent the remembered ones before its prompt,
oldest first, trimmed to a token budget: whole conversations, newest first, as many as
fit in `memory_tokens` (default DEFAULT_MEMORY_TOKENS), a token estimated as 4
characters of the turns' text, calls and results as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from agentgraph.core import agent_loop
from agentgraph.core.llm_port import Turn
from agentgraph.core.records import Step

DEFAULT_MEMORY_TOKENS = 8_000
MAX_ENTRIES_READ = 1_000  # a profile's entries considered (newest); older ones are dropped


def key(profile: str) -> str:
    """The run-level key a profile's entries are stored under (as a node's steps)."""
    return f"_memory@{profile}"


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def entry(index: int, node_id: str, prompt: str, steps: Sequence[Step], at: float) -> Step:
    return Step(
        index=index,
        kind="model",
        name=node_id,
        attempt=1,
        turn=0,
        at=at,
        arguments={"prompt": prompt},
        result={"steps": [s.to_dict() for s in sorted(steps, key=lambda s: s.index)]},
    )


def remembered(entries: Sequence[Step], node_id: str) -> bool:
    return any(e.name == node_id for e in entries)


def next_index(entries: Sequence[Step]) -> int:
    return max((e.index for e in entries), default=-1) + 1


def turns_of(found: Step) -> tuple[Turn, ...]:
    """An entry as the conversation it was: its prompt, then its turns."""
    arguments = found.arguments if isinstance(found.arguments, dict) else {}
    result = found.result if isinstance(found.result, dict) else {}
    steps = [Step.from_dict(s) for s in result.get("steps") or ()]
    return (Turn("user", str(arguments.get("prompt") or "")), *agent_loop.replay(steps).turns)


def turn_tokens(turn: Turn) -> int:
    data: list[Any] = [c.to_dict() for c in turn.calls]
    data += [{"name": r.name, "response": r.response} for r in turn.results]
    extra = json.dumps(data, ensure_ascii=False, default=str) if data else ""
    return estimate_tokens(turn.text + extra)


def history(entries: Sequence[Step], node_id: str, budget: int) -> tuple[Turn, ...]:
    """The turns sent before the prompt of `node_id`: the other entries, whole, newest
    first while they fit in `budget` tokens, then in the order they happened."""
    kept: list[tuple[Turn, ...]] = []
    used = 0
    others = [e for e in sorted(entries, key=lambda e: e.index) if e.name != node_id]
    for found in reversed(others[-MAX_ENTRIES_READ:]):
        turns = turns_of(found)
        cost = sum(turn_tokens(t) for t in turns)
        if used + cost > budget:
            break
        kept.append(turns)
        used += cost
    return tuple(t for turns in reversed(kept) for t in turns)
