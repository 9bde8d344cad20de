"""`agentgraph trace` as text (steps_view.render): a flowchart of what ran, then every
step of every agent's tool loop."""

from __future__ import annotations

from agentgraph.core import agent_loop
from agentgraph.core.llm_port import FunctionCall
from agentgraph.core.records import NodeError, NodeRecord, RunRecord, Step, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.steps_view import kinds_of, render

GRAPH = {
    "name": "g",
    "nodes": [
        {"id": "fetch", "tool": "get"},
        {"id": "agent", "after": ["fetch"], "model": "gemini-2.5-flash", "prompt": "p"},
        {"id": "join", "after": ["fetch", "agent"], "tool": "merge"},
    ],
}
SPENT = Usage(input_tokens=1200, output_tokens=30, cost_usd=0.000435, calls=1)


def node(node_id: str, parents: list[str], **extra: object) -> NodeRecord:
    fields: dict = {"status": NodeStatus.SUCCEEDED, "duration_ms": 5, **extra}
    return NodeRecord("r1", node_id, parents=parents, children=[], **fields)


def test_the_trace_draws_the_flow_and_lists_each_turn_and_call_with_its_cost() -> None:
    run = RunRecord(
        "r1", "g", GRAPH, None, RunStatus.FAILED, 100.0, 3, started_at=100.0, finished_at=101.5
    )
    nodes = [
        node("fetch", []),
        node("agent", ["fetch"], attempt=2, usage=SPENT, duration_ms=1500),
        node(
            "join",
            ["fetch", "agent"],
            status=NodeStatus.FAILED,
            error=NodeError("ValueError", "bad merge"),
        ),
    ]
    lookup = FunctionCall("lookup", {"q": "durable"})
    steps = {
        "agent": [
            Step(
                0,
                "model",
                "gemini-2.5-flash",
                1,
                1,
                1.0,
                800,
                result=agent_loop.model_result("", [lookup]),
                usage=SPENT,
            ),
            Step(
                1,
                "tool",
                "lookup",
                2,
                1,
                2.0,
                12,
                arguments={"q": "durable"},
                error={"type": "KeyError", "message": "'durable'"},
            ),
        ]
    }

    lines = render(run, nodes, steps, kinds_of(GRAPH))

    assert lines == [
        "run r1 | g | failed | 1.5 s",
        "",
        "flowchart",
        "  (fetch) succeeded | tool get | 5 ms",
        "   |--> agent",
        "   |--> join",
        "  (agent) succeeded | agent gemini-2.5-flash | attempt 2 | 1 turn | 1 tool call | 1.5 s"
        " | tokens 1,200 in / 30 out | $0.000435",
        "   |--> join",
        "  (join) failed | tool merge | 5 ms   <-- fetch, agent\n   !  ValueError: bad merge",
        "",
        "steps",
        "  agent: 2 steps | tokens 1,200 in / 30 out | $0.000435",
        "  |- #0 turn 1 | model gemini-2.5-flash | 800 ms | tokens 1,200 in / 30 out | $0.000435",
        '  |    calls lookup(q="durable")',
        "  `- #1 turn 1 | tool lookup(q=\"durable\") | 12 ms | attempt 2 | error KeyError: 'durable'",
    ]


def test_one_nodes_trace_says_when_it_has_no_steps() -> None:
    run = RunRecord("r1", "g", GRAPH, None, RunStatus.SUCCEEDED, 100.0, 1)
    lines = render(run, [node("fetch", [])], {"fetch": []}, None, only="fetch")
    assert lines[-2:] == ["  fetch: 0 steps", "    (none: a node without tools makes no steps)"]
