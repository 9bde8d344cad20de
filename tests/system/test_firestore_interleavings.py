"""Concurrent deliveries through FirestoreStore in EVERY interleaving of its commits.

`test_utils.orchestrate.orchestrate(f, g)` runs f and g in threads and steps them through
every ordering of the syncpoints marked in the code they execute (the lines before each
commit in firestore_store.py). It traces with `sys.settrace`, which is per thread, and the
async code it must see runs in that thread only if the thread runs its own event loop:
so each side is `asyncio.run(...)` with its own AsyncClient and its own Engine, as two
function instances would be. A paused side blocks only its own loop.

Every interleaving needs fresh state, and orchestrate starts the two threads of each
interleaving only after the previous ones ended: the n-th thread started belongs to
interleaving n // 2, and each interleaving has its own run, written beforehand.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from google.cloud import firestore
from test_utils.orchestrate import orchestrate
from test_utils.system import EmulatorCreds

from agentgraph.backends.gcp.firestore_store import TALLY_GROUP, FirestoreStore
from agentgraph.core.records import NodeError, Outcome, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.engine import Engine
from agentgraph.engine_fanin import CLAIM_FROM_PARENTS
from agentgraph.llm import default_router
from agentgraph.tools import Registry, default_registry

pytestmark = pytest.mark.emulator

T = TypeVar("T")
S = NodeStatus


def on_own_loop(project: str, work: Callable[[FirestoreStore], Awaitable[T]]) -> T:
    """Run `work` on a new event loop with a new client, as a separate process would."""

    async def main() -> T:
        client = firestore.AsyncClient(project=project, credentials=EmulatorCreds())
        try:
            return await work(FirestoreStore(client))
        finally:
            await client._firestore_api.transport.close()

    return asyncio.run(main())


class Recorder:
    """Dispatcher and RetryScheduler that note what would be sent (thread-safe)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        with self._lock:
            self.sent.append(("ready", run_id, node_id))

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        with self._lock:
            self.sent.append(("finished", run_id, node_id))

    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None:
        with self._lock:
            self.sent.append(("retry", run_id, node_id))


class Interleavings:
    """Which interleaving a starting thread belongs to, and what each side observed."""

    def __init__(self, runs: list[str], width: int = 2) -> None:
        self.runs = runs
        self.width = width
        self.seen: dict[str, list[Any]] = defaultdict(list)
        self.conflicts = 0  # commits refused by a precondition, over all interleavings
        self._tickets = itertools.count()
        self._lock = threading.Lock()

    def next_run(self) -> str:
        with self._lock:
            index = next(self._tickets) // self.width
        assert index < len(self.runs), f"more interleavings than the {len(self.runs)} prepared"
        return self.runs[index]

    def note(self, run_id: str, value: Any, store: FirestoreStore) -> None:
        with self._lock:
            self.seen[run_id].append(value)
            self.conflicts += store.stats["conflicts"]

    @property
    def used(self) -> list[str]:
        return [r for r in self.runs if r in self.seen]


def counting_tools(calls: Counter[str], lock: threading.Lock) -> Registry:
    tools = default_registry.child()

    @tools.tool
    def const(key: str, value: Any = None) -> Any:
        with lock:
            calls[key] += 1
        return value

    return tools


def engine_for(store: FirestoreStore, tools: Registry, recorder: Recorder) -> Engine:
    return Engine(store, recorder, recorder, default_router(), tools)


def const(node_id: str, after: list[str] | None = None) -> dict[str, Any]:
    return {"id": node_id, "after": after or [], "tool": "const", "args": {"key": node_id}}


def prepare(project: str, count: int, document: dict[str, Any], setup: Any = None) -> list[str]:
    """`count` runs of `document` started through the engine (roots stay undelivered)."""

    async def work(store: FirestoreStore) -> list[str]:
        engine = engine_for(store, counting_tools(Counter(), threading.Lock()), Recorder())
        runs = []
        for _ in range(count):
            run = await engine.start_run(document)
            if setup is not None:
                await setup(store, run.run_id)
            runs.append(run.run_id)
        return runs

    return on_own_loop(project, work)


# ---- the claim ---------------------------------------------------------------------------


