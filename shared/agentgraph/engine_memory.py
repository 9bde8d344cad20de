"""`memory: run`: an agent profile's earlier conversations in the run, read before its
next one and written when it answers (decisions and the budget in
`core/agent_memory.py`). Entries are steps of a run-level key, so they are as durable
as the agent's own steps and every worker and function instance reads the same ones."""

from __future__ import annotations

import logging

from agentgraph.core import agent_memory
from agentgraph.core.graph import Node
from agentgraph.core.llm_port import Turn
from agentgraph.core.records import Step
from agentgraph.engine_parts import EngineParts

log = logging.getLogger("agentgraph.engine")

_APPEND_TRIES = 20  # racing writers of one profile's next index each retry at the next


class Memory(EngineParts):
    """Mixed into Engine."""

    async def _memory_history(self, run_id: str, node: Node) -> tuple[Turn, ...]:
        """The turns before the prompt of an agent whose profile has `memory: run`."""
        if node.memory != "run" or node.profile is None:
            return ()
        entries = await self.store.list_steps(run_id, agent_memory.key(node.profile))
        return agent_memory.history(entries, node.id, node.memory_tokens)

    async def _memorize(self, run_id: str, node: Node, prompt: str, steps: list[Step]) -> None:
        """Remember the conversation that just answered, once per node id: a repeated
        answer (a redelivery, a takeover replaying its steps) finds it remembered."""
        if node.memory != "run" or node.profile is None:
            return
        key = agent_memory.key(node.profile)
        for _ in range(_APPEND_TRIES):
            entries = await self.store.list_steps(run_id, key)
            if agent_memory.remembered(entries, node.id):
                return
            index = agent_memory.next_index(entries)
            entry = agent_memory.entry(index, node.id, prompt, steps, self.clock())
            if await self.store.append_step(run_id, key, entry):
                return
        log.warning("could not remember %s/%s: its profile's memory is too busy", run_id, node.id)
