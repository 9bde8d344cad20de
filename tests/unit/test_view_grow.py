"""How runs that grow read: a large map folded into group lines in `logs`, expandable; the
drawings of map, loop and subgraph constructs."""

from __future__ import annotations

from typing import Any

from agentgraph.core.records import Event, NodeRecord
from agentgraph.core.status import NodeStatus
from agentgraph.core.validate import load_graph
from agentgraph.view_graph import ascii, mermaid
from agentgraph.view_grow import GroupLine, LiveFolder, folded_groups, group_events, map_group


def ev(node_id: str | None, status: str, at: float = 0.0, message: str | None = None) -> Event:
    kind = "node_status" if node_id else "run_status"
    return Event("r", at, kind, node_id, status, None, message)


def a_map_of(n: int, failing: tuple[int, ...] = (), controller: str = "review") -> list[Event]:
    events = [ev(None, "running"), ev(controller, "running"), ev(controller, "expanded")]
    for i in range(n):
        events.append(ev(f"{controller}[{i}]", "running", at=1.0 + i))
    for i in range(n):
        events.append(ev(f"{controller}[{i}]", "failed" if i in failing else "succeeded", 2.0 + n))
    events += [ev(controller, "succeeded", 3.0 + n), ev(None, "succeeded", 4.0 + n)]
    return events


def texts(rows: list[Any]) -> list[str]:
    return [
        r.text() if isinstance(r, GroupLine) else f"{r.node_id or 'run'} {r.status}" for r in rows
    ]


def test_a_map_item_is_found_by_its_outermost_map() -> None:
    assert map_group("review[7]") == ("review", "review[7]")
    assert map_group("rounds@1/review[7]") == ("rounds@1/review", "rounds@1/review[7]")
    assert map_group("research[3]/search") == ("research", "research[3]")
    assert map_group("research[3]/inner[2]") == ("research", "research[3]")
    assert map_group("rounds@2/plan") is None and map_group("plain") is None


def test_a_1000_item_map_is_one_line_per_change_of_the_group_with_counts() -> None:
    rows = group_events(a_map_of(1000, failing=(10, 500)))
    assert texts(rows) == [
        "run running",
        "review running",
        "review expanded",
        "review: 1,000 items started",
        "review[10] failed",
        "review[500] failed",
        "review: 1,000 items: 2 failed, 998 succeeded",
        "review succeeded",
        "run succeeded",
    ]
    assert folded_groups(a_map_of(1000)) == {"review": 1000}


def test_a_folded_group_prints_only_its_first_failed_items() -> None:
    rows = group_events(a_map_of(100, failing=tuple(range(20))))
    assert sum(1 for t in texts(rows) if t.endswith(" failed")) == 5
    assert "review: 100 items: 20 failed, 80 succeeded" in texts(rows)


def test_a_map_still_running_ends_the_timeline_with_its_counts_so_far() -> None:
    events = a_map_of(20)[:-12]  # ten items have not finished yet
    assert texts(group_events(events))[-1] == "review: 20 items so far: 10 running, 10 succeeded"


def test_a_small_map_and_an_expanded_one_are_shown_item_by_item() -> None:
    small = a_map_of(10)
    assert group_events(small) == small and folded_groups(small) == {}
    nested = a_map_of(30, controller="rounds@2/review")
    for expand in (["rounds@2/review"], ["rounds/review"], ["review"]):
        assert group_events(nested, expand) == nested
    assert group_events(nested, expand_all=True) == nested
    assert group_events(nested, ["other"]) != nested


def test_the_inner_nodes_of_a_mapped_subgraph_fold_into_its_group() -> None:
    events = [ev("research", "expanded")]
    for i in range(12):
        events += [ev(f"research[{i}]", "expanded"), ev(f"research[{i}]/search", "succeeded")]
        events += [ev(f"research[{i}]", "succeeded")]
    events.append(ev("research", "succeeded"))
    assert texts(group_events(events)) == [
        "research expanded",
        "research: 12 items started",
        "research: 12 items: 12 succeeded",
        "research succeeded",
    ]


GROWING = {
    "name": "g",
    "defaults": {"model": "echo"},
    "nodes": [
        {"id": "files", "tool": "t"},
        {"id": "review", "after": ["files"], "map": "{{ nodes.files.output }}", "prompt": "p"},
        {
            "id": "draft",
            "after": ["review"],
            "loop": {"until": "output >= 3", "max_iterations": 10},
            "tool": "t",
        },
        {
            "id": "rounds",
            "after": ["draft"],
            "loop": {"until": "output.ok", "max_iterations": 3},
            "nodes": [
                {"id": "plan", "prompt": "p"},
                {
                    "id": "each",
                    "after": ["plan"],
                    "map": "nodes.plan.output",
                    "max_concurrency": 4,
                    "tool": "t",
                },
            ],
        },
    ],
}


def test_mermaid_draws_a_subgraph_as_a_block_a_map_and_a_loop_as_one_labelled_node() -> None:
    drawing = mermaid(load_graph(GROWING))
    assert (
        'review[["review<br/>agent echo<br/>map over nodes.files.output · max_concurrency 100"]]'
        in drawing
    )
    assert 'draft{{"draft<br/>tool t<br/>loop until output >= 3 · max 10"}}' in drawing
    assert 'subgraph rounds["rounds: subgraph of 2 · loop until output.ok · max 3"]' in drawing
    assert (
        'rounds__each[["each<br/>tool t<br/>map over nodes.plan.output · max_concurrency 4"]]'
        in drawing
    )
    assert "    end" in drawing
    assert "    draft --> rounds" in drawing and "    rounds__plan --> rounds__each" in drawing
    assert "[0]" not in drawing and "@1" not in drawing  # drawn as written, not grown


def test_the_text_drawing_nests_a_subgraph_under_its_node() -> None:
    drawing = ascii(load_graph(GROWING))
    assert "  [rounds] subgraph of 2 · loop until output.ok · max 3  (sink)" in drawing
    assert (
        "        [each] tool t · map over nodes.plan.output · max_concurrency 4  (sink)" in drawing
    )
    assert (
        "  [review] agent echo · map over nodes.files.output · max_concurrency 100 ──▶ draft"
        in drawing
    )


class _Records:
    """The one read LiveFolder makes: a map node's record, with its item count."""

    def __init__(self, **expect: int) -> None:
        self.expect, self.reads = expect, 0

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None:
        self.reads += 1
        if node_id not in self.expect:
            return None
        meta = {"bindings": {}, "expect": self.expect[node_id]}
        return NodeRecord(run_id, node_id, NodeStatus.EXPANDED, [], [], meta=meta)


async def test_the_live_progress_folds_a_large_map_read_in_pieces() -> None:
    records = _Records(review=100, small=3)
    folder = LiveFolder(records, "r")
    events = a_map_of(100, failing=(7,))
    got = [*await folder.fold(events[:50]), *await folder.fold(events[50:])]
    assert texts(got) == [
        "run running",
        "review running",
        "review expanded",
        "review: 100 items started",
        "review[7] failed",
        "review: 100 items: 1 failed, 99 succeeded",
        "review succeeded",
        "run succeeded",
    ]
    assert records.reads == 1
    small = a_map_of(3, controller="small")
    assert await folder.fold(small) == small
