"""The redrive plan (core/redrive.py): which nodes of a failed or cancelled run run again,
and how, for static graphs and for runs that grew instances (maps, loops, subgraphs,
delegates). Pure: records in, a plan out."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.core import redrive
from agentgraph.core.errors import RedriveConflict
from agentgraph.core.graph import Graph
from agentgraph.core.readiness import CONDITION_FALSE, RUN_ENDED
from agentgraph.core.records import NodeError, NodeRecord, Step
from agentgraph.core.status import NodeStatus
from agentgraph.core.validate import load_graph

S = NodeStatus
ERROR = NodeError("ValueError", "broken", False)


def graph(*nodes: dict[str, Any], **top: Any) -> Graph:
    return load_graph({"name": "g", "defaults": {"model": "echo"}, "nodes": list(nodes), **top})


def tool(node_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "tool": "t", **extra}


def rec(
    node_id: str,
    status: NodeStatus,
    parents: tuple[str, ...] = (),
    *,
    reason: str | None = None,
    expect: int | None = None,
) -> NodeRecord:
    return NodeRecord(
        "r",
        node_id,
        status,
        list(parents),
        [],
        skip_reason=reason,
        error=ERROR if status == S.FAILED else None,
        meta={"expect": expect} if expect is not None else None,
    )


def records(*found: NodeRecord) -> dict[str, NodeRecord]:
    return {r.node_id: r for r in found}


def mapped(**extra: Any) -> Graph:
    return graph(
        tool("src"),
        tool("each", after=["src"], map="nodes.src.output", **extra),
        tool("end", after=["each"]),
    )


# ---- static graphs ----------------------------------------------------------------------------


def test_a_failed_node_and_what_it_cancelled_run_again_and_succeeded_nodes_stay() -> None:
    g = graph(tool("a"), tool("b", after=["a"]), tool("c", after=["b"]))
    plan = redrive.plan(
        g, records(rec("a", S.SUCCEEDED), rec("b", S.FAILED, ("a",)), rec("c", S.CANCELLED, ("b",)))
    )
    assert plan.again == {"b": S.READY, "c": S.WAITING}
    assert plan.decide == [] and plan.rearrive == []


def test_a_node_skipped_by_its_own_condition_under_parents_that_stay_stays_skipped() -> None:
    g = graph(tool("a"), tool("b", after=["a"], when="false"), tool("c", after=["a"]))
    plan = redrive.plan(
        g,
        records(
            rec("a", S.SUCCEEDED),
            rec("b", S.SKIPPED, ("a",), reason=CONDITION_FALSE),
            rec("c", S.CANCELLED, ("a",), reason=RUN_ENDED),
        ),
    )
    assert plan.again == {"c": S.READY}


def test_a_waiting_node_with_a_condition_under_parents_that_stay_is_decided_by_the_engine() -> None:
    g = graph(tool("a"), tool("b", after=["a"], when="true"))
    plan = redrive.plan(g, records(rec("a", S.SUCCEEDED), rec("b", S.CANCELLED, ("a",))))
    assert plan.again == {"b": S.WAITING} and plan.decide == ["b"]


# ---- maps -------------------------------------------------------------------------------------


def test_a_map_reruns_only_its_unsuccessful_items_and_waits_expanded_again() -> None:
    plan = redrive.plan(
        mapped(),
        records(
            rec("src", S.SUCCEEDED),
            rec("each", S.CANCELLED, ("src",), expect=4),
            rec("end", S.CANCELLED, ("each",)),
            rec("each[0]", S.SUCCEEDED),
            rec("each[1]", S.FAILED),
            rec("each[2]", S.SUCCEEDED),
            rec("each[3]", S.CANCELLED),
        ),
    )
    assert plan.again == {
        "each": S.EXPANDED,
        "end": S.WAITING,
        "each[1]": S.READY,
        "each[3]": S.READY,
    }
    assert plan.rearrive == []


def test_map_items_keep_their_lanes() -> None:
    """max_concurrency 2: lanes {0, 2, 4} and {1, 3, 5}. In each lane the first item that
    runs again is ready once the one before it has finished and stays; the rest wait."""
    plan = redrive.plan(
        mapped(max_concurrency=2),
        records(
            rec("src", S.SUCCEEDED),
            rec("each", S.CANCELLED, ("src",), expect=6),
            rec("end", S.CANCELLED, ("each",)),
            rec("each[0]", S.SUCCEEDED),
            rec("each[1]", S.FAILED),
            rec("each[2]", S.RUNNING, ("each[0]",)),  # a straggler: it releases each[4]
            rec("each[3]", S.CANCELLED, ("each[1]",)),
            rec("each[4]", S.CANCELLED, ("each[2]",)),
            rec("each[5]", S.CANCELLED, ("each[3]",)),
        ),
    )
    assert plan.again == {
        "each": S.EXPANDED,
        "end": S.WAITING,
        "each[1]": S.READY,
        "each[3]": S.WAITING,
        "each[4]": S.WAITING,
        "each[5]": S.WAITING,
    }
    assert plan.decide == [], "items are released by their lanes, not decided"
    assert plan.rearrive == ["each[2]"], (
        "were it to finish before the map is back, it is sent again"
    )


def test_the_failed_items_of_a_map_that_succeeded_stay_failed() -> None:
    plan = redrive.plan(
        mapped(on_error="continue"),
        records(
            rec("src", S.SUCCEEDED),
            rec("each", S.SUCCEEDED, ("src",), expect=2),
            rec("end", S.FAILED, ("each",)),
            rec("each[0]", S.SUCCEEDED),
            rec("each[1]", S.FAILED),
        ),
    )
    assert plan.again == {"end": S.READY}


def test_a_map_that_failed_before_expanding_runs_again_and_expands() -> None:
    plan = redrive.plan(
        mapped(),
        records(
            rec("src", S.SUCCEEDED),
            rec("each", S.FAILED, ("src",)),
            rec("end", S.CANCELLED, ("each",)),
        ),
    )
    assert plan.again == {"each": S.READY, "end": S.WAITING}


def test_a_map_whose_items_all_stay_is_settled_by_their_arrivals_sent_again() -> None:
    plan = redrive.plan(
        mapped(),
        records(
            rec("src", S.SUCCEEDED),
            rec("each", S.CANCELLED, ("src",), expect=2),
            rec("end", S.CANCELLED, ("each",)),
            rec("each[0]", S.SUCCEEDED),
            rec("each[1]", S.SUCCEEDED),
        ),
    )
    assert plan.again == {"each": S.EXPANDED, "end": S.WAITING}
    assert plan.rearrive == ["each[0]", "each[1]"]


def test_a_controller_with_instances_that_never_expanded_is_a_conflict() -> None:
    with pytest.raises(RedriveConflict, match="never finished expanding"):
        redrive.plan(
            mapped(),
            records(
                rec("src", S.SUCCEEDED),
                rec("each", S.FAILED, ("src",)),
                rec("end", S.CANCELLED, ("each",)),
                rec("each[0]", S.CANCELLED),
            ),
        )


# ---- loops, subgraphs, nesting ----------------------------------------------------------------


def test_a_loop_reruns_its_failed_iteration_and_keeps_the_ones_before() -> None:
    g = graph(tool("draft", loop={"until": "false", "max_iterations": 5}))
    plan = redrive.plan(
        g,
        records(
            rec("draft", S.CANCELLED, expect=1),
            rec("draft@1", S.SUCCEEDED),
            rec("draft@2", S.FAILED),
        ),
    )
    assert plan.again == {"draft": S.EXPANDED, "draft@2": S.READY}


def test_a_loop_ended_between_iterations_goes_on_from_its_last_iteration() -> None:
    g = graph(tool("draft", loop={"until": "false", "max_iterations": 5}))
    plan = redrive.plan(
        g,
        records(
            rec("draft", S.CANCELLED, expect=1),
            rec("draft@1", S.SUCCEEDED),
            rec("draft@2", S.SUCCEEDED),
        ),
    )
    assert plan.again == {"draft": S.EXPANDED}
    assert plan.rearrive == ["draft@2"]


def subgraph(**extra: Any) -> Graph:
    return graph(
        tool("src"),
        {
            "id": "research",
            "after": ["src"],
            "nodes": [tool("search"), tool("summarize", after=["search"])],
            **extra,
        },
    )


def test_a_subgraph_reruns_the_inner_nodes_that_did_not_succeed() -> None:
    plan = redrive.plan(
        subgraph(),
        records(
            rec("src", S.SUCCEEDED),
            rec("research", S.FAILED, ("src",), expect=1),
            rec("research/search", S.SUCCEEDED),
            rec("research/summarize", S.FAILED, ("research/search",)),
        ),
    )
    assert plan.again == {"research": S.EXPANDED, "research/summarize": S.READY}


def test_a_mapped_subgraph_reruns_inside_the_failed_item_only() -> None:
    plan = redrive.plan(
        subgraph(map="nodes.src.output"),
        records(
            rec("src", S.SUCCEEDED),
            rec("research", S.CANCELLED, ("src",), expect=3),
            rec("research[0]", S.SUCCEEDED, expect=1),
            rec("research[0]/search", S.SUCCEEDED),
            rec("research[0]/summarize", S.SUCCEEDED, ("research[0]/search",)),
            rec("research[1]", S.CANCELLED, expect=1),
            rec("research[1]/search", S.FAILED),
            rec("research[1]/summarize", S.CANCELLED, ("research[1]/search",)),
            rec("research[2]", S.CANCELLED),  # never expanded
        ),
    )
    assert plan.again == {
        "research": S.EXPANDED,
        "research[1]": S.EXPANDED,
        "research[1]/search": S.READY,
        "research[1]/summarize": S.WAITING,
        "research[2]": S.READY,
    }


# ---- delegates --------------------------------------------------------------------------------


def delegating() -> Graph:
    return graph(
        {"id": "lead", "prompt": "p", "delegates": ["helper"]},
        agents={"helper": {"tools": ["const"]}},
    )


def test_a_caller_waits_again_for_the_delegates_it_has_no_answer_from() -> None:
    g = delegating()
    found = records(
        rec("lead", S.CANCELLED, expect=2),
        rec("lead/helper[1]", S.SUCCEEDED),
        rec("lead/helper[2]", S.CANCELLED),
    )
    assert redrive.callers(found, redrive.node_resolver(g)) == {"lead"}
    plan = redrive.plan(g, found)
    assert plan.again == {"lead": S.EXPANDED, "lead/helper[2]": S.READY}


def test_delegates_whose_results_the_caller_holds_stay_whatever_their_status() -> None:
    g = delegating()
    steps = [
        Step(0, "model", "echo", 1, 1, 0.0),
        Step(1, "tool", "helper", 1, 1, 0.0, error={"type": "X", "message": "y"}),
    ]
    answered = redrive.answered("lead", steps)
    assert answered == {"lead/helper[1]"}
    plan = redrive.plan(
        g, records(rec("lead", S.FAILED, expect=1), rec("lead/helper[1]", S.FAILED)), None, answered
    )
    assert plan.again == {"lead": S.READY}
