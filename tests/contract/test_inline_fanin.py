"""Contract: the executor's own fan-in (`Engine.fanin_inline`, how the gcp backend is
deployed). The executor that writes a node's final status decides its children itself, and
a crash anywhere in that fan-in is finished by the redelivery of the node-ready it never
acked. Same tests, every backend."""

from __future__ import annotations

from typing import Any

from agentgraph.core.status import NodeStatus, RunStatus

from .conftest import Harness
from .test_run_semantics import const, graph

S = NodeStatus


class _CountsNodeFinished:
    """A dispatcher that counts the node-finished messages sent through it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.finished = inner, 0

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        await self.inner.node_ready(run_id, node_id, attempt, pool)

    async def node_finished(self, run_id: str, node_id: str, status: S) -> None:
        self.finished += 1
        await self.inner.node_finished(run_id, node_id, status)


class _DiesArriving:
    """A store whose process dies once, in the first arrival at `child`: the parent's
    final status is written, its fan-in is cut short, its node-ready is not acked."""

    def __init__(self, inner: Any, child: str) -> None:
        self.inner, self.child = inner, child
        self.died: str | None = None  # the parent whose executor died

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record_arrival(
        self, run_id: str, child_id: str, parent_id: str, *args: Any, **kwargs: Any
    ) -> int | None:
        if child_id == self.child and self.died is None:
            self.died = parent_id
            raise ConnectionResetError(f"the process died in {parent_id!r}'s fan-in")
        result: int | None = await self.inner.record_arrival(
            run_id, child_id, parent_id, *args, **kwargs
        )
        return result


async def test_the_executor_decides_the_children_of_what_it_finishes_without_node_finished(
    harness: Harness,
) -> None:
    harness.engine.fanin_inline = True
    counted = _CountsNodeFinished(harness.engine.dispatcher)
    harness.engine.dispatcher = counted
    run = await harness.run(
        graph(const("a", 1), const("b", 2, ["a"]), const("c", 3, ["a"]), const("d", 4, ["b", "c"]))
    )
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"d": 4}
    assert counted.finished == 0
    assert all(harness.calls[n] == 1 for n in "abcd")


async def test_an_executor_that_dies_in_its_fan_in_is_finished_by_the_redelivery(
    harness: Harness,
) -> None:
    harness.engine.fanin_inline = True
    dies = _DiesArriving(harness.engine.store, "join")
    harness.engine.store = dies
    started = await harness.start(graph(const("a", 1), const("b", 2), const("join", 3, ["a", "b"])))
    await harness.until(
        started.run_id, lambda n: n["a"].status == S.SUCCEEDED and n["b"].status == S.SUCCEEDED
    )
    assert dies.died is not None
    # The node-ready the dead executor never acked comes again (on gcp, Pub/Sub may also
    # redeliver it by itself: either way it finds the node finished and does its fan-in).
    await harness.engine.execute(started.run_id, dies.died, 1)
    run = await harness.wait(started.run_id)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == {"join": 3}
    assert harness.calls["join"] == 1 and harness.calls["a"] == harness.calls["b"] == 1
