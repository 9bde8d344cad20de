"""Contract: the fan-in decides a child exactly once, however its parents' arrivals race.

On Firestore the arrival count is derived (a `count()` of the child's arrival documents),
so arrivals committing together may each see the full count; deciding stays exactly-once
because every step after "the count is full" is conditional. A wide child (at least
`CLAIM_FROM_PARENTS` parents) is decided by the one arrival that wins `claim_decision`;
a crash after that claim is finished by the redelivered node-finished.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.engine_fanin import CLAIM_FROM_PARENTS

from .conftest import Harness

S = NodeStatus
WIDE = CLAIM_FROM_PARENTS


def graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"name": "fanin", "defaults": {"model": "echo"}, "nodes": list(nodes)}


def held(node_id: str) -> dict[str, Any]:
    """A parent that finishes when the test releases "parents": those running together."""
    return {"id": node_id, "tool": "hold", "args": {"key": "parents", "value": node_id}}


def join(parents: list[str]) -> dict[str, Any]:
    return {
        "id": "join",
        "after": parents,
        "tool": "const",
        "args": {
            "key": "join",
            "value": "{{ " + " ~ ".join(f"nodes.{p}.output" for p in parents) + " }}",
        },
    }


class Twice:
    """The engine's dispatcher, sending every node-finished twice at once (an at-least-
    once transport's duplicates, racing the original)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        await asyncio.gather(
            self._inner.node_finished(run_id, node_id, status),
            self._inner.node_finished(run_id, node_id, status),
        )


class DiesAfterClaiming:
    """The engine's store; the first caller that wins `claim_decision` dies right after
    (its process is gone: the child is neither decided nor sent)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.died = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def claim_decision(self, run_id: str, node_id: str) -> bool:
        claimed = await self._inner.claim_decision(run_id, node_id)
        if claimed and not self.died:
            self.died = True
            raise ConnectionAbortedError("the process died after claiming the decision")
        return bool(claimed)


async def ready_events(harness: Harness, run_id: str, node_id: str) -> int:
    events = await harness.events(run_id)
    return sum(1 for e in events if e.node_id == node_id and e.status == S.READY.value)


async def test_parents_finishing_together_decide_their_child_once(harness: Harness) -> None:
    parents = [f"p{i:02d}" for i in range(WIDE)]
    started = await harness.start(graph(*(held(p) for p in parents), join(parents)))
    await harness.until(started.run_id, lambda n: _running(n, parents) >= 2)
    harness.release("parents")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"join": "".join(parents)}
    assert harness.calls["join"] == 1
    assert await ready_events(harness, run.run_id, "join") == 1
    assert await harness.store.get_arrival_count(run.run_id, "join") == WIDE


async def test_every_node_finished_delivered_twice_at_once_decides_each_child_once(
    harness: Harness,
) -> None:
    """Duplicates race their originals at a wide child and at a two-parent one."""
    harness.engine.dispatcher = Twice(harness.engine.dispatcher)
    parents = [f"p{i:02d}" for i in range(WIDE)]
    pair = {"id": "pair", "after": ["p00", "p01"], "tool": "const", "args": {"key": "pair"}}
    started = await harness.start(graph(*(held(p) for p in parents), join(parents), pair))
    await harness.until(started.run_id, lambda n: _running(n, parents) >= 2)
    harness.release("parents")
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs["join"] == "".join(parents)
    assert harness.calls["join"] == 1 and harness.calls["pair"] == 1
    assert await ready_events(harness, run.run_id, "join") == 1
    assert await ready_events(harness, run.run_id, "pair") == 1


async def test_a_crash_after_the_last_arrival_is_finished_by_the_redelivery(
    harness: Harness,
) -> None:
    """The arrival that completed the wide child claimed its decision and died before
    deciding: the child waits with every arrival in. node-finished comes again (Pub/Sub
    redelivers an unacknowledged message; here also by hand, as the local runtime has no
    redelivery): the duplicate arrival finds the count full and decides the child."""
    dying = DiesAfterClaiming(harness.engine.store)
    harness.engine.store = dying
    parents = [f"p{i:02d}" for i in range(WIDE)]
    started = await harness.start(graph(*(instant(p) for p in parents), join(parents)))
    await harness.eventually(lambda: _died(dying))
    assert await harness.store.get_arrival_count(started.run_id, "join") == WIDE
    assert (await harness.nodes(started.run_id))["join"].status == S.WAITING
    for parent in parents:  # which one died is the transport's to know: all come again
        await harness.engine.complete(started.run_id, parent, S.SUCCEEDED)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"join": "".join(parents)}
    assert harness.calls["join"] == 1
    assert await ready_events(harness, run.run_id, "join") == 1


def _running(nodes: dict[str, Any], ids: list[str]) -> int:
    """How many are running (a backend may run fewer than all at once)."""
    return sum(1 for i in ids if nodes[i].status == S.RUNNING)


def instant(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "tool": "const", "args": {"key": node_id, "value": node_id}}


async def _died(store: DiesAfterClaiming) -> bool:
    return store.died
