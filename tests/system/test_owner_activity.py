"""What an owner has done, counted on the Firestore emulator with aggregation queries:
the numbers the per-owner limits are decided on, with no counter document written."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.backends.gcp.firestore_owner_activity import FirestoreOwnerActivity
from agentgraph.backends.gcp.firestore_store import FirestoreStore
from agentgraph.core.limits import DAY_S, OwnerLimits
from agentgraph.core.records import NodeRecord, Outcome, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus

pytestmark = pytest.mark.emulator

NOW = 1000 * DAY_S + 7200.0  # 02:00 UTC on some day


@pytest.fixture
def stores(isolated_firestore: Any) -> tuple[FirestoreStore, FirestoreOwnerActivity]:
    return FirestoreStore(isolated_firestore), FirestoreOwnerActivity(isolated_firestore)


async def start(
    store: FirestoreStore, run_id: str, owner: str, at: float, *, status: RunStatus, usd: float = 0
) -> None:
    run = RunRecord(
        run_id=run_id,
        graph_name="g",
        graph={"name": "g", "nodes": [{"id": "a", "tool": "noop"}]},
        input=None,
        status=status,
        created_at=at,
        node_count=1,
        owner=owner,
    )
    spent = Usage(input_tokens=100, output_tokens=10, cost_usd=usd)
    node = NodeRecord(run_id, "a", NodeStatus.READY, [], [], usage=spent)
    await store.create_run(run, [node])


async def test_runs_in_the_last_minute_running_runs_and_todays_spend_are_counted(
    stores: tuple[FirestoreStore, FirestoreOwnerActivity],
) -> None:
    store, activity = stores
    await start(store, "yesterday", "ann", NOW - 3 * 3600, status=RunStatus.SUCCEEDED, usd=5)
    await start(store, "early", "ann", NOW - 600, status=RunStatus.SUCCEEDED, usd=0.25)
    for i, ago in enumerate((50, 40, 30)):
        await start(store, f"recent-{i}", "ann", NOW - ago, status=RunStatus.RUNNING, usd=0.5)
    await start(store, "other-owner", "bob", NOW - 5, status=RunStatus.RUNNING, usd=9)

    limits = OwnerLimits(runs_per_minute=2)
    found = await activity.activity("ann", NOW, limits)

    assert found.started_last_minute == 3
    assert found.oldest_start_in_minute == NOW - 40  # the 2nd newest: its leaving frees one
    assert found.running == 3
    assert found.usd_today == pytest.approx(1.75)  # "yesterday" is before midnight UTC
    assert found.tokens_today == 4 * 110


async def test_an_owner_with_no_runs_has_done_nothing(
    stores: tuple[FirestoreStore, FirestoreOwnerActivity],
) -> None:
    _, activity = stores
    found = await activity.activity("nobody", NOW, OwnerLimits())
    assert (found.started_last_minute, found.running, found.usd_today, found.tokens_today) == (
        0,
        0,
        0.0,
        0,
    )


async def test_usage_spent_by_a_run_s_nodes_counts_toward_today_s_spend(
    stores: tuple[FirestoreStore, FirestoreOwnerActivity],
) -> None:
    """Node transitions add usage to the node documents, not to the run document (nor
    any counter): today's spend sums the owner's nodes, ended runs counted once."""
    store, activity = stores
    now = NOW
    await start(store, "spent", "cy", now - 5, status=RunStatus.RUNNING, usd=0.5)
    await store.claim_node("spent", "a", 1, now, now + 30)
    spent = Usage(input_tokens=7, output_tokens=3, cost_usd=0.25)
    await store.finish_node("spent", "a", 1, Outcome(NodeStatus.SUCCEEDED, 1, usage=spent), now)
    usd, tokens = await activity.spend_today("cy", now)
    assert usd == pytest.approx(0.75) and tokens == 110 + 10
    await store.set_run_status("spent", (RunStatus.RUNNING,), RunStatus.SUCCEEDED, now)
    assert await activity.spend_today("cy", now) == (usd, tokens)  # stored usage: a copy
