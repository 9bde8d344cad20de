"""What people see: the live progress table, the run tree, the timeline, graph drawings,
and the JSON run record for scripts. Reads records only; never changes state."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agentgraph import view_graph, view_grow
from agentgraph.core import delegation, grow
from agentgraph.core.graph import Graph
from agentgraph.core.records import Event, NodeRecord, RunRecord
from agentgraph.core.status import NodeStatus
from agentgraph.view_grow import GROUP_OVER, GroupLine

STYLE = {
    "waiting": "dim",
    "ready": "cyan",
    "running": "bold yellow",
    "retrying": "magenta",
    "expanded": "blue",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "dim",
    "cancelled": "red",
    "waiting_approval": "bold blue",
    "pending": "dim",
    "running_run": "yellow",
}
ICON = {
    "waiting": "·",
    "ready": "○",
    "running": "◐",
    "retrying": "↻",
    "expanded": "⋔",
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "-",
    "cancelled": "⊘",
    "waiting_approval": "?",
}


def _duration(record: NodeRecord, now: float) -> str:
    if record.duration_ms is not None:
        return _ms(record.duration_ms)
    if record.status == NodeStatus.RUNNING and record.started_at:
        return _ms(int((now - record.started_at) * 1000)) + "…"
    return ""


def _ms(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _preview(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _detail(record: NodeRecord, now: float) -> str:
    if record.status == NodeStatus.RUNNING and record.partial:
        return "▸ " + _preview(record.partial[-200:])
    if record.status == NodeStatus.RETRYING and record.error:
        wait = max(0.0, (record.next_attempt_at or now) - now)
        return f"{record.error.type}: {_preview(record.error.message, 40)} — retry in {wait:.1f}s"
    if record.error and record.status == NodeStatus.FAILED:
        return f"{record.error.type}: {_preview(record.error.message, 50)}"
    if record.status in (NodeStatus.SKIPPED, NodeStatus.CANCELLED) and record.skip_reason:
        return record.skip_reason.replace("_", " ")
    if record.status == NodeStatus.SUCCEEDED:
        return _preview(record.output)
    if record.status == NodeStatus.WAITING_APPROVAL and isinstance(record.output, dict):
        left = max(0.0, (record.next_attempt_at or now) - now)
        return f"asks: {_preview(record.output.get('message'), 40)} — {left:.0f}s left"
    return ""


def progress_table(run: RunRecord, nodes: Sequence[NodeRecord]) -> Table:
    now = time.time()
    done = sum(
        1
        for n in nodes
        if n.status
        in (NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED)
    )
    table = Table(
        title=f"{run.graph_name} · {run.run_id} · {run.status.value} · {done}/{len(nodes)} done",
        title_justify="left",
        expand=False,
        show_edge=False,
        pad_edge=False,
    )
    for column, kwargs in (
        ("node", {}),
        ("status", {}),
        ("try", {"justify": "right"}),
        ("time", {"justify": "right"}),
        ("detail", {"overflow": "ellipsis", "max_width": 70}),
    ):
        table.add_column(column, **kwargs)  # type: ignore[arg-type]
    for record in nodes:
        status = record.status.value
        table.add_row(
            record.node_id,
            Text(f"{ICON[status]} {status}", style=STYLE[status]),
            str(record.attempt) if record.status != NodeStatus.WAITING else "",
            _duration(record, now),
            _detail(record, now),
        )
    return table


# Node statuses worth a line in a log: where a node ended, and why it is trying again.
# `ready` and `running` are not: a CI log of n nodes then has about n lines, not 3n.
_LOGGED_NODE_STATUSES = frozenset({"succeeded", "failed", "skipped", "cancelled", "retrying"})
LOG_READS_PER_SECOND = 4


class ProgressView:
    """Live table on a terminal; otherwise (CI logs, pipes) a plain line per node that
    ends or retries and per change of the run, read from the store at most
    LOG_READS_PER_SECOND times a second. Rendering a rich line per event cost more than
    running the node (about 1 ms each), and a live view's cost must not grow with the
    graph faster than the run does."""

    def __init__(self, console: Console, store: Any, run_id: str) -> None:
        self.console = console
        self.store = store
        self.run_id = run_id
        self._live: Live | None = None
        self._last_event = 0
        self._last_refresh = 0.0
        self._folder = view_grow.LiveFolder(store, run_id)  # a large map: one line

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=10, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    async def refresh(self) -> None:
        """Called on every change; shows it if the last showing is old enough."""
        now = time.monotonic()
        interval = 0.08 if self._live is not None else 1 / LOG_READS_PER_SECOND
        if now - self._last_refresh < interval:
            return
        self._last_refresh = now
        await self.flush()

    async def flush(self) -> None:
        """Show everything up to now (the end of a run: nothing may be left unshown)."""
        self._last_refresh = time.monotonic()
        if self._live is not None:
            run = await self.store.get_run(self.run_id)
            nodes = await self.store.list_nodes(self.run_id)
            self._live.update(progress_table(run, nodes))
            return
        events = await self.store.list_events(self.run_id, after=self._last_event)
        if events:
            self._last_event = events[-1].seq or self._last_event
            lines = [
                event_line(e) if isinstance(e, Event) else f"{_clock(e.at)}  {e.text()}"
                for e in await self._folder.fold(events)
                if not isinstance(e, Event)
                or e.node_id is None
                or e.message
                or e.status in _LOGGED_NODE_STATUSES
            ]
            if lines:
                self.console.file.write("".join(line + "\n" for line in lines))
                self.console.file.flush()


def event_line(event: Event) -> str:
    """One event as plain text, the same columns as `print_events` without the styles."""
    who = event.node_id or "run"
    line = f"{_clock(event.at)}  {who:<20} {event.status or event.kind:<10}"
    if event.attempt and event.attempt > 1:
        line += f" attempt {event.attempt}"
    if event.message:
        line += f"  {event.message}"
    return line


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def print_events(console: Console, events: Sequence[Event | GroupLine]) -> None:
    """The timeline; a `GroupLine` (view_grow.group_events) stands for a map's items."""
    for event in events:
        if isinstance(event, GroupLine):
            group = Text(_clock(event.at) + "  ", style="dim")
            group.append(f"{event.group + '[*]':<20} ", style="bold")
            group.append(f"{'items':<10}", style=STYLE["expanded"])
            group.append(f"  {event.text()}")
            console.print(group, highlight=False)
            continue
        line = Text(_clock(event.at) + "  ", style="dim")
        if event.node_id:
            line.append(f"{event.node_id:<20} ", style="bold")
        else:
            line.append(f"{'run':<20} ", style="bold blue")
        status = event.status or event.kind
        line.append(f"{status:<10}", style=STYLE.get(status, ""))
        if event.attempt and event.attempt > 1:
            line.append(f" attempt {event.attempt}", style="magenta")
        if event.message:
            line.append(f"  {event.message}")
        console.print(line, highlight=False)