def test_two_deliveries_of_one_attempt_claim_it_once_in_every_interleaving(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("claim")
    book = Interleavings(prepare(project, 8, {"name": "claim", "nodes": [const("a")]}))

    def deliver() -> None:
        run_id = book.next_run()

        async def work(store: FirestoreStore) -> None:
            now = time.time()
            claimed = await store.claim_node(run_id, "a", 1, now, now + 60)
            book.note(run_id, claimed is not None, store)

        on_own_loop(project, work)

    turns = orchestrate(deliver, deliver)
    assert turns == (2, 1)  # read + pause + commit; the second finds it running
    assert len(book.used) == 3  # C(3, 1) orderings
    for run_id in book.used:
        assert sorted(book.seen[run_id]) == [False, True], run_id
    assert book.conflicts >= 1  # some ordering had both read "ready" before either commit


def test_two_executions_of_one_attempt_call_the_tool_once_in_every_interleaving(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("execute")
    book = Interleavings(prepare(project, 8, {"name": "execute", "nodes": [const("a")]}))
    calls: Counter[str] = Counter()
    tools = counting_tools(calls, threading.Lock())
    recorder = Recorder()

    def deliver() -> None:
        run_id = book.next_run()

        async def work(store: FirestoreStore) -> None:
            await engine_for(store, tools, recorder).execute(run_id, "a", 1)
            book.note(run_id, "done", store)

        on_own_loop(project, work)

    turns = orchestrate(deliver, deliver)
    assert turns == (3, 1)  # claim, finish (no read: the claim remembers the node), end
    assert len(book.used) == 4
    assert calls["a"] == len(book.used)  # once per interleaving

    async def check(store: FirestoreStore) -> None:
        for run_id in book.used:
            node = await store.get_node(run_id, "a")
            assert node is not None and node.status == S.SUCCEEDED and node.executions == 1
            succeeded = [e for e in await store.list_events(run_id) if e.status == "succeeded"]
            assert len(succeeded) == 1, run_id
            # node-finished may be sent again: a duplicate that finds the node finished
            # re-sends it in case the first delivery died before sending (idempotent).
            assert any(m == ("finished", run_id, "a") for m in recorder.sent)

    on_own_loop(project, check)


# ---- the fan-in --------------------------------------------------------------------------

FAN_IN = {"name": "fan-in", "nodes": [const("a"), const("b"), const("child", ["a", "b"])]}


async def parents_succeeded(store: FirestoreStore, run_id: str) -> None:
    now = time.time()
    for parent in ("a", "b"):
        await store.claim_node(run_id, parent, 1, now, now + 60)
        await store.finish_node(run_id, parent, 1, Outcome(S.SUCCEEDED, output=parent), now)


def run_fan_in(project: str, book: Interleavings, deliveries: tuple[str, str]) -> tuple[int, ...]:
    recorder = Recorder()
    tools = counting_tools(Counter(), threading.Lock())

    def completion(parent: str) -> Callable[[], None]:
        def complete() -> None:
            run_id = book.next_run()

            async def work(store: FirestoreStore) -> None:
                await engine_for(store, tools, recorder).complete(run_id, parent, S.SUCCEEDED)
                book.note(run_id, parent, store)

            on_own_loop(project, work)

        return complete

    turns = orchestrate(*(completion(p) for p in deliveries))

    async def check(store: FirestoreStore) -> None:
        for run_id in book.used:
            child = await store.get_node(run_id, "child")
            assert child is not None and child.status == S.READY
            assert await store.get_arrival_count(run_id, "child") == 2
            readies = [m for m in recorder.sent if m == ("ready", run_id, "child")]
            assert len(readies) == 1, (run_id, recorder.sent)
            events = await store.list_events(run_id)
            assert [e.node_id for e in events if e.status == "ready"] == ["child"]

    on_own_loop(project, check)
    return turns


def test_two_parents_finishing_together_enqueue_the_child_once_in_every_interleaving(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("fanin")
    book = Interleavings(prepare(project, 36, FAN_IN, parents_succeeded))
    turns = run_fan_in(project, book, ("a", "b"))
    # a: its arrival, its count; b: its arrival, its count (full), the child's resolve.
    # Where both counts follow both arrivals, both decide: the resolve is conditional.
    assert turns == (3, 4)
    assert len(book.used) == 35  # C(7, 3) orderings


def test_a_duplicate_completion_racing_the_original_enqueues_the_child_once(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    """b's arrival is in; a's completion is delivered twice. The duplicate's arrival fails
    and it finishes the decision a crash may have cut short, racing the original."""

    async def setup(store: FirestoreStore, run_id: str) -> None:
        await parents_succeeded(store, run_id)
        assert await store.record_arrival(run_id, "child", "b") == 1

    project = unique_name("dup")
    book = Interleavings(prepare(project, 16, FAN_IN, setup))
    turns = run_fan_in(project, book, ("a", "a"))
    assert turns == (4, 2)  # arrival, count, resolve; the duplicate's refused arrival
    assert len(book.used) == 15  # C(6, 2) orderings
    assert book.conflicts >= 15  # each duplicate arrival, plus resolves that raced


WIDE = CLAIM_FROM_PARENTS
WIDE_FAN_IN = {
    "name": "wide-fan-in",
    "nodes": [
        *(const(f"p{i:02d}") for i in range(WIDE)),
        const("child", [f"p{i:02d}" for i in range(WIDE)]),
    ],
}


def test_the_last_two_arrivals_at_a_wide_child_read_its_parents_once_in_every_interleaving(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    """All but two parents of a CLAIM_FROM_PARENTS-wide child have arrived; the last two,
    each the last of its tally group, complete together. Where both counts see every arrival, `claim_decision` lets one of
    them read the parents and decide: the child is enqueued once, its parents read once."""
    parents = [f"p{i:02d}" for i in range(WIDE)]
    # Each the last of its group of TALLY_GROUP (the store counts only at a group's end).
    last_two = [parents[TALLY_GROUP - 1], parents[-1]]

    async def setup(store: FirestoreStore, run_id: str) -> None:
        now = time.time()

        async def finish(parent: str) -> None:
            await store.claim_node(run_id, parent, 1, now, now + 60)
            await store.finish_node(run_id, parent, 1, Outcome(S.SUCCEEDED, output=parent), now)

        await asyncio.gather(*(finish(p) for p in parents))
        await asyncio.gather(
            *(
                store.record_arrival(run_id, "child", p, i, WIDE)
                for i, p in enumerate(parents)
                if p not in last_two
            )
        )

    project = unique_name("wide")
    book = Interleavings(prepare(project, 57, WIDE_FAN_IN, setup))
    recorder = Recorder()
    tools = counting_tools(Counter(), threading.Lock())

    def completion(parent: str) -> Callable[[], None]:
        def complete() -> None:
            run_id = book.next_run()

            async def work(store: FirestoreStore) -> None:
                await engine_for(store, tools, recorder).complete(run_id, parent, S.SUCCEEDED)
                book.note(run_id, store.stats["reads"], store)

            on_own_loop(project, work)

        return complete

    turns = orchestrate(*(completion(p) for p in last_two))
    # the first: arrival, count; the last: arrival, count (full), claim, resolve
    assert turns == (3, 5)
    assert len(book.used) == 56  # C(8, 3) orderings

    async def check(store: FirestoreStore) -> None:
        for run_id in book.used:
            child = await store.get_node(run_id, "child")
            assert child is not None and child.status == S.READY
            readies = [m for m in recorder.sent if m == ("ready", run_id, "child")]
            assert len(readies) == 1, (run_id, recorder.sent)
            # one side read WIDE - 1 parents (the message names the other), never both
            assert sum(book.seen[run_id]) < 2 * (WIDE - 1), book.seen[run_id]

    on_own_loop(project, check)


@pytest.mark.parametrize("one_failed", [False, True], ids=["all-succeeded", "one-failed"])
def test_a_wide_child_whose_parents_all_arrived_succeeded_is_decided_without_reading_them(
    emulator_stack: Any, unique_name: Callable[[str], str], one_failed: bool
) -> None:
    """The arrivals note whether their parent succeeded: when all did, the last arrival
    decides the child on one count of them instead of reading every parent. One arrival
    that did not succeed (a parent that failed: the child's run fails with it) and the
    parents are read, as the decision then needs them."""
    parents = [f"p{i:02d}" for i in range(WIDE)]

    async def setup(store: FirestoreStore, run_id: str) -> None:
        now = time.time()
        for i, parent in enumerate(parents):
            failed = one_failed and i == 0
            outcome = (
                Outcome(S.FAILED, error=NodeError("Boom", "it broke", False))
                if failed
                else Outcome(S.SUCCEEDED, output=parent)
            )
            await store.claim_node(run_id, parent, 1, now, now + 60)
            await store.finish_node(run_id, parent, 1, outcome, now)
            if parent != parents[-1]:
                await store.record_arrival(run_id, "child", parent, i, WIDE, succeeded=not failed)

    project = unique_name("wide-ok")
    [run_id] = prepare(project, 1, WIDE_FAN_IN, setup)
    recorder = Recorder()

    async def last_arrival(store: FirestoreStore) -> tuple[int, Any]:
        engine = engine_for(store, counting_tools(Counter(), threading.Lock()), recorder)
        await engine.complete(run_id, parents[-1], S.SUCCEEDED)
        return store.stats["reads"], await store.get_node(run_id, "child")

    reads, child = on_own_loop(project, last_arrival)
    if one_failed:
        assert reads >= WIDE - 1 and child.status != S.READY
    else:  # the run's graph, the arrivals' counts, the claim, the resolve: no parent
        assert reads < WIDE - 1, reads
        assert child.status == S.READY and recorder.sent == [("ready", run_id, "child")]


# ---- the run's counts, derived from its nodes ---------------------------------------------


def test_a_run_ending_as_its_last_node_ends_reads_true_counts_in_every_interleaving(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    """The run's end stores its counts only if it counted no unfinished node: either the
    node's end came first (its counts are stored, final) or the end counted it running
    and stored none (the counts stay derived from the nodes). Never a stale copy."""
    project = unique_name("counts")

    async def one_left(store: FirestoreStore, run_id: str) -> None:
        now = time.time()
        for node_id in ("a", "b"):
            assert await store.claim_node(run_id, node_id, 1, now, now + 60)
        assert await store.finish_node(run_id, "b", 1, Outcome(S.SUCCEEDED, "b"), now)

    document = {"name": "counts", "nodes": [const("a"), const("b")]}
    book = Interleavings(prepare(project, 8, document, one_left))
    sides = itertools.count()
    lock = threading.Lock()

    def act() -> None:
        run_id = book.next_run()
        with lock:
            side = next(sides) % 2

        async def work(store: FirestoreStore) -> None:
            now = time.time()
            if side == 0:
                outcome = Outcome(S.SUCCEEDED, "a", usage=Usage(input_tokens=5, calls=1))
                done = await store.finish_node(run_id, "a", 1, outcome, now)
            else:
                done = await store.set_run_status(
                    run_id, (RunStatus.RUNNING,), RunStatus.FAILED, now
                )
            book.note(run_id, done, store)

        on_own_loop(project, work)

    orchestrate(act, act)
    assert len(book.used) >= 2
    stored = []
    for run_id in book.used:
        assert book.seen[run_id] == [True, True], run_id

        async def read(store: FirestoreStore, run_id: str = run_id) -> Any:
            raw = (await store.client.document(f"runs/{run_id}").get()).to_dict()
            return raw["counts"], await store.get_run_summary(run_id)

        raw_counts, run = on_own_loop(project, read)
        stored.append(raw_counts is not None)
        assert run.counts == {"succeeded": 2}, run_id
        assert (run.usage.input_tokens, run.usage.calls) == (5, 1), run_id
    assert True in stored and False in stored  # both orders were tried
    assert book.conflicts == 0  # a node's end never writes the run document


def test_cancelling_a_run_never_races_a_node_ending_in_any_interleaving(
    emulator_stack: Any, unique_name: Callable[[str], str]
) -> None:
    """The run's status change holds a precondition on the run document; a node's end no
    longer writes that document, so neither side ever retries, in any order."""
    project = unique_name("cancel")

    async def claim(store: FirestoreStore, run_id: str) -> None:
        now = time.time()
        assert await store.claim_node(run_id, "a", 1, now, now + 60)

    document = {"name": "cancel", "nodes": [const("a"), const("b")]}
    book = Interleavings(prepare(project, 8, document, claim))
    sides = itertools.count()
    lock = threading.Lock()

    def act() -> None:
        run_id = book.next_run()
        with lock:
            side = next(sides) % 2

        async def work(store: FirestoreStore) -> None:
            now = time.time()
            if side == 0:
                done = await store.finish_node(run_id, "a", 1, Outcome(S.SUCCEEDED, "x"), now)
            else:
                done = await store.set_run_status(
                    run_id, (RunStatus.RUNNING, RunStatus.PENDING), RunStatus.CANCELLED, now
                )
            book.note(run_id, done, store)

        on_own_loop(project, work)

    orchestrate(act, act)
    assert len(book.used) >= 2
    for run_id in book.used:
        assert book.seen[run_id] == [True, True], run_id
    assert book.conflicts == 0
