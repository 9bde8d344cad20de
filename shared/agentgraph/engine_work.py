"""The engine's half that does a node's work once it is claimed: a tool call, or an agent's
model call (through the per-model gate, within its owner's daily budget, its prompt
rendered from its parents' outputs, its attachments read), or an agent's tool loop of
durable steps (`engine_agent.py`). Part of `Engine` (`engine.py`), which claims the node
before and records what this returns after.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentgraph.core import delegation, grow
from agentgraph.core.errors import UnknownAgent
from agentgraph.core.graph import Node
from agentgraph.core.limits import OwnerLimits, check_spend
from agentgraph.core.llm_port import Attachment, LlmRequest, LlmResponse, OnPartial
from agentgraph.core.lru import Lru
from agentgraph.core.ports import OwnerActivityReader
from agentgraph.core.records import NodeRecord, Usage
from agentgraph.core.templates import render, render_value
from agentgraph.engine_agent import AgentLoop
from agentgraph.engine_gate import Ticket
from agentgraph.llm import attachments
from agentgraph.observability import engine_telemetry as telemetry
from agentgraph.observability import tracing

if TYPE_CHECKING:
    from agentgraph.engine import RunContext

SPEND_FRESH_S = 2.0  # how old an owner's spend today may be when a model call checks it


class NodeWork(AgentLoop):
    """Performing a claimed attempt: what it returns is the attempt's outcome. An agent
    with tools is its tool loop (`AgentLoop`), which this part therefore extends."""

    owner_activity: OwnerActivityReader | None
    owner_limits: OwnerLimits
    partial_interval_s: float
    local_files: bool
    _spend: Lru[str, tuple[float, float, int]]

    if TYPE_CHECKING:  # provided by Engine

        async def _generate(
            self, request: LlmRequest, on_partial: OnPartial | None, ticket: Ticket | None
        ) -> LlmResponse: ...

    async def _perform(
        self,
        run_id: str,
        context: RunContext,
        node: Node,
        attempt: int,
        record: NodeRecord,
        ticket: Ticket | None = None,
    ) -> tuple[Any, Usage, str | None]:
        if node.kind == "gate":  # an approval step with no work of its own
            return None, Usage(), None
        values = await self._values(run_id, context, node, record)
        # The gate admitted this attempt's model (a planned subagent's: its profile's).
        admitted = ticket.model if ticket is not None else None
        if node.agent is not None:
            node = grow.with_profile(node, context.graph, render(node.agent, values).strip())
        if node.kind == "tool":
            assert node.tool is not None
            args = render_value(node.args, values)
            with tracing.span(
                f"execute_tool {node.tool}",
                {tracing.GENAI_OPERATION: "execute_tool", tracing.GENAI_TOOL_NAME: node.tool},
            ):
                return await self._call_tool(node.tool, args), Usage(), None
        assert node.prompt is not None
        model = admitted or node.model_for_attempt(attempt)
        if model is None:  # a delegate whose profile names no model, nor its caller
            raise UnknownAgent(f"{node.id!r} has no model: its profile names none")
        await self._check_budget(context)
        attached = await self._attachments(node, values)
        request = LlmRequest(
            model=model,
            prompt=render(node.prompt, values),
            system=render(node.system, values) if node.system else None,
            temperature=node.temperature,
            top_p=node.top_p,
            max_output_tokens=node.max_output_tokens,
            stop_sequences=node.stop_sequences,
            safety_settings=node.safety_settings,
            output=node.output,
            output_schema=node.output_schema,
            timeout_s=node.timeout_s,
            stream=node.stream,
            attachments=attached,
        )
        on_partial = self._partial_writer(run_id, node.id, attempt) if node.stream else None
        if node.tools or node.delegates or node.memory == "run":  # durable steps (engine_agent)
            return await self._tool_loop(
                run_id,
                node,
                attempt,
                request,
                record.usage,
                lambda: self._check_budget(context),
                on_partial,
                lambda turn, partial: self._generate_for(context, turn, partial, ticket),
                delegation.declarations(node, context.graph),
            )
        with tracing.span(f"chat {model}", telemetry.llm_attributes(request)):
            response = await self._generate_for(context, request, on_partial, ticket)
            telemetry.record_llm(response.model, response.usage, response.text)
        output = response.data if node.output == "json" else response.text
        return output, response.usage, response.model

    async def _attachments(self, node: Node, values: dict[str, Any]) -> tuple[Attachment, ...]:
        """The node's `attach` entries rendered and read (files off the event loop)."""
        if not node.attach:
            return ()
        rendered = [render_value(entry, values) for entry in node.attach]
        return await asyncio.to_thread(attachments.resolve, rendered, local_files=self.local_files)

    async def _generate_for(
        self,
        context: RunContext,
        request: LlmRequest,
        on_partial: OnPartial | None,
        ticket: Ticket | None,
    ) -> LlmResponse:
        response = await self._generate(request, on_partial, ticket)
        self._spent(context, response.usage)
        return response

    async def _check_budget(self, context: RunContext) -> None:
        """Before a model call: is the run's owner within today's budget? Over it, the
        node fails with LimitExceeded (permanent), saying which budget and until when."""
        if self.owner_activity is None or context.owner is None:
            return
        now = self.clock()
        known = self._spend.get(context.owner)
        if known is None or not 0 <= now - known[0] <= SPEND_FRESH_S:
            # An aggregation over the owner's nodes of today: once per owner and
            # SPEND_FRESH_S in this process, not once a model call. What this process
            # spends meanwhile is added as it happens (`_spent`); other processes' spend
            # shows within SPEND_FRESH_S (the budget is soft by that much).
            usd, tokens = await self.owner_activity.spend_today(context.owner, now)
            known = (now, usd, tokens)
            self._spend.put(context.owner, known)
        check_spend(self.owner_limits, known[1], known[2], now)

    def _spent(self, context: RunContext, usage: Usage) -> None:
        """A model call's usage, added to the owner's spend this process last read."""
        known = self._spend.get(context.owner) if context.owner is not None else None
        if known is not None and context.owner is not None:
            tokens = usage.input_tokens + usage.output_tokens
            self._spend.put(context.owner, (known[0], known[1] + usage.cost_usd, known[2] + tokens))

    async def _call_tool(self, name: str, args: Any) -> Any:
        function = self.tools.get(name)
        if not isinstance(args, dict):
            raise TypeError(
                f"tool {name!r} args must render to a mapping, got {type(args).__name__}"
            )
        if inspect.iscoroutinefunction(function):
            return await function(**args)
        return await asyncio.to_thread(function, **args)

    def _partial_writer(self, run_id: str, node_id: str, attempt: int) -> Callable[[str], Any]:
        """Streamed text reaches the store at most once per interval (Firestore bills and
        rate-limits writes to one document). Text that arrives within an interval of the
        last write is not written: the whole answer lands with the node's output."""
        last = 0.0

        async def write(text: str) -> None:
            nonlocal last
            now = self.clock()
            if now - last >= self.partial_interval_s:
                last = now
                await self.store.set_partial(run_id, node_id, attempt, text)

        return write
