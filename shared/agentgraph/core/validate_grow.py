"""Validation of what makes a run grow (core/grow.py): the names a node's templates may
read where it maps or loops, `loop.until`, a subgraph's `output`, the `agents:`
profiles, and the plan schema derived from them. Part of `validate.py`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from agentgraph.core.errors import Problem, TemplateProblem
from agentgraph.core.graph import Graph
from agentgraph.core.model import AgentProfile, NodeSpec
from agentgraph.core.schemas import schema_problems as _schema_problems
from agentgraph.core.templates import bare_expression, references

_AGENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def own_bindings(spec: NodeSpec, enclosing: frozenset[str]) -> frozenset[str]:
    """The names a node's per-instance templates may read: its scope's, plus `item` and
    `index` when it maps, `loop` when it loops."""
    own = set(enclosing)
    if spec.map is not None:
        own |= {"item", "index"}
    if spec.loop is not None:
        own.add("loop")
    return frozenset(own)


def check_growth(
    specs: list[tuple[int, NodeSpec]],
    where: str,
    bindings: frozenset[str],
    problems: list[Problem],
) -> None:
    """`map` reads only ancestors and the enclosing bindings (checked with the other
    templates); `loop.until` reads `output`, `loop`, `input` and the enclosing bindings."""
    allowed = bindings | {"output", "loop", "input"}
    for i, s in specs:
        if s.loop is None:
            continue
        path = f"{where}[{i}].loop.until"
        try:
            refs = references(bare_expression(s.loop.until), expression=True)
        except TemplateProblem as exc:
            problems.append(Problem(path, f"does not parse: {exc}", s.id))
            continue
        for name in sorted(refs.other_names - allowed):
            problems.append(
                Problem(
                    path,
                    f"refers to {name!r}; 'until' may read {names(allowed)}",
                    s.id,
                )
            )
        if refs.nodes or refs.dynamic_node_access:
            problems.append(
                Problem(path, "reads 'nodes'; 'until' decides on the iteration's 'output'", s.id)
            )
        problems.extend(Problem(path, unsafe, s.id) for unsafe in refs.unsafe)


def check_body_output(
    path: str, spec: NodeSpec, body: Graph, bindings: frozenset[str], problems: list[Problem]
) -> None:
    """A subgraph's output is its single sink's, or its `output:` template over its nodes."""
    if spec.output in ("text", "json"):
        if len(body.sinks) > 1:
            problems.append(
                Problem(
                    f"{path}.output",
                    f"the subgraph has {len(body.sinks)} sinks ({', '.join(body.sinks)}): "
                    'say which output it exposes, e.g. output: "{{ nodes.x.output }}"',
                    spec.id,
                )
            )
        return
    try:
        refs = references(spec.output)
    except TemplateProblem as exc:
        problems.append(Problem(f"{path}.output", f"does not parse: {exc}", spec.id))
        return
    if not ("{{" in spec.output or "{%" in spec.output):
        problems.append(
            Problem(f"{path}.output", "a subgraph's output is a template over its nodes", spec.id)
        )
    allowed = own_bindings(spec, bindings)
    for name in sorted(refs.other_names - allowed):
        problems.append(
            Problem(
                f"{path}.output",
                f"refers to {name!r}; it may read 'input', 'nodes.<id>' of the subgraph"
                + (f" and {names(allowed)}" if allowed else ""),
                spec.id,
            )
        )
    for ref in sorted(refs.nodes - set(body.nodes)):
        problems.append(
            Problem(
                f"{path}.output",
                f"refers to {ref!r}, which is not a node of the subgraph{suggest(ref, body.nodes)}",
                spec.id,
            )
        )


def names(items: Collection[str]) -> str:
    return ", ".join(repr(n) for n in sorted(items))


def suggest(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_agents(
    agents: Mapping[str, AgentProfile],
    model_known: Callable[[str], bool] | None,
    problems: list[Problem],
    tools: Collection[str] | None = None,
) -> None:
    for name, profile in agents.items():
        check_tool_names(f"agents.{name}.tools", profile.tools or (), tools, problems)
        check_delegates(
            f"agents.{name}.delegates",
            profile.delegates or (),
            profile.tools or (),
            agents,
            problems,
        )
        if not _AGENT_NAME.match(name):
            problems.append(
                Problem(f"agents.{name}", "a profile name is letters, digits, '_' and '-'")
            )
        if profile.model is not None and model_known is not None and not model_known(profile.model):
            problems.append(
                Problem(
                    f"agents.{name}.model",
                    f"unknown model {profile.model!r}: expected a Gemini model (gemini-...) "
                    "or 'echo'",
                )
            )
        if profile.output_schema is not None:
            problems.extend(
                Problem(
                    p.path.replace("output_schema", f"agents.{name}.output_schema", 1), p.message
                )
                for p in _schema_problems("output_schema", profile.output_schema)
            )


def plan_schema(agents: Mapping[str, AgentProfile]) -> dict[str, Any]:
    """The JSON schema of a planner's output over the graph's profiles (`output_schema:
    agents`): `{"tasks": [{"agent": <profile name>, "task": <text>}, ...]}`, mapped with
    `map: "{{ nodes.plan.output.tasks }}"` and `agent: "{{ item.agent }}"`."""
    return {
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "agent": {"type": "string", "enum": sorted(agents)},
                        "task": {"type": "string"},
                    },
                    "required": ["agent", "task"],
                },
            }
        },
        "required": ["tasks"],
    }


# A delegate's instance id is `<caller>/<profile>[<step>]` (engine_delegates.py): the
# profiles an agent delegates to are named like node ids.
_DELEGATE_NAME = re.compile(r"^[a-z0-9-][a-z0-9_-]{0,62}$")


def check_tool_names(
    path: str,
    listed: Collection[str],
    tools: Collection[str] | None,
    problems: list[Problem],
    node_id: str | None = None,
) -> None:
    """An agent's `tools`: registered (when the registry is known), each named once."""
    seen: set[str] = set()
    for j, name in enumerate(listed):
        if name in seen:
            problems.append(Problem(f"{path}[{j}]", f"tool {name!r} is listed twice", node_id))
        seen.add(name)
        if tools is not None and name not in tools:
            problems.append(
                Problem(f"{path}[{j}]", f"unknown tool {name!r}{suggest(name, tools)}", node_id)
            )


def check_delegates(
    path: str,
    delegates: Collection[str],
    own_tools: Collection[str],
    agents: Mapping[str, AgentProfile],
    problems: list[Problem],
    node_id: str | None = None,
) -> None:
    """`delegates`: profiles of `agents:`, each once, named like node ids, none sharing a
    name with one of the same agent's tools (the model calls both by name). Cycles are
    allowed (a researcher may ask a researcher): the depth cap bounds them at run time."""
    seen: set[str] = set()
    for j, name in enumerate(delegates):
        where = f"{path}[{j}]"
        if name in seen:
            problems.append(Problem(where, f"profile {name!r} is listed twice", node_id))
        seen.add(name)
        if name not in agents:
            known = suggest(name, agents) if agents else " (the graph declares no 'agents:')"
            problems.append(Problem(where, f"unknown profile {name!r}{known}", node_id))
        elif not _DELEGATE_NAME.match(name):
            problems.append(
                Problem(
                    where,
                    f"a profile called as a delegate is named like a node id (lowercase "
                    f"letters, digits, '_' and '-'): {name!r}",
                    node_id,
                )
            )
        if name in own_tools:
            problems.append(
                Problem(where, f"{name!r} is both a tool and a delegate of this agent", node_id)
            )
