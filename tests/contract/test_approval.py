"""Contract: human approval. A node with `approval:` does its work, then waits in
`waiting_approval` holding no worker and no lease until a person decides (or its timeout
rejects it); the decision becomes its output. Same tests, every backend."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.errors import ApprovalConflict, NodeNotFound
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router

from .conftest import Harness, scripted_tools, watched
from .test_run_semantics import const, graph

S = NodeStatus


def reviewed(timeout_s: float = 3600, **extra: Any) -> dict[str, Any]:
    """draft -> review (computes a value, then waits for approval) -> publish."""
    return graph(
        const("draft", "v1"),
        const(
            "review",
            "{{ nodes.draft.output }}-checked",
            ["draft"],
            approval={
                "message": "publish {{ output }} for {{ input.who }}?",
                "timeout_s": timeout_s,
                "approvers": ["alice@example.com"],
            },
            **extra,
        ),
        const("publish", "{{ nodes.review.output.payload }}", ["review"]),
    )


async def waiting(harness: Harness, run_id: str, node_id: str = "review") -> None:
    await harness.until(run_id, lambda nodes: nodes[node_id].status == S.WAITING_APPROVAL)


async def test_an_approval_node_waits_with_its_request_and_no_lease(harness: Harness) -> None:
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    node = (await harness.nodes(started.run_id))["review"]
    assert node.lease_until is None
    assert node.output["decision"] == "pending"
    assert node.output["message"] == "publish v1-checked for bob?"
    assert node.output["payload"] == "v1-checked"
    assert node.output["approvers"] == ["alice@example.com"]
    assert node.next_attempt_at == pytest.approx(node.output["expires_at"])
    assert harness.calls == {"draft": 1, "review": 1}
    run = await harness.store.get_run(started.run_id)
    assert run is not None and run.status == RunStatus.RUNNING
    assert run.counts.get("waiting_approval") == 1
    # the sweeper does not take it over: it is not running and its deadline is far
    assert not [
        n
        for n in await harness.store.stale_nodes(harness.engine.clock() + 60, 1)
        if n.run_id == started.run_id
    ]


async def test_approving_succeeds_the_node_with_the_decision_and_the_edited_payload(
    harness: Harness,
) -> None:
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    decided = await harness.engine.decide_approval(
        started.run_id, "review", "approved", "alice@example.com", "ship it", payload="v2"
    )
    assert decided.status == S.SUCCEEDED
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"publish": "v2"}
    review = (await harness.nodes(run.run_id))["review"]
    assert review.output["decision"] == "approved"
    assert review.output["by"] == "alice@example.com"
    assert review.output["comment"] == "ship it"
    assert review.output["payload"] == "v2"
    assert review.output["message"] == "publish v1-checked for bob?"
    assert harness.calls == {"draft": 1, "review": 1, "publish": 1}


async def test_approving_without_a_payload_passes_the_computed_value_on(harness: Harness) -> None:
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    await harness.engine.decide_approval(started.run_id, "review", "approved", "owner")
    run = await harness.wait(started.run_id)
    assert run.outputs == {"publish": "v1-checked"}


async def test_a_pure_gate_waits_without_work_and_passes_the_approvers_payload(
    harness: Harness,
) -> None:
    started = await harness.start(
        graph(
            {"id": "gate", "approval": {"message": "go?"}},
            const("after", "{{ nodes.gate.output.payload }}", ["gate"]),
        )
    )
    await waiting(harness, started.run_id, "gate")
    await harness.engine.decide_approval(started.run_id, "gate", "approved", "o", payload=7)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"after": 7}


async def test_rejecting_fails_the_node_and_the_run_with_a_clear_error(harness: Harness) -> None:
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    await harness.engine.decide_approval(started.run_id, "review", "rejected", "alice", "no")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error["node_id"] == "review"
    nodes = await harness.nodes(run.run_id)
    assert nodes["review"].status == S.FAILED
    assert nodes["review"].error is not None
    assert nodes["review"].error.type == "ApprovalRejected"
    assert nodes["review"].error.message == "rejected by alice: no"
    assert nodes["review"].output["decision"] == "rejected"
    assert nodes["publish"].status == S.CANCELLED
    assert "publish" not in harness.calls


async def test_a_rejection_follows_on_error_continue(harness: Harness) -> None:
    document = reviewed(on_error="continue")
    document["nodes"][2]["args"]["value"] = "{{ nodes.review.error.type }}"
    started = await harness.start(document, {"who": "bob"})
    await waiting(harness, started.run_id)
    await harness.engine.decide_approval(started.run_id, "review", "rejected", "alice")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"publish": "ApprovalRejected"}


async def test_no_decision_before_the_timeout_rejects_the_node(harness: Harness) -> None:
    started = await harness.start(reviewed(timeout_s=1), {"who": "bob"})
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.FAILED
    review = (await harness.nodes(run.run_id))["review"]
    assert review.error is not None and review.error.type == "ApprovalTimeout"
    assert review.output["decision"] == "timeout"
    with pytest.raises(ApprovalConflict, match="already timeout"):
        await harness.engine.decide_approval(run.run_id, "review", "approved", "alice")


async def test_a_repeated_decision_is_idempotent_and_another_one_conflicts(
    harness: Harness,
) -> None:
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    first = await harness.engine.decide_approval(started.run_id, "review", "approved", "a", "ok")
    again = await harness.engine.decide_approval(started.run_id, "review", "approved", "b", "x")
    assert again.output == first.output  # the recorded decision, not a second one
    with pytest.raises(ApprovalConflict, match="already approved by a"):
        await harness.engine.decide_approval(started.run_id, "review", "rejected", "b")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert harness.calls["publish"] == 1


async def test_deciding_a_node_that_does_not_wait_for_approval_conflicts(
    harness: Harness,
) -> None:
    run = await harness.run(graph(const("a", 1)))
    with pytest.raises(ApprovalConflict, match="no approval step"):
        await harness.engine.decide_approval(run.run_id, "a", "approved", "o")
    with pytest.raises(NodeNotFound):
        await harness.engine.decide_approval(run.run_id, "zz", "approved", "o")


async def test_cancelling_a_run_cancels_a_node_waiting_for_approval(harness: Harness) -> None:
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    await harness.engine.cancel(started.run_id)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.CANCELLED
    assert (await harness.nodes(run.run_id))["review"].status == S.CANCELLED
    with pytest.raises(ApprovalConflict, match="not waiting for approval"):
        await harness.engine.decide_approval(run.run_id, "review", "approved", "o")


async def test_a_decision_whose_node_finished_was_lost_is_picked_up_on_recovery(
    harness: Harness,
) -> None:
    """Locally: `agentgraph approve` writes the decision while no process runs the run, and
    `resume` continues it. On gcp: the api died between the decision and its node-finished
    (the caller sees a 5xx); its retry, an idempotent repeat, sends node-finished."""
    started = await harness.start(reviewed(), {"who": "bob"})
    await waiting(harness, started.run_id)
    await harness.crash()
    await harness.engine.decide_approval(
        started.run_id, "review", "approved", "alice", notify=False
    )
    await harness.recover(started.run_id)
    if harness.name == "gcp":  # the sweeper re-sends no node-finished; the retry does
        await harness.engine.decide_approval(started.run_id, "review", "approved", "alice")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"publish": "v1-checked"}


async def test_a_node_waiting_for_approval_holds_no_worker(tmp_path: Path) -> None:
    """With a single worker, the other branch runs to its end while the gate waits; the
    waiting node holds no lease for the sweeper to take over either."""
    calls: Counter[str] = Counter()
    gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
    tools = scripted_tools(calls, gates)
    changed = asyncio.Event()
    store = SqliteStore(tmp_path / "runs.db")
    runtime = LocalRuntime(watched(store, changed), default_router(), tools, workers=1)
    async with runtime:
        h = Harness("local-1-worker", runtime.engine, runtime.store, tools, calls, gates, changed)
        started = await runtime.start(
            graph(
                {"id": "gate", "approval": {"message": "go?"}},
                const("other", 5),
                const("then", "{{ nodes.other.output + 1 }}", ["other"]),
                const("last", "{{ nodes.then.output }}", ["gate", "then"]),
            )
        )
        await h.until(
            started.run_id,
            lambda nodes: (
                nodes["then"].status == S.SUCCEEDED and nodes["gate"].status == S.WAITING_APPROVAL
            ),
        )
        assert calls == {"other": 1, "then": 1}
        assert not await store.stale_nodes(runtime.engine.clock() + 3600, 0)
        await runtime.engine.decide_approval(started.run_id, "gate", "approved", "me")
        run = await runtime.wait(started.run_id, timeout=30)
    store.close()
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"last": 6}


async def test_a_timeout_lost_with_a_crash_still_rejects_the_node(harness: Harness) -> None:
    """The timeout is a delayed delivery; if it dies with its process, `resume` re-arms it
    (local) and the sweeper finds the node past its deadline (gcp)."""
    started = await harness.start(reviewed(timeout_s=1), {"who": "bob"})
    await waiting(harness, started.run_id)
    node = (await harness.nodes(started.run_id))["review"]
    assert node.next_attempt_at is not None
    stale = await harness.store.stale_nodes(node.next_attempt_at + 2, 1)
    assert [(n.run_id, n.node_id) for n in stale if n.run_id == started.run_id] == [
        (started.run_id, "review")
    ]
    await harness.crash()
    await harness.recover(started.run_id)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.FAILED
    review = (await harness.nodes(run.run_id))["review"]
    assert review.error is not None and review.error.type == "ApprovalTimeout"
