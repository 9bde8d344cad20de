"""`agentgraph trace RUN [NODE]`: what ran, as plain text.

Two parts, both read from the records only (so they work the same on the local store
and through the api):
- a flowchart: every node in topological order with its status, kind, duration, model
  turns, tool calls and cost, and the edges to its children (`|--> child`);
- the steps of every agent's tool loop: each model turn (tokens, cost, duration, the
  calls it made or its answer) and each tool call (arguments, result excerpt or error,
  duration), in the loop's order.

Plain ASCII lines (no colour, no box drawing), so a trace pastes into an issue or a log
as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agentgraph.core.records import NodeRecord, RunRecord, Step, Usage

EXCERPT = 80


def render(
    run: RunRecord,
    nodes: Sequence[NodeRecord],
    steps: Mapping[str, Sequence[Step]],
    kinds: Mapping[str, str] | None = None,
    only: str | None = None,
) -> list[str]:
    """The trace's lines. `kinds` describes nodes (`tool const`, `agent gemini-2.5-flash`)
    when the graph is known; `only` keeps the steps of one node."""
    kinds = kinds or {}
    lines = [_run_line(run), "", "flowchart"]
    children: dict[str, list[str]] = {n.node_id: [] for n in nodes}
    for node in nodes:
        for parent in node.parents:
            children.setdefault(parent, []).append(node.node_id)
    for node in nodes:
        lines.append("  " + _node_line(node, steps.get(node.node_id, ()), kinds))
        for child in children.get(node.node_id, []):
            lines.append(f"   |--> {child}")
    shown = [n for n in nodes if (only is None and steps.get(n.node_id)) or n.node_id == only]
    if shown:
        lines += ["", "steps"]
    for node in shown:
        recorded = steps.get(node.node_id, ())
        lines.append(f"  {node.node_id}: {_count(len(recorded), 'step')}" + _money(_sum(recorded)))
        if not recorded:
            lines.append("    (none: a node without tools makes no steps)")
        for i, step in enumerate(recorded):
            last = i == len(recorded) - 1
            head, rest = ("  `- ", "     ") if last else ("  |- ", "  |  ")
            first, *more = _step_lines(step)
            lines.append(head + first)
            lines.extend(rest + "  " + line for line in more)
    return lines


def _run_line(run: RunRecord) -> str:
    parts = [f"run {run.run_id}", run.graph_name, run.status.value]
    if run.started_at and run.finished_at:
        parts.append(_ms(int((run.finished_at - run.started_at) * 1000)))
    return " | ".join(parts) + _money(run.usage)


def _node_line(node: NodeRecord, steps: Sequence[Step], kinds: Mapping[str, str]) -> str:
    parts = [f"({node.node_id}) {node.status.value}"]
    kind = kinds.get(node.node_id) or (f"agent {node.model}" if node.model else "")
    if kind:
        parts.append(kind)
    if node.attempt > 1:
        parts.append(f"attempt {node.attempt}")
    turns = sum(1 for s in steps if s.kind == "model")
    calls = sum(1 for s in steps if s.kind == "tool")
    if turns:
        parts.append(_count(turns, "turn"))
        parts.append(_count(calls, "tool call"))
    if node.duration_ms is not None:
        parts.append(_ms(node.duration_ms))
    line = " | ".join(parts) + _money(node.usage)
    if len(node.parents) > 1:
        line += f"   <-- {', '.join(node.parents)}"
    if node.error is not None:
        line += f"\n   !  {node.error.type}: {_excerpt(node.error.message)}"
    return line


def _step_lines(step: Step) -> list[str]:
    timing = f"{_ms(step.duration_ms)}"
    if step.attempt > 1:
        timing += f" | attempt {step.attempt}"
    if step.kind == "tool":
        call = f"#{step.index} turn {step.turn} | tool {step.name}({_args(step.arguments)})"
        if step.error is not None:
            problem = f"{step.error.get('type')}: {step.error.get('message', '')}"
            return [f"{call} | {timing} | error {_excerpt(problem)}"]
        return [f"{call} | {timing} | -> {_excerpt(_json(step.result))}"]
    line = f"#{step.index} turn {step.turn} | model {step.name} | {timing}" + _money(step.usage)
    result = step.result if isinstance(step.result, dict) else {}
    calls = result.get("calls") or []
    text = str(result.get("text") or "")
    more = []
    if calls:
        more.append("calls " + ", ".join(f"{c.get('name')}({_args(c.get('args'))})" for c in calls))
        if text:
            more.append(f"says {_excerpt(_json(text))}")
    else:
        more.append(f"answer {_excerpt(_json(text))}")
    return [line, *more]


def _args(args: Any) -> str:
    if not isinstance(args, dict):
        return _excerpt(_json(args), 40) if args is not None else ""
    return ", ".join(f"{k}={_excerpt(_json(v), 40)}" for k, v in args.items())


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _excerpt(text: str, width: int = EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _sum(steps: Sequence[Step]) -> Usage:
    total = Usage()
    for step in steps:
        total = total + step.usage
    return total


def _tokens(usage: Usage) -> str:
    return f"tokens {usage.input_tokens:,} in / {usage.output_tokens:,} out"


def _money(usage: Usage) -> str:
    if not usage.calls and not usage.input_tokens:
        return ""
    return f" | {_tokens(usage)} | ${usage.cost_usd:.6f}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _ms(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def kinds_of(graph: Mapping[str, Any]) -> dict[str, str]:
    """`tool NAME` / `agent MODEL` per node id, from a graph document (best effort: a
    document that does not compile describes nothing)."""
    from agentgraph.core.validate import load_graph

    try:
        compiled = load_graph(graph)
    except Exception:
        return {}
    return {
        n.id: f"tool {n.tool}" if n.kind == "tool" else f"agent {n.model}"
        for n in compiled.nodes.values()
    }