def _usage_text(usage: Any) -> str:
    if not usage.calls and not usage.input_tokens:
        return ""
    text = f"tokens {usage.input_tokens:,} in / {usage.output_tokens:,} out"
    if usage.thinking_tokens:
        text += f" / {usage.thinking_tokens:,} thinking"
    if usage.cached_tokens:
        text += f" ({usage.cached_tokens:,} cached)"
    return text + f" · ${usage.cost_usd:.6f}"


def _run_duration(run: RunRecord) -> str:
    end = run.finished_at or time.time()
    return _ms(int((end - (run.started_at or run.created_at)) * 1000))


def print_outputs(console: Console, run: RunRecord, nodes: Sequence[NodeRecord]) -> None:
    style = STYLE.get(run.status.value, "")
    summary = Text()
    summary.append(f"{run.status.value}", style=style)
    summary.append(f" in {_run_duration(run)} · {len(nodes)} nodes")
    usage = _usage_text(run.usage)
    if usage:
        summary.append(" · " + usage)
    parts: list[Any] = [summary]
    if run.error:
        parts.append(Text(f"error: {run.error.get('message', run.error)}", style="red"))
    failed = [n for n in nodes if n.status == NodeStatus.FAILED and n.error]
    for node in failed:
        parts.append(Text(f"{node.node_id}: {node.error.type}: {node.error.message}", style="red"))  # type: ignore[union-attr]
    if run.outputs:
        parts.append(
            Syntax(json.dumps(run.outputs, indent=2, ensure_ascii=False), "json", word_wrap=True)
        )
    console.print(Panel(Group(*parts), title=f"run {run.run_id}", title_align="left"))


