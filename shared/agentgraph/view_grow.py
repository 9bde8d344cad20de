"""How runs that grow read in a terminal: a large map as one line, expandable.

A 1,000-item map writes thousands of events and records; `logs` and `show` would bury the
rest of the run under them. These functions fold the instances of each map with more than
GROUP_OVER items into its group: `logs` prints one line each time the group changes state
(its first item starts; the map ends, or the timeline ends while it runs) with its items'
counts per status, and still prints each failed item (the first few per group). A group
is shown in full when named by `--expand` (its id, its template path such as
`rounds/review`, or its last name) or with `--all`. Pure: records in, lines out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgraph.core import grow
from agentgraph.core.records import Event

GROUP_OVER = 10  # a map with more items than this is folded into one line
FAILED_SHOWN = 5  # failed items a folded group still prints one by one
_ENDED = frozenset({"succeeded", "failed", "skipped", "cancelled"})


def map_group(node_id: str) -> tuple[str, str] | None:
    """The outermost map item a node is (or is inside): (the map's id, the item's id).
    `rounds@1/review[7]` -> (`rounds@1/review`, `rounds@1/review[7]`); `research[3]/search`
    -> (`research`, `research[3]`); a node in no map item -> None."""
    if "[" not in node_id:
        return None
    segments = grow.parse(node_id)
    if segments is None:
        return None
    for i, segment in enumerate(segments):
        if segment.index is not None:
            head = "/".join(grow.segment_text(s) for s in segments[:i])
            controller = f"{head}/{segment.name}" if head else segment.name
            item = grow.item_id(controller, segment.index)
            if segment.iteration is not None:  # pragma: no cover - not produced today
                item = grow.iteration_id(item, segment.iteration)
            return controller, item
    return None


def template_path(node_id: str) -> str:
    """A node id without its instance marks: `rounds@2/review[7]` -> `rounds/review`."""
    segments = grow.parse(node_id)
    return "/".join(s.name for s in segments) if segments else node_id


def expanded(group: str, expand: Collection[str], expand_all: bool) -> bool:
    """Whether `--expand`/`--all` asks to see this group's instances one by one."""
    if expand_all:
        return True
    return any(e in (group, template_path(group), group.rpartition("/")[2]) for e in expand)


@dataclass
class GroupLine:
    """One line standing for a map's items: their count and how many are in each status."""

    at: float
    group: str
    items: int
    counts: Counter[str] = field(default_factory=Counter)
    phase: str = "started"  # started | ended | so far

    def text(self) -> str:
        counts = ", ".join(f"{n:,} {status}" for status, n in sorted(self.counts.items()))
        if self.phase == "started":
            return f"{self.group}: {self.items:,} items started"
        head = f"{self.group}: {self.items:,} items" + (" so far" if self.phase == "so far" else "")
        return f"{head}: {counts}"


@dataclass
class _Group:
    items: set[str] = field(default_factory=set)
    status: dict[str, str] = field(default_factory=dict)  # item id -> its last status
    started: bool = False
    ended: bool = False
    failed_shown: int = 0

    def line(self, at: float, group: str, phase: str) -> GroupLine:
        counts = Counter(self.status.values())
        waiting = len(self.items) - len(self.status)
        if waiting and phase != "started":
            counts["waiting"] += waiting
        return GroupLine(
            at, group, len(self.items), counts if phase != "started" else Counter(), phase
        )

    def take(self, event: Event, group: str, item: str) -> list[Event | GroupLine]:
        """An event of one of the map's items: what the folded timeline shows of it (the
        map's start line once, and its first FAILED_SHOWN failures)."""
        rows: list[Event | GroupLine] = []
        if not self.started:
            self.started = True
            rows.append(self.line(event.at, group, "started"))
        if event.node_id == item and event.status:
            self.status[item] = event.status
        if event.status == "failed" and self.failed_shown < FAILED_SHOWN:
            self.failed_shown += 1
            rows.append(event)
        return rows

    def ends_with(self, event: Event) -> GroupLine | None:
        """The map's end line, if `event` is the map node itself ending (once)."""
        if event.status not in _ENDED or self.ended:
            return None
        self.ended = True
        return self.line(event.at, event.node_id or "", "ended")


def folded_groups(
    events: Sequence[Event], expand: Collection[str] = (), expand_all: bool = False
) -> dict[str, int]:
    """The maps whose items `group_events` folds, with their item counts."""
    return {g: len(s.items) for g, s in _groups(events, expand, expand_all).items()}


def _groups(
    events: Sequence[Event], expand: Collection[str], expand_all: bool
) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    for event in events:
        found = map_group(event.node_id) if event.node_id else None
        if found is not None:
            groups.setdefault(found[0], _Group()).items.add(found[1])
    return {
        g: s
        for g, s in groups.items()
        if len(s.items) > GROUP_OVER and not expanded(g, expand, expand_all)
    }


def group_events(
    events: Sequence[Event], expand: Collection[str] = (), expand_all: bool = False
) -> list[Event | GroupLine]:
    """The timeline with each large map's items folded into group lines (see the module
    docstring). Events of runs without large maps come back unchanged."""
    groups = _groups(events, expand, expand_all)
    if not groups:
        return list(events)
    rows: list[Event | GroupLine] = []
    for event in events:
        found = map_group(event.node_id) if event.node_id else None
        state = groups.get(found[0]) if found is not None else None
        if found is not None and state is not None:
            rows.extend(state.take(event, *found))
            continue
        rows.extend(_end_line(groups, event))
        rows.append(event)
    for group, state in groups.items():
        if state.started and not state.ended:
            last = events[-1].at if events else 0.0
            rows.append(state.line(last, group, "so far"))
    return rows


class LiveFolder:
    """`group_events` for a timeline read in pieces as the run goes (the plain-line progress
    of `agentgraph run` in CI logs and pipes): whether a map is large is read once from its
    record when its first item shows (`expect`, its item count), and its group line with
    the counts is written when the map ends."""

    def __init__(self, store: Any, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._size: dict[str, int] = {}
        self._groups: dict[str, _Group] = {}

    async def _large(self, group: str) -> bool:
        if group not in self._size:
            record = await self.store.get_node(self.run_id, group)
            self._size[group] = grow.expected_of(record) if record is not None else 0
        return self._size[group] > GROUP_OVER

    async def fold(self, events: Sequence[Event]) -> list[Event | GroupLine]:
        rows: list[Event | GroupLine] = []
        for event in events:
            found = map_group(event.node_id) if event.node_id else None
            if found is not None and await self._large(found[0]):
                group, item = found
                state = self._groups.setdefault(group, _Group())
                state.items.update(f"{group}[{i}]" for i in range(self._size[group]))
                rows.extend(state.take(event, group, item))
                continue
            rows.extend(_end_line(self._groups, event))
            rows.append(event)
        return rows


def _end_line(groups: Mapping[str, _Group], event: Event) -> list[GroupLine]:
    """The end line of the map `event` is about, if it is a folded map ending."""
    state = groups.get(event.node_id or "")
    line = state.ends_with(event) if state is not None else None
    return [line] if line is not None else []
