"""An agent node with `tools`: the model calls tools, sees their results, and goes on,
every completed step durable before the next begins (decisions in `core/agent_loop.py`).

What is guaranteed:
- Each completed model turn and tool call is written with `Store.append_step` before the
  loop goes on, so an attempt that is retried (a retryable error), taken over (its worker
  died) or redelivered resumes after its last completed step: no completed model call
  and no completed tool call is made again. A step that did not complete (the worker
  died during it) is made again.
- The calls of one turn run concurrently; each is recorded as it completes.
- A tool raising RetryableToolError fails the attempt as retryable (the node's backoff,
  then a new attempt that resumes from the steps; the failed call is made again). Any
  other exception of a tool goes back to the model as the call's error response
  (`{"error": "Type: message"}`) and is recorded on the step: the model may recover.
- The node's timeout_s bounds the whole attempt, every turn and call of it included.
- The node's usage is the sum of its steps: an attempt reports what its node has not
  been charged yet, including the steps of an earlier attempt that died unreported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agentgraph.core import agent_loop, delegation
from agentgraph.core.errors import RetryableToolError
from agentgraph.core.graph import Node
from agentgraph.core.llm_port import (
    FunctionCall,
    FunctionSpec,
    LlmRequest,
    LlmResponse,
    OnPartial,
    Turn,
)
from agentgraph.core.records import Step, Usage
from agentgraph.engine_parts import EngineParts
from agentgraph.observability import engine_telemetry as telemetry
from agentgraph.observability import tracing
from agentgraph.tools.declarations import declaration, invoke

Generate = Callable[[LlmRequest, OnPartial | None], Awaitable[LlmResponse]]


class AgentLoop(EngineParts):
    """The tool loop, mixed into Engine (which provides the ports: `engine_parts.py`)."""

    if TYPE_CHECKING:  # provided by Engine (engine_delegates.py, engine_memory.py)

        async def _memory_history(self, run_id: str, node: Node) -> tuple[Turn, ...]: ...

        async def _memorize(
            self, run_id: str, node: Node, prompt: str, steps: list[Step]
        ) -> None: ...

        async def _delegate_steps(
            self,
            run_id: str,
            node: Node,
            attempt: int,
            turn: int,
            calls: list[tuple[int, FunctionCall]],
            into: list[Step],
        ) -> None: ...

    async def _tool_loop(
        self,
        run_id: str,
        node: Node,
        attempt: int,
        request: LlmRequest,
        recorded: Usage,
        before_model_call: Callable[[], Awaitable[None]],
        on_partial: OnPartial | None,
        generate: Generate | None = None,
        delegates: tuple[FunctionSpec, ...] = (),
    ) -> tuple[Any, Usage, str | None]:
        """(output, usage not yet charged to the node, answering model). `generate` makes
        each model call (the engine passes its gated call, so the breaker sees every
        turn's outcome); the LLM provider's own by default. `delegates` are the
        functions of the node's delegate profiles (engine_delegates.py): a turn calling
        one whose answer is not in yet raises DelegationSuspended."""
        generate = generate or self.llm.generate
        request = replace(
            request,
            functions=(*self._functions(node), *delegates),
            history=await self._memory_history(run_id, node),
        )
        steps = await self.store.list_steps(run_id, node.id)
        try:
            while True:
                state = agent_loop.replay(steps)
                action = agent_loop.decide(state, node.max_turns)
                if isinstance(action, agent_loop.Answer):
                    await self._memorize(run_id, node, request.prompt, steps)
                    output = action.data if node.output == "json" else action.text
                    usage = agent_loop.unrecorded(agent_loop.total_usage(steps), recorded)
                    return output, usage, action.model
                if isinstance(action, agent_loop.Exhausted):
                    if node.on_max_turns != "return_last":
                        raise agent_loop.exhausted_error(action)
                    await self._memorize(run_id, node, request.prompt, steps)
                    usage = agent_loop.unrecorded(agent_loop.total_usage(steps), recorded)
                    last_model = next((s.name for s in reversed(steps) if s.kind == "model"), None)
                    return action.last_text, usage, last_model
                if isinstance(action, agent_loop.RunTools):
                    to_tools, to_delegates = delegation.split(node, action.calls)
                    if to_tools:
                        tools_action = agent_loop.RunTools(action.turn, tuple(to_tools))
                        await self._tool_steps(run_id, node, attempt, tools_action, steps)
                    if to_delegates:
                        await self._delegate_steps(
                            run_id, node, attempt, action.turn, to_delegates, steps
                        )
                    continue
                await before_model_call()
                turn_request = replace(request, turns=state.turns)
                steps.append(
                    await self._model_step(
                        run_id, node, attempt, action, turn_request, on_partial, generate
                    )
                )
        except Exception as exc:
            # The engine charges a failed attempt with the exception's `usage`.
            with contextlib.suppress(AttributeError, TypeError):
                exc.usage = agent_loop.unrecorded(  # type: ignore[attr-defined]
                    agent_loop.total_usage(steps), recorded
                )
            raise

    def _functions(self, node: Node) -> tuple[FunctionSpec, ...]:
        return tuple(declaration(name, self.tools.get(name)) for name in node.tools)

    async def _model_step(
        self,
        run_id: str,
        node: Node,
        attempt: int,
        action: agent_loop.CallModel,
        request: LlmRequest,
        on_partial: OnPartial | None,
        generate: Generate,
    ) -> Step:
        began = time.monotonic()
        with tracing.span(f"chat {request.model}", telemetry.llm_attributes(request)):
            response = await generate(request, on_partial)
            telemetry.record_llm(response.model, response.usage, response.text)
        step = Step(
            index=action.index,
            kind="model",
            name=response.model,
            attempt=attempt,
            turn=action.turn,
            at=self.clock(),
            duration_ms=_ms_since(began),
            result=agent_loop.model_result(response.text, response.calls, response.data),
            usage=response.usage,
        )
        return await self._record(run_id, node.id, step)

    async def _tool_steps(
        self, run_id: str, node: Node, attempt: int, action: agent_loop.RunTools, into: list[Step]
    ) -> None:
        """Every call of the turn at once, each recorded (and added to `into`) as it
        completes. A retryable failure of one is raised once the others have ended."""
        outcomes = await asyncio.gather(
            *(
                self._tool_step(run_id, node, attempt, action.turn, index, call)
                for index, call in action.calls
            ),
            return_exceptions=True,
        )
        into.extend(o for o in outcomes if isinstance(o, Step))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _tool_step(
        self, run_id: str, node: Node, attempt: int, turn: int, index: int, call: FunctionCall
    ) -> Step:
        began = time.monotonic()
        result: Any = None
        error: dict[str, Any] | None = None
        attributes = {tracing.GENAI_OPERATION: "execute_tool", tracing.GENAI_TOOL_NAME: call.name}
        with tracing.span(f"execute_tool {call.name}", attributes):
            try:
                if call.name not in node.tools:
                    raise LookupError(
                        f"no tool {call.name!r} on this node; its tools are {', '.join(node.tools)}"
                    )
                result = agent_loop.jsonable(await invoke(self.tools.get(call.name), call.args))
            except RetryableToolError:
                raise
            except Exception as exc:  # the model receives it as the call's error
                error = {"type": type(exc).__name__, "message": str(exc) or repr(exc)}
        step = Step(
            index=index,
            kind="tool",
            name=call.name,
            attempt=attempt,
            turn=turn,
            at=self.clock(),
            duration_ms=_ms_since(began),
            arguments=call.args,
            result=result,
            error=error,
            call_id=call.id,
        )
        return await self._record(run_id, node.id, step)

    async def _record(self, run_id: str, node_id: str, step: Step) -> Step:
        """Write the step; when its index is taken (a racing worker of the same node got
        there first), go on with the recorded step instead, so both continue alike."""
        if await self.store.append_step(run_id, node_id, step):
            return step
        for existing in await self.store.list_steps(run_id, node_id):
            if existing.index == step.index:
                return existing
        return step  # pragma: no cover - a store that refused without a step there


def _ms_since(began: float) -> int:
    return int((time.monotonic() - began) * 1000)
