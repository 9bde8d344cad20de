"""Agents as tools (`delegates`): the pure decisions. The engine's half is
`engine_delegates.py`.

An agent that lists profiles in `delegates` sees each as a function (`declarations`):
the profile's name and description, one string argument `task`. A call of one becomes a
node instance of the run, a *delegate*, with a deterministic id from the caller and the
step index of the call:

    lead/researcher[3]            the call at step 3 of node `lead`, to profile researcher
    lead/researcher[3]/coder[1]   a delegate's own delegate (depth 2)

User ids never hold `[` or `/`, and a caller is never a subgraph, so such an id names
exactly one call (`parse`): a repeated delivery creates the instance once
(`Store.add_instances` is create-if-absent). The delegate runs as its profile (`node`),
with the task as its prompt; its only child is its caller, which waits in `expanded`
(no lease, no worker) until every delegate of the turn has finished, then runs again at
the same attempt and replays its steps, the delegates' outputs now recorded as the
calls' results (`result_step`).

Depth is capped at MAX_DELEGATE_DEPTH: a delegate at depth 3 that calls a delegate
fails with DelegationTooDeep (its caller receives the error as the call's response).
Cycles between profiles are allowed; the cap bounds them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agentgraph.core.errors import DelegationTooDeep
from agentgraph.core.graph import Graph, Node
from agentgraph.core.llm_port import FunctionCall, FunctionSpec
from agentgraph.core.model import DEFAULT_MAX_TURNS, OnError
from agentgraph.core.records import NodeRecord, Step
from agentgraph.core.status import NodeStatus

MAX_DELEGATE_DEPTH = 3
TASK_PROMPT = "{{ task }}"  # a delegate's prompt: its task, bound like a map's item
_LAST = re.compile(r"^([a-z0-9-][a-z0-9_-]{0,62})\[(0|[1-9][0-9]{0,5})\]$")


def child_id(caller_id: str, profile: str, index: int) -> str:
    return f"{caller_id}/{profile}[{index}]"


def parse(node_id: str) -> tuple[str, str, int] | None:
    """(caller id, profile, step index) of a delegate's id, or None."""
    caller, slash, last = node_id.rpartition("/")
    match = _LAST.match(last)
    if not slash or match is None:
        return None
    return caller, match[1], int(match[2])


def declarations(node: Node, graph: Graph) -> tuple[FunctionSpec, ...]:
    """One function per delegate profile: its name, its description, a `task` string."""
    specs = []
    for name in node.delegates:
        profile = graph.agents.get(name)
        about = (profile.description if profile else None) or f"Ask the {name} agent."
        specs.append(
            FunctionSpec(
                name=name,
                description=about,
                parameters={
                    "type": "object",
                    "properties": {
                        "task": {
                            "type": "string",
                            "description": f"What the {name} agent should do, in full.",
                        }
                    },
                    "required": ["task"],
                },
            )
        )
    return tuple(specs)


def node(caller: Node, graph: Graph, node_id: str, profile_name: str) -> Node | None:
    """The Node a delegate runs as: its profile's settings (the caller's model when the
    profile names none), the caller's pool, timeout and retries; a task prompt; its only
    child the caller. None when the profile does not exist."""
    profile = graph.agents.get(profile_name)
    if profile is None:
        return None
    return replace(
        caller,
        id=node_id,
        parents=(),
        children=(caller.id,),
        kind="agent",
        on_error=OnError.CONTINUE,  # its failure is its caller's call's error, not the run's
        prompt=TASK_PROMPT,
        system=profile.system,
        model=profile.model or caller.model,
        fallback_model=None if profile.model else caller.fallback_model,
        temperature=profile.temperature,
        max_output_tokens=profile.max_output_tokens,
        output=profile.output or "text",
        output_schema=profile.output_schema,
        stream=False,
        when=None,
        attach=(),
        reads=frozenset(),
        tools=tuple(profile.tools or ()),
        max_turns=profile.max_turns or DEFAULT_MAX_TURNS,
        on_max_turns="fail",
        approval=None,
        map=None,
        max_concurrency=None,
        loop=None,
        body=None,
        body_output=None,
        agent=None,
        delegates=tuple(profile.delegates or ()),
        profile=profile_name,
        memory=profile.memory,
        memory_tokens=profile.memory_tokens,
        delegate_of=caller.id,
        delegate_depth=caller.delegate_depth + 1,
    )


def split(
    node: Node, calls: Sequence[tuple[int, FunctionCall]]
) -> tuple[list[tuple[int, FunctionCall]], list[tuple[int, FunctionCall]]]:
    """The calls of a turn: (to tools, to delegates)."""
    tools = [(i, c) for i, c in calls if c.name not in node.delegates]
    return tools, [(i, c) for i, c in calls if c.name in node.delegates]


def check_depth(node: Node) -> None:
    if node.delegate_depth >= MAX_DELEGATE_DEPTH:
        raise DelegationTooDeep(
            f"{node.id!r} is a delegate at depth {node.delegate_depth} and called a delegate; "
            f"delegation is at most {MAX_DELEGATE_DEPTH} deep"
        )


def task_of(call: FunctionCall) -> str | None:
    task = call.args.get("task")
    return task if isinstance(task, str) and task.strip() else None


def record(
    run_id: str, caller: Node, index: int, call: FunctionCall, siblings: Sequence[str]
) -> NodeRecord:
    """A delegate's instance, ready; `siblings` are every delegate of the same turn (the
    last of them to finish wakes the caller)."""
    return NodeRecord(
        run_id=run_id,
        node_id=child_id(caller.id, call.name, index),
        status=NodeStatus.READY,
        parents=[],
        children=[caller.id],
        pool=caller.pool,
        meta={"bindings": {"task": task_of(call) or ""}, "siblings": list(siblings)},
    )


def siblings_of(record: NodeRecord) -> list[str]:
    return list((record.meta or {}).get("siblings") or [record.node_id])


def result_step(
    index: int, turn: int, attempt: int, call: FunctionCall, child: NodeRecord | None, at: float
) -> Step:
    """The call's step from its delegate's final record: its output as the result, or
    its error (failed, cancelled, skipped) as the call's error response."""
    result: Any = None
    error: dict[str, Any] | None = None
    if child is not None and child.status == NodeStatus.SUCCEEDED:
        result = child.output
    elif child is not None and child.error is not None:
        error = {"type": child.error.type, "message": child.error.message}
    else:
        status = child.status.value if child else "absent"
        error = {"type": "DelegateFailed", "message": f"the {call.name} agent ended {status}"}
    return Step(
        index=index,
        kind="tool",
        name=call.name,
        attempt=attempt,
        turn=turn,
        at=at,
        duration_ms=(child.duration_ms or 0) if child else 0,
        arguments=call.args,
        result=result,
        error=error,
        call_id=call.id,
    )


def bad_task_step(index: int, turn: int, attempt: int, call: FunctionCall, at: float) -> Step:
    """A delegate call without a task goes back to the model as its error; no instance."""
    return Step(
        index=index,
        kind="tool",
        name=call.name,
        attempt=attempt,
        turn=turn,
        at=at,
        arguments=call.args,
        error={"type": "TypeError", "message": "a delegate call needs a non-empty 'task' string"},
        call_id=call.id,
    )