def print_run_tree(
    console: Console,
    run: RunRecord,
    nodes: Sequence[NodeRecord],
    expand: Collection[str] = (),
    expand_all: bool = False,
) -> None:
    """Each node under its first parent; other parents are named, so a DAG reads as a tree.
    A map of more than GROUP_OVER items is one line of counts (its failed items still
    shown) unless `expand` names it or `expand_all` (view_grow.expanded)."""
    header = Text()
    header.append(f"{run.graph_name} ", style="bold")
    header.append(f"{run.run_id} ")
    header.append(run.status.value, style=STYLE.get(run.status.value, ""))
    header.append(f" · {_run_duration(run)}")
    usage = _usage_text(run.usage)
    if usage:
        header.append(" · " + usage)
    tree = Tree(header)
    branches: dict[str, Tree] = {}
    grouped = {
        g: line
        for g, line in _grouped_items(nodes).items()
        if not view_grow.expanded(g, expand, expand_all)
    }
    for record in nodes:
        unit = _unit(record)
        in_map = None if _delegate(record) else view_grow.map_group(record.node_id)
        if in_map is not None and in_map[0] in grouped and record.status != NodeStatus.FAILED:
            continue  # counted on its map's summary line
        status = record.status.value
        label = Text()
        label.append(f"{ICON[status]} {record.node_id} ", style="bold")
        label.append(status, style=STYLE[status])
        if unit is not None and unit[1].iteration is not None:
            label.append(f"  iteration {unit[1].iteration}", style="blue")
        details = [
            d
            for d in (
                _duration(record, time.time()),
                f"attempt {record.attempt}" if record.attempt > 1 else "",
                f"model {record.model}" if record.model else "",
                _usage_text(record.usage),
            )
            if d
        ]
        if record.executions > record.attempt:
            details.append(f"{record.executions - record.attempt} repeated after a crash")
        if details:
            label.append("  " + " · ".join(details), style="dim")
        if len(record.parents) > 1:
            label.append(f"  (after {', '.join(record.parents)})", style="dim")
        above = _tree_parent(record)
        parent = branches.get(above) if above is not None else None
        branch = (parent or tree).add(label)
        if record.node_id in grouped:
            branch.add(grouped[record.node_id])
        if record.error:
            branch.add(Text(f"{record.error.type}: {record.error.message}", style="red"))
        elif record.skip_reason and record.status in (NodeStatus.SKIPPED, NodeStatus.CANCELLED):
            branch.add(Text(record.skip_reason.replace("_", " "), style="dim"))
        branches[record.node_id] = branch
    console.print(tree)
    if grouped:
        names = " ".join(f"--expand {g}" for g in grouped)
        console.print(Text(f"maps shown as counts; each item with {names} (or --all)", style="dim"))
    if run.error:
        console.print(Text(f"error: {run.error.get('message', run.error)}", style="red"))


def _delegate(record: NodeRecord) -> bool:
    """A delegate (`caller/profile[step]`, core/delegation.py) hangs under its caller,
    its only child: not an item of a map."""
    return delegation.parse(record.node_id) is not None and record.children == [
        record.node_id.rpartition("/")[0]
    ]


def _unit(record: NodeRecord) -> tuple[str, grow.Segment] | None:
    """An item or iteration's controller and segment; None for a delegate."""
    return None if _delegate(record) else grow.unit_of(record.node_id)


def _tree_parent(record: NodeRecord) -> str | None:
    """Where a node hangs in the run tree: under its first parent; an item or iteration
    under its map or loop; a subgraph's first node under its subgraph."""
    if record.parents and _unit(record) is None:
        return record.parents[0]
    unit = _unit(record)
    if unit is not None:
        return unit[0]
    if "/" in record.node_id:
        return record.node_id.rpartition("/")[0]
    return None


def _grouped_items(nodes: Sequence[NodeRecord]) -> dict[str, Text]:
    """For each map with more than GROUP_OVER items: one line, its items per status."""
    items: dict[str, Counter[str]] = {}
    for record in nodes:
        unit = _unit(record)
        if unit is not None and unit[1].index is not None:
            items.setdefault(unit[0], Counter())[record.status.value] += 1
    lines = {}
    for controller, counts in items.items():
        if sum(counts.values()) <= GROUP_OVER:
            continue
        line = Text(f"{sum(counts.values()):,} items: ", style="bold")
        for i, (status, n) in enumerate(sorted(counts.items())):
            line.append(", " if i else "")
            line.append(f"{n:,} {status}", style=STYLE.get(status, ""))
        lines[controller] = line
    return lines


def draw_graph(graph: Graph, format: str) -> str:
    """Mermaid or text; maps, loops and subgraphs drawn as written (view_graph.py)."""
    return view_graph.mermaid(graph) if format == "mermaid" else view_graph.ascii(graph)
