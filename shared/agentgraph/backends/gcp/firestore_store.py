"""The Store port on Firestore (`google.cloud.firestore.AsyncClient`).

The documents and their fields are described in `firestore_docs.py`; references, counted
I/O and chunked values are in `firestore_io.py`; creating runs and changing a run's status
in `firestore_runs.py`. This module holds the node transitions, the arrivals, the
timeline and the sweeper's query. It holds no rule of the state machine: every transition
reads the node, asks `core.transitions` what to do, and persists the answer.

How each transition stays one atomic, conditional commit:
- A node transition reads the node and commits ONE batch: the node update with a
  `last_update_time` precondition (it applies only to the state it was decided on; else
  it re-reads and decides again, `contention.until_settled`), and its event when it has
  one. Nothing else: no transition writes the run document or any counter (the run's
  counts and usage are derived from the node documents, `firestore_io._aggregate`), so a
  busy run has no hot document, and finishing or cancelling it does not race node
  transitions for its update time.
- Each transition writes a fresh `op` token: after an ambiguous failure (a commit the
  client retried although it had applied) the re-read recognises its own write.
- The claim remembers the node's update time, so finish / retry / partial writes of that
  attempt in the same process commit on the precondition without reading first; so does
  a resolve to `ready`, for the claim that follows it when one process serves both (the
  local runtime on Firestore). A remembered state is only ever used under the
  precondition: if anything changed the node since, the commit fails and the node is read.
- `record_arrival` is one `create()` of the edge's arrival document, then a `count()`
  of the child's arrival documents: the child's own document is never written per
  arrival, so a 1,000-parent child is no hot document. The aggregation is strongly
  consistent, so the last arrival to commit sees the full count; arrivals racing may
  each see it, and `claim_decision` lets one of them read the parents. The arrivals of
  one process at one child share counts (`_count_after`): one in flight at a time. A
  child with more than TALLY_GROUP parents also tallies them in groups, in the same
  commit, and only the last arrival of each group counts.

Event order: an event's `seq` is its commit time in microseconds (the document's
create_time), so the timeline follows the database's commit order, not the writers'
clocks; events of one commit share a seq and are ordered by id. The three lines of every
node's success path (made ready, started, succeeded: `firestore_docs.quiet`) are no
documents: they
ride in the transition's node write, in the node's `quiet` map, stamped with the commit's
server time, and `list_events` merges them in by that time. `list_events(after)`
reads ids from `_EVENT_WINDOW_US` before `after`, which covers clock skew and client
retries between taking the id and the commit.

The lines marked SYNCPOINT are where `test_utils.orchestrate` interleaves concurrent
callers: each sits just before a commit, after the reads that commit is conditioned on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.exceptions import AlreadyExists, FailedPrecondition
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from agentgraph.backends.gcp import chunks
from agentgraph.backends.gcp import firestore_docs as docs
from agentgraph.backends.gcp.contention import TryAgain, until_settled
from agentgraph.backends.gcp.firestore_io import doc_id
from agentgraph.backends.gcp.firestore_redrive import RedriveWrites
from agentgraph.backends.gcp.firestore_runs import RunWrites
from agentgraph.backends.gcp.firestore_steps import StepWrites
from agentgraph.core import names, transitions
from agentgraph.core.lru import Lru
from agentgraph.core.records import (
    Event,
    NodeError,
    NodePage,
    NodeRecord,
    NodeState,
    Outcome,
    RunRecord,
    Usage,
)
from agentgraph.core.status import NOT_STARTED, NodeStatus, RunStatus
from agentgraph.core.transitions import Change

_CANCEL_BATCH = 200  # nodes per cancel commit: node + event each
_INSTANCE_BATCH = 400  # instances per commit (and one write of the run: their counts)
_EVENT_WINDOW_US = 120_000_000
_STALE_LIMIT = 1000  # per kind and call; the sweeper comes back for the rest
_LEASES_KEPT = 4096
_LEASE_BYTES = 64 * 1024 * 1024  # remembered states hold streamed partial text
_STATE_FIELDS = ["node_id", "status", "skip_reason"]  # `get_statuses`' field mask
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DECIDABLE = (NodeStatus.WAITING.value, NodeStatus.EXPANDED.value)  # by their arrivals
# A wide child's arrivals are tallied in groups of this many parents (one tally document
# each, so at most this many writes each); only the last of a group counts them all.
TALLY_GROUP = 4

_Lease = tuple[str, str, int]
_Known = tuple[Any, dict[str, Any]]  # a node's update time and its fields at that time


def _known_size(known: _Known) -> int:
    data = known[1]
    return 512 + sum(len(data.get(f) or "") for f in ("output_json", "partial"))


class FirestoreStore(RunWrites, StepWrites, RedriveWrites):
    """Satisfies agentgraph.core.ports.Store. One instance per event loop (the client's gRPC
    channel belongs to the loop of its first call)."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        super().__init__(client)
        self._leases: Lru[_Lease, _Known] = Lru(_LEASES_KEPT, _LEASE_BYTES, _known_size)
        self._counting: dict[str, _Counting] = {}  # arrival counts in flight, by child
        self._claiming: set[str] = set()  # nodes whose decision this process is claiming

    # ---- nodes ---------------------------------------------------------------------------

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None:
        snap = await self._get(self._node_ref(run_id, node_id))
        return await self._node(snap) if snap.exists else None

    async def list_nodes(self, run_id: str) -> list[NodeRecord]:
        query = self._run_ref(run_id).collection(names.COLLECTION_NODES)
        snaps = sorted(await self._query(query), key=lambda s: s.get("seq"))
        return list(await asyncio.gather(*(self._node(s) for s in snaps)))

    async def list_nodes_page(
        self, run_id: str, *, limit: int, after: int | None = None
    ) -> NodePage:
        query: Any = self._run_ref(run_id).collection(names.COLLECTION_NODES).order_by("seq")
        if after is not None:
            query = query.where(filter=FieldFilter("seq", ">", after))
        snaps = await self._query(query.limit(limit + 1))  # one more: is there a next page
        page = snaps[:limit]
        nodes = list(await asyncio.gather(*(self._node(s) for s in page)))
        return NodePage(nodes, int(page[-1].get("seq")) if len(snaps) > limit else None)

    async def get_outputs(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeRecord]:
        refs = [self._node_ref(run_id, n) for n in dict.fromkeys(node_ids)]
        records = await asyncio.gather(
            *(self._node(s) for s in await self._get_all(refs) if s.exists)
        )
        return {r.node_id: r for r in records}

    async def get_statuses(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeState]:
        """One read a node, of three fields (a field mask): no output, no chunk."""
        refs = [self._node_ref(run_id, n) for n in dict.fromkeys(node_ids)]
        states: dict[str, NodeState] = {}
        for snap in await self._get_all(refs, field_paths=_STATE_FIELDS):
            if snap.exists:
                data = snap.to_dict()
                states[data["node_id"]] = NodeState(
                    NodeStatus(data["status"]), data.get("skip_reason")
                )
        return states

    async def _transition(
        self,
        run_id: str,
        node_id: str,
        decide: Callable[[NodeRecord], Change | None],
        *,
        lease: _Lease | None = None,
        keep: bool = False,
    ) -> dict[str, Any] | None:
        """Decide on the node's state and commit the change on that state's update time;
        the node's fields after the change, or None when `decide` declines. `lease` names
        the attempt whose state this process remembers since its claim, and may start
        from (`keep`: remember the new state)."""
        ref = self._node_ref(run_id, node_id)
        known = self._leases.get(lease) if lease else None
        token = secrets.token_hex(8)
        written: set[str] = set()

        async def attempt(tries: int) -> dict[str, Any] | None:
            nonlocal known
            if known is not None:
                update_time, data = known
            else:
                snap = await self._get(ref)
                if not snap.exists:
                    return None
                update_time, data = snap.update_time, snap.to_dict()
                if tries and data.get("op") == token:
                    return self._settle(lease, keep, update_time, data)  # our commit applied
            node = docs.node_record(data, chunks.loads(data.get("output_json")))
            change = decide(node)
            if change is None:
                if known is None:
                    return None
                known = None  # a remembered state is only trusted under a precondition
                raise TryAgain
            fields, chunked = docs.change_fields(node, change)
            fresh = [c for c in chunked if c.prefix not in written]
            await self._write_chunks(ref, fresh)
            written.update(c.prefix for c in fresh)
            writes = self._writes()
            option = self.client.write_option(last_update_time=update_time)
            event = change.event
            timeline = docs.quiet_fields(event, token) if event and docs.quiet(event) else {}
            writes.update(ref, {**fields, **timeline, "op": token}, option=option)
            if event is not None and not timeline:
                writes.create(self._event_ref(run_id), docs.event_doc(event))
            self._before_commit(writes)  # pragma: SYNCPOINT
            try:
                results = await self._commit(writes)
            except FailedPrecondition:
                known = None
                raise
            return self._settle(lease, keep, results[0].update_time, {**data, **fields})

        return await until_settled(attempt, f"node {run_id}/{node_id}")

    def _settle(
        self, lease: _Lease | None, keep: bool, update_time: Any, data: dict[str, Any]
    ) -> dict[str, Any]:
        if lease is not None:
            self._leases.pop(lease)
            if keep:
                self._leases.put(lease, (update_time, data))
        return data

    async def claim_node(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        now: float,
        lease_until: float,
        max_takeovers: int = transitions.DEFAULT_MAX_TAKEOVERS,
    ) -> NodeRecord | None:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.claim(node, attempt, now, lease_until, max_takeovers)

        lease = (run_id, node_id, attempt)
        data = await self._transition(run_id, node_id, decide, lease=lease, keep=True)
        return None if data is None else docs.node_record(data)

    async def finish_node(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.finish(node, attempt, outcome, now)

        lease = (run_id, node_id, attempt)
        return await self._transition(run_id, node_id, decide, lease=lease) is not None

    async def schedule_retry(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        error: NodeError,
        next_attempt_at: float,
        now: float,
        usage: Usage | None = None,
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.schedule_retry(node, attempt, error, next_attempt_at, now, usage)

        lease = (run_id, node_id, attempt)
        return await self._transition(run_id, node_id, decide, lease=lease) is not None

    async def requeue_node(self, run_id: str, node_id: str, attempt: int, now: float) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.requeue(node, attempt, now)

        return await self._transition(run_id, node_id, decide) is not None

    async def record_arrival(
        self,
        run_id: str,
        child_id: str,
        parent_id: str,
        position: int | None = None,
        of: int | None = None,
        succeeded: bool = False,
    ) -> int | None:
        """create() of the edge's arrival document (the once-per-edge precondition; `ok`
        notes `succeeded`), then the count of the child's arrivals (see the module
        docstring).

        A child waiting for more than TALLY_GROUP arrivals, told this one's `position`,
        also increments its group's tally in the same commit, and only the arrival that
        brings the tally to the group's size counts: the last arrival of all is the last
        of its group, so it still sees every arrival, and a 1,000-parent fan-in makes
        ~250 counts instead of 1,000. A tally only ever over-counts (a redrive deletes
        arrivals, not tallies), which costs a count, never a missed one."""
        child = self._node_ref(run_id, child_id)
        arrivals = child.collection(names.COLLECTION_ARRIVALS)
        writes = self._writes()
        writes.create(
            arrivals.document(doc_id(parent_id)),
            {"parent": parent_id, "at": time.time(), "ok": succeeded},
        )
        size = 0
        if position is not None and of is not None and of > TALLY_GROUP:
            group = position // TALLY_GROUP
            size = min(TALLY_GROUP, of - group * TALLY_GROUP)
            tally = child.collection(names.COLLECTION_TALLIES).document(str(group))
            writes.set(tally, {"n": firestore.Increment(1)}, merge=True)
        self._before_commit(writes)  # pragma: SYNCPOINT
        try:
            results = await self._commit(writes)
        except AlreadyExists:
            return None
        if size:
            tallied = int(results[1].transform_results[0].integer_value)
            if tallied < size:  # not the last of its group: not the last of all
                return tallied  # below size, so below `of`
        # Others may commit their arrivals between this commit and the count. (The
        # syncpoint is on a line of its own: an `await` line is traced at every resume.)
        self._before_commit(writes)  # pragma: SYNCPOINT
        return await self._count_after(arrivals)

    async def get_arrival_count(self, run_id: str, node_id: str) -> int:
        ref = self._node_ref(run_id, node_id)
        return await self._count_arrivals(ref.collection(names.COLLECTION_ARRIVALS))

    async def count_succeeded_arrivals(self, run_id: str, node_id: str) -> int:
        """A `count()` of the arrivals with `ok` true (arrival documents written before
        `ok` existed are not counted, so they are read the old way)."""
        arrivals = self._node_ref(run_id, node_id).collection(names.COLLECTION_ARRIVALS)
        return await self._count_arrivals(arrivals.where(filter=FieldFilter("ok", "==", True)))

    async def _count_after(self, arrivals: Any) -> int:
        """A count of `arrivals` sent after this call, shared: a burst of arrivals at one
        child in this process needs no count each. One count per child is in flight at
        a time; the arrivals that commit meanwhile wait for the next one, which starts
        after they called, so it includes them (and everything committed before)."""
        key = arrivals.parent.path
        state = self._counting.get(key)
        if state is None:
            state = self._counting[key] = _Counting()
        if state.next is None:
            state.next = asyncio.get_running_loop().create_future()
        future = state.next
        if state.task is None:
            state.task = asyncio.ensure_future(self._send_counts(key, arrivals, state))
        return await asyncio.shield(future)

    async def _send_counts(self, key: str, arrivals: Any, state: _Counting) -> None:
        try:
            while state.next is not None:
                future, state.next = state.next, None
                try:
                    future.set_result(await self._count_arrivals(arrivals))
                except Exception as exc:  # every caller waiting for this count gets it
                    future.set_exception(exc)
        finally:
            state.task = None
            self._counting.pop(key, None)

    async def _count_arrivals(self, arrivals: Any) -> int:
        """A `count()` aggregation: billed one read per 1,000 index entries counted."""
        result = await arrivals.count(alias="n").get()
        count = int(result[0][0].value)
        self.stats["reads"] += max(1, -(-count // 1000))
        return count

    async def claim_decision(self, run_id: str, node_id: str) -> bool:
        """One read, then a write of `deciding` (the status and `updated_at` claimed) on
        the update time read. A claim of the same state is already there for a caller
        that read after the winner's write; of callers that read before it, only one
        commits. Every transition sets `updated_at`, so a node redriven back to waiting
        is claimed afresh. While this process has a claim of the node in flight, its
        other callers lose at once (that claim wins, or someone else's did)."""
        ref = self._node_ref(run_id, node_id)
        if ref.path in self._claiming:
            return False
        self._claiming.add(ref.path)
        try:
            return await self._claim(ref)
        finally:
            self._claiming.discard(ref.path)

    async def _claim(self, ref: Any) -> bool:
        snap = await self._get(ref, field_paths=["status", "updated_at", "deciding"])
        if not snap.exists:
            return False
        data = snap.to_dict()
        state = {"status": data.get("status"), "updated_at": data.get("updated_at")}
        if state["status"] not in _DECIDABLE or data.get("deciding") == state:
            return False
        writes = self._writes()
        option = self.client.write_option(last_update_time=snap.update_time)
        writes.update(ref, {"deciding": state}, option=option)
        self._before_commit(writes)  # pragma: SYNCPOINT
        try:
            await self._commit(writes)
        except FailedPrecondition:
            return False
        return True

    async def resolve_node(
        self,
        run_id: str,
        node_id: str,
        status: NodeStatus,
        now: float,
        *,
        reason: str | None = None,
        expected: Sequence[NodeStatus] = (NodeStatus.WAITING,),
        while_run_ended: bool = False,
    ) -> bool:
        attempts: list[int] = []

        def decide(node: NodeRecord) -> Change | None:
            change = transitions.resolve(node, status, now, reason, expected)
            if change is not None:
                attempts.append(change.attempt)
            return change

        if while_run_ended:
            return await self._resolve_while_run_ended(run_id, node_id, decide)

        if status != NodeStatus.READY:
            return await self._transition(run_id, node_id, decide) is not None
        # A node made ready is claimed next, often by this process (one runtime serving
        # both messages): remember the state written here so that claim can commit on its
        # precondition without reading the node first (a stale memory only costs a read).
        unknown = (run_id, node_id, 0)  # attempts start at 1: a key no claim uses
        data = await self._transition(run_id, node_id, decide, lease=unknown, keep=True)
        remembered = self._leases.pop(unknown)
        if data is None:
            return False
        if remembered is not None:
            self._settle((run_id, node_id, attempts[-1]), True, *remembered)
        return True

    async def _resolve_while_run_ended(
        self, run_id: str, node_id: str, decide: Callable[[NodeRecord], Change | None]
    ) -> bool:
        """A transaction that reads the run's status with the node: a redrive writing the
        run meanwhile makes it fail and be tried again, and the retry sees the run
        running. (The update-time precondition of `_transition` can only guard the
        document it writes.) Rare: only a message for a run that has ended comes here."""
        run_ref, node_ref = self._run_ref(run_id), self._node_ref(run_id, node_id)
        events = self._event_ref(run_id)

        @firestore.async_transactional  # type: ignore[untyped-decorator]
        async def resolve_in(transaction: Any) -> bool:
            self.stats["reads"] += 2
            run = await run_ref.get(field_paths=["status"], transaction=transaction)
            if not run.exists or not RunStatus(run.get("status")).terminal:
                return False
            snap = await node_ref.get(transaction=transaction)
            if not snap.exists:
                return False
            node = docs.node_record(snap.to_dict())
            change = decide(node)
            if change is None:
                return False
            fields, chunked = docs.change_fields(node, change)
            assert not chunked, "a resolved node writes no output"
            transaction.update(node_ref, fields)
            if change.event is not None:
                transaction.create(events, docs.event_doc(change.event))
            return True

        self.stats["commits"] += 1
        resolved: bool = await resolve_in(self.client.transaction())
        return resolved

    async def cancel_not_started(self, run_id: str, now: float) -> list[str]:
        """Batches of nodes, each one commit with a precondition per node; a batch that
        meets a concurrent change (a claim) is read and decided again."""
        query = (
            self._run_ref(run_id)
            .collection(names.COLLECTION_NODES)
            .where(filter=FieldFilter("status", "in", sorted(s.value for s in NOT_STARTED)))
            .select(["run_id", "node_id", "status", "attempt", "seq", "skip_reason"])
        )
        done: list[tuple[int, str]] = []

        async def attempt(_: int) -> list[str]:
            snaps = sorted(await self._query(query), key=lambda s: s.get("seq"))
            groups = [snaps[i : i + _CANCEL_BATCH] for i in range(0, len(snaps), _CANCEL_BATCH)]
            results = await asyncio.gather(
                *(self._cancel_group(run_id, g, now) for g in groups), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    if not isinstance(result, FailedPrecondition):
                        raise result
                else:
                    done.extend(result)
            if any(isinstance(r, BaseException) for r in results):
                raise TryAgain
            return [node_id for _, node_id in sorted(done)]

        return await until_settled(attempt, f"run {run_id}: cancelling")

    async def _cancel_group(
        self, run_id: str, group: list[Any], now: float
    ) -> list[tuple[int, str]]:
        """One commit for the group's nodes (those the decision cancels); their seq and id."""
        writes = self._writes()
        cancelled = []
        for snap in group:
            node = docs.node_record(snap.to_dict())
            change = transitions.cancel(node, now)
            if change is None:
                continue
            fields, _ = docs.change_fields(node, change)
            option = self.client.write_option(last_update_time=snap.update_time)
            writes.update(snap.reference, fields, option=option)
            if change.event is not None:
                writes.create(self._event_ref(run_id), docs.event_doc(change.event))
            cancelled.append((snap.get("seq"), snap.get("node_id")))
        if not cancelled:
            return []
        self._before_commit(writes)  # pragma: SYNCPOINT
        await self._commit(writes)
        return cancelled

    async def add_instances(self, run_id: str, records: Sequence[NodeRecord], now: float) -> int:
        """Commits of up to `_INSTANCE_BATCH` create()s, each with the run's node_count
        incremented by exactly what it creates (their statuses count as every node's do): a commit applies whole or not
        at all, so the counts stay true. A commit that meets an existing instance (a
        repeated expansion) fails as a whole; the missing ones are then created alone."""
        if not records:
            return 0
        snap = await self._get(self._run_ref(run_id), field_paths=["owner"])
        if not snap.exists:
            return 0
        owner = snap.to_dict().get("owner")
        run = RunRecord(run_id, "", {}, None, RunStatus.RUNNING, now, 0, owner=owner)
        base = int(now * 1000) * 100_000  # after the graph's nodes (0...), in creation order
        docs_ = [
            (self._node_ref(run_id, r.node_id), r.status.value, docs.node_doc(r, run, base + i))
            for i, r in enumerate(records)
        ]
        for doc in docs_:
            doc[2]["updated_at"] = now
        groups = [docs_[i : i + _INSTANCE_BATCH] for i in range(0, len(docs_), _INSTANCE_BATCH)]
        counts = await asyncio.gather(*(self._create_instances(run_id, g) for g in groups))
        return sum(counts)

    async def _create_instances(self, run_id: str, group: list[tuple[Any, str, Any]]) -> int:
        missing = list(group)
        created = 0

        async def attempt(_: int) -> int:
            nonlocal missing, created
            if not missing:
                return created
            writes = self._writes()
            tally: dict[str, int] = {}
            for ref, status, doc in missing:
                writes.create(ref, doc)
                tally[status] = tally.get(status, 0) + 1
            writes.update(self._run_ref(run_id), docs.instance_increments(tally))
            self._before_commit(writes)  # pragma: SYNCPOINT
            try:
                await self._commit(writes)
            except AlreadyExists:
                found = await self._get_all([ref for ref, _, _ in missing], field_paths=["status"])
                present = {s.reference.path for s in found if s.exists}
                missing = [m for m in missing if m[0].path not in present]
                if missing:
                    raise TryAgain from None
                return created
            created += len(missing)
            return created

        return await until_settled(attempt, f"run {run_id}: adding {len(group)} instances")

    async def expand_node(
        self, run_id: str, node_id: str, attempt: int, expect: int, now: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.expand(node, attempt, expect, now)

        lease = (run_id, node_id, attempt)
        return await self._transition(run_id, node_id, decide, lease=lease) is not None

    async def settle_node(self, run_id: str, node_id: str, outcome: Outcome, now: float) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.settle(node, outcome, now)

        return await self._transition(run_id, node_id, decide) is not None

    async def renew_lease(
        self, run_id: str, node_id: str, attempt: int, lease_until: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.renew(node, attempt, lease_until)

        lease = (run_id, node_id, attempt)
        return await self._transition(run_id, node_id, decide, lease=lease, keep=True) is not None

    async def set_partial(self, run_id: str, node_id: str, attempt: int, text: str) -> None:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.set_partial(node, attempt, text)

        lease = (run_id, node_id, attempt)
        await self._transition(run_id, node_id, decide, lease=lease, keep=True)

    # ---- human approval ------------------------------------------------------------------

    async def await_approval(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        pending: Any,
        deadline: float,
        now: float,
        usage: Usage | None = None,
        model: str | None = None,
        message: str | None = None,
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.await_approval(
                node, attempt, pending, deadline, now, usage, model, message
            )

        lease = (run_id, node_id, attempt)
        return await self._transition(run_id, node_id, decide, lease=lease) is not None

    async def decide_approval(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        def decide(node: NodeRecord) -> Change | None:
            return transitions.decide_approval(node, attempt, outcome, now)

        return await self._transition(run_id, node_id, decide) is not None

    # ---- events and recovery -------------------------------------------------------------

    async def append_event(self, event: Event) -> None:
        writes = self._writes()
        writes.create(self._event_ref(event.run_id), docs.event_doc(event))
        await self._commit(writes)

    async def list_events(self, run_id: str, after: int | None = None) -> list[Event]:
        """The event documents, and the quiet events kept on the nodes (a node made ready,
        started or succeeded: `firestore_docs.quiet`), merged in order. With `after`, only the nodes
        whose latest quiet event is at most `_EVENT_WINDOW_US` older are read."""
        query: Any = self._run_ref(run_id).collection(names.COLLECTION_EVENTS)
        nodes: Any = self._run_ref(run_id).collection(names.COLLECTION_NODES)
        since = _EPOCH
        if after is not None:
            start = query.document(f"{max(0, after - _EVENT_WINDOW_US):016d}")
            query = query.where(filter=FieldFilter(FieldPath.document_id(), ">=", start))
            since = _EPOCH + timedelta(microseconds=max(0, after - _EVENT_WINDOW_US))
        nodes = nodes.where(filter=FieldFilter("quiet_at", ">=", since)).select(["quiet"])
        snaps, quiet = await asyncio.gather(self._query(query), self._query(nodes))
        found = []
        for snap in snaps:
            seq = (snap.create_time - _EPOCH) // timedelta(microseconds=1)
            if after is None or seq > after:
                found.append((seq, snap.id, docs.event_record(run_id, snap.to_dict(), seq)))
        for snap in quiet:
            for seq, key, event in docs.quiet_events(run_id, snap.to_dict()):
                if after is None or seq > after:
                    found.append((seq, f"{snap.id}~{key}", event))
        return [event for _, _, event in sorted(found, key=lambda f: (f[0], f[1]))]

    async def stale_nodes(self, now: float, grace_s: float) -> list[NodeRecord]:
        """Three collection-group queries (composite indexes on `nodes`: status +
        lease_until, status + next_attempt_at, status + updated_at), then only the nodes
        of runs still running (one projected read per run)."""
        group = self.client.collection_group(names.COLLECTION_NODES)
        kinds = (
            (NodeStatus.RUNNING, "lease_until", now),
            (NodeStatus.RETRYING, "next_attempt_at", now - grace_s),
            (NodeStatus.READY, "updated_at", now - grace_s),
            # a lost approval timeout (same index as retrying: status + next_attempt_at)
            (NodeStatus.WAITING_APPROVAL, "next_attempt_at", now - grace_s),
        )
        queries = [
            group.where(filter=FieldFilter("status", "==", status.value))
            .where(filter=FieldFilter(field, "<", bound))
            .limit(_STALE_LIMIT)
            for status, field, bound in kinds
        ]
        found = await asyncio.gather(*(self._query(q) for q in queries))
        snaps = [s for result in found for s in result if _under_runs(s)]
        run_refs = {s.reference.parent.parent.path: s.reference.parent.parent for s in snaps}
        runs = await self._get_all(list(run_refs.values()), field_paths=["status"])
        running = {r.id for r in runs if r.exists and r.get("status") == RunStatus.RUNNING.value}
        return [docs.node_record(s.to_dict()) for s in snaps if s.get("run_id") in running]


@dataclass
class _Counting:
    """A child's arrival count in flight in this process, and the next one's waiters."""

    task: asyncio.Future[None] | None = None
    next: asyncio.Future[int] | None = None


def _under_runs(snap: Any) -> bool:
    """A `nodes` document of a run (the collection group would match any `nodes`)."""
    run = snap.reference.parent.parent
    return run is not None and run.parent.id == names.COLLECTION_RUNS
