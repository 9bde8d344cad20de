"""The Store port on Firestore (`google.cloud.firestore.AsyncClient`).

The documents and their fields are described in `firestore_docs.py`; values too large
for one document (inputs and outputs up to 10 MiB: `validate.MAX_INPUT_BYTES`,
`engine.MAX_OUTPUT_BYTES`; big graph snapshots) go to chunk documents (`chunks.py`), and
every reader reassembles and verifies them transparently.

How each transition stays one atomic, conditional commit:
- A node transition reads the node and commits ONE batch: the node update with a
  `last_update_time` precondition (it applies only to the state it was decided on; else
  it re-reads and decides again), `Increment` moves of the run's `counts.<old>` /
  `counts.<new>` and usage, and its event. The run document is never read for this: the
  hot document sees blind increments only, never a read-modify-write transaction.
- Each transition writes a fresh `op` token: after an ambiguous failure (a commit the
  client retried although it had applied) the re-read recognises its own write.
- The claim remembers the node's update time, so finish / retry / partial writes of that
  attempt in the same process commit on the precondition without reading first; so does
  a resolve to `ready`, for the claim that follows it when one process serves both (the
  local runtime on Firestore). A remembered state is only ever used under the
  precondition: if anything changed the node since, the commit fails and the node is read.
- `record_arrival` is one batch of `create()` on the arrival document and `Increment(1)`
  of the child's `arrivals`; the count comes from the commit's transform result.
- `create_run` creates the node documents (batches of <= 500, concurrently), then the run
  document LAST, with create() everywhere: a run document that exists means all its nodes
  exist, and a writer finishing a half-written run never overwrites a node.
- `set_run_status` reads the run's status only and commits on the run's update time; node
  transitions keep moving that time, so it may retry, but it never locks the document.

Event order: an event's `seq` is its commit time in microseconds (the document's
create_time), so the timeline follows the database's commit order, not the writers'
clocks; events of one commit share a seq and are ordered by id. Event ids are the writer's
clock in microseconds (monotonic per process) plus a random suffix, and `list_events(after)`
reads ids from `_EVENT_WINDOW_US` before `after`, which covers clock skew and client
retries between taking the id and the commit.

Reads and writes are counted in `self.stats` in billing units (a document read; a document
write, its field transforms included) so benchmarks can report operations per node. The
lines marked SYNCPOINT are where `test_utils.orchestrate` interleaves concurrent callers:
each sits just before a commit, after the reads that commit is conditioned on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.exceptions import AlreadyExists, FailedPrecondition
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from agentgraph.backends.gcp import chunks
from agentgraph.backends.gcp import firestore_docs as docs
from agentgraph.core import names
from agentgraph.core.errors import IdempotencyConflict
from agentgraph.core.ports import Event, NodeError, NodeRecord, Outcome, RunRecord, Usage
from agentgraph.core.status import NOT_STARTED, TERMINAL_NODE, NodeStatus, RunStatus

_MAX_TRIES = 50  # precondition retries before giving up on a contended document
_BATCH_WRITES = 500  # Firestore's limit per commit
_BATCH_BYTES = 3_500_000  # under the emulator's 4 MiB request cap (production: 10 MiB)
_CANCEL_BATCH = 200  # nodes per cancel commit: node + event each, plus the run
_EVENT_WINDOW_US = 120_000_000
_STALE_LIMIT = 1000  # per kind and call; the sweeper comes back for the rest
_LEASES_KEPT = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_Lease = tuple[str, str, int]


@dataclass
class _Change:
    """What a node transition writes, decided from the state it read."""

    fields: dict[str, Any]
    event: Event | None
    moves: tuple[tuple[str, str], ...] = ()
    usage: Usage | None = None
    chunked: tuple[chunks.Chunked, ...] = ()


class _Writes:
    """A batch that counts the documents it writes (a transform rides on its document)."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.batch = client.batch()
        self.count = 0

    def create(self, ref: Any, data: dict[str, Any]) -> None:
        self.batch.create(ref, data)
        self.count += 1

    def set(self, ref: Any, data: dict[str, Any]) -> None:
        self.batch.set(ref, data)
        self.count += 1

    def update(self, ref: Any, data: dict[str, Any], option: Any = None) -> None:
        self.batch.update(ref, data, option=option)
        self.count += 1


class FirestoreStore:
    """Satisfies agentgraph.core.ports.Store. One instance per event loop (the client's gRPC
    channel belongs to the loop of its first call)."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client
        self.stats: Counter[str] = Counter()
        self._leases: OrderedDict[_Lease, tuple[Any, dict[str, Any]]] = OrderedDict()
        self._last_us = 0

    @classmethod
    def from_env(cls) -> FirestoreStore:
        """For GOOGLE_CLOUD_PROJECT and AGENTGRAPH_FIRESTORE_DATABASE; with
        FIRESTORE_EMULATOR_HOST set, anonymous credentials on the emulator."""
        project = os.environ.get(names.ENV_PROJECT) or None
        credentials = None
        if os.environ.get(names.ENV_FIRESTORE_EMULATOR):
            from google.auth.credentials import AnonymousCredentials

            if project is None:
                raise ValueError(
                    f"{names.ENV_FIRESTORE_EMULATOR} is set but {names.ENV_PROJECT} is not: "
                    "set it to the project the emulator data belongs to (every function and "
                    "test must use the same one)"
                )
            credentials = AnonymousCredentials()
        database = os.environ.get(names.ENV_FIRESTORE_DATABASE) or None
        return cls(
            firestore.AsyncClient(project=project, database=database, credentials=credentials)
        )

    # ---- references and counted I/O ----------------------------------------------------

    def _run_ref(self, run_id: str) -> Any:
        return self.client.collection(names.COLLECTION_RUNS).document(run_id)

    def _node_ref(self, run_id: str, node_id: str) -> Any:
        return self._run_ref(run_id).collection(names.COLLECTION_NODES).document(node_id)

    def _event_ref(self, run_id: str) -> Any:
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        event_id = f"{self._last_us:016d}-{secrets.token_hex(4)}"
        return self._run_ref(run_id).collection(names.COLLECTION_EVENTS).document(event_id)

    def _writes(self) -> _Writes:
        return _Writes(self.client)

    def _before_commit(self, writes: _Writes) -> None:
        """Called on the SYNCPOINT lines: where orchestrate lets another caller go first."""

    async def _commit(self, writes: _Writes) -> list[Any]:
        self.stats["commits"] += 1
        try:
            results = await writes.batch.commit()
        except (FailedPrecondition, AlreadyExists):
            self.stats["conflicts"] += 1
            raise
        self.stats["writes"] += writes.count
        return list(results)

    async def _get(self, ref: Any, field_paths: list[str] | None = None) -> Any:
        self.stats["reads"] += 1
        return await ref.get(field_paths=field_paths)

    async def _get_all(
        self, refs: Sequence[Any], field_paths: list[str] | None = None
    ) -> list[Any]:
        if not refs:
            return []
        self.stats["reads"] += len(refs)
        return [s async for s in self.client.get_all(list(refs), field_paths=field_paths)]

    async def _query(self, query: Any) -> list[Any]:
        found = [s async for s in query.stream()]
        self.stats["reads"] += max(1, len(found))  # an empty result is billed as one read
        return found

    # ---- large values ------------------------------------------------------------------

    async def _write_chunks(self, parent: Any, values: Sequence[chunks.Chunked]) -> None:
        """Chunk documents, before the document that will name them (idempotent)."""
        commits = []
        for value in values:
            pieces = list(enumerate(zip(value.ids(), value.pieces, strict=True)))
            for start in range(0, len(pieces), chunks.CHUNKS_PER_COMMIT):
                writes = self._writes()
                for index, (chunk_id, piece) in pieces[start : start + chunks.CHUNKS_PER_COMMIT]:
                    ref = parent.collection(names.COLLECTION_CHUNKS).document(chunk_id)
                    writes.set(ref, {"data": piece, "index": index, "of": len(pieces)})
                commits.append(self._commit(writes))
        await asyncio.gather(*commits)

    async def _text(self, parent: Any, data: dict[str, Any], field: str) -> str | None:
        """A JSON value's text, inline or reassembled from its chunks."""
        marker = data.get(f"{field}_ref")
        if not marker:
            text: str | None = data.get(f"{field}_json")
            return text
        ids = chunks.chunk_ids(marker["prefix"], marker["chunks"])
        refs = [parent.collection(names.COLLECTION_CHUNKS).document(i) for i in ids]
        found = {s.id: s.get("data") for s in await self._get_all(refs) if s.exists}
        return chunks.join(marker, [found[i] for i in ids if i in found], parent.path)

    async def _node(self, snap: Any) -> NodeRecord:
        data = snap.to_dict()
        return docs.node_record(
            data, chunks.loads(await self._text(snap.reference, data, "output"))
        )

    async def _run(self, snap: Any) -> RunRecord:
        data = snap.to_dict()
        fields = ("graph", "input", "outputs")
        texts = await asyncio.gather(*(self._text(snap.reference, data, f) for f in fields))
        return docs.run_record(snap.id, data, dict(zip(fields, texts, strict=True)))

    # ---- runs ------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> RunRecord:
        """Nodes first, the run document last. With an idempotency key, the key document is
        created first; if it exists, the run it names is returned (and finished, when its
        creator died half-way through writing it and this is the same request)."""
        if run.idempotency_key is not None:
            key = f"{run.owner or ''}\x00{run.idempotency_key}"
            key_ref = self.client.collection(names.COLLECTION_IDEMPOTENCY).document(
                hashlib.sha256(key.encode()).hexdigest()
            )
            writes = self._writes()
            writes.create(
                key_ref,
                {
                    "owner": run.owner,
                    "key": run.idempotency_key,
                    "run_id": run.run_id,
                    "request_hash": run.request_hash,
                    "created_at": run.created_at,
                },
            )
            try:
                await self._commit(writes)
            except AlreadyExists:
                return await self._existing_run(key_ref, run, nodes)
        await self._write_run(run, nodes)
        return run

    async def _existing_run(
        self, key_ref: Any, run: RunRecord, nodes: Sequence[NodeRecord]
    ) -> RunRecord:
        key = (await self._get(key_ref)).to_dict()
        run_id = key["run_id"]
        for delay in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8):  # its creator may still be writing
            await asyncio.sleep(delay)
            existing = await self.get_run(run_id)
            if existing is not None:
                return existing
        if key.get("request_hash") != run.request_hash:
            raise IdempotencyConflict(
                f"idempotency key {run.idempotency_key!r} names run {run_id}, which was never "
                "completely written, for a different request; use a new key"
            )
        await self._write_run(
            replace(run, run_id=run_id), [replace(n, run_id=run_id) for n in nodes]
        )
        found = await self.get_run(run_id)
        assert found is not None
        return found

    async def _write_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> None:
        run_ref = self._run_ref(run.run_id)
        texts = {"graph": chunks.dumps(run.graph), "input": chunks.dumps(run.input)}
        inline, chunked = chunks.plan(texts, docs.RUN_INPUTS_BUDGET)
        groups: list[list[tuple[Any, dict[str, Any]]]] = [[]]
        weight = 0
        for seq, node in enumerate(nodes):
            doc = docs.node_doc(node, run, seq)
            size = len(repr(doc))
            if len(groups[-1]) >= _BATCH_WRITES or weight + size > _BATCH_BYTES:
                groups.append([])
                weight = 0
            groups[-1].append((self._node_ref(run.run_id, node.node_id), doc))
            weight += size
        await asyncio.gather(
            self._write_chunks(run_ref, chunked),
            *(self._create_nodes(group) for group in groups if group),
        )
        values = docs.value_fields({**inline, "outputs": chunks.dumps(run.outputs)}, chunked)
        writes = self._writes()
        writes.create(run_ref, docs.run_doc(run, values))
        message = f"run of {run.graph_name!r} started with {len(nodes)} nodes"
        event = Event(
            run.run_id, run.created_at, "run_status", None, run.status.value, None, message
        )
        writes.create(self._event_ref(run.run_id), docs.event_doc(event))
        with contextlib.suppress(AlreadyExists):  # a writer of the same request was first
            await self._commit(writes)

    async def _create_nodes(self, group: list[tuple[Any, dict[str, Any]]]) -> None:
        """create() every node of the group; if some exist (a writer finishing the same
        run), create only the missing ones: an existing node is never overwritten."""
        for _ in range(_MAX_TRIES):
            writes = self._writes()
            for ref, doc in group:
                writes.create(ref, doc)
            try:
                await self._commit(writes)
                return
            except AlreadyExists:
                found = await self._get_all([ref for ref, _ in group], field_paths=["status"])
                present = {s.reference.path for s in found if s.exists}
                group = [(ref, doc) for ref, doc in group if ref.path not in present]
                if not group:
                    return
        raise RuntimeError(f"could not create {len(group)} node documents: kept conflicting")

    async def get_run(self, run_id: str) -> RunRecord | None:
        snap = await self._get(self._run_ref(run_id))
        return await self._run(snap) if snap.exists else None

    async def list_runs(self, owner: str | None = None, limit: int = 50) -> list[RunRecord]:
        query: Any = self.client.collection(names.COLLECTION_RUNS)
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        return list(await asyncio.gather(*(self._run(s) for s in await self._query(query))))

    async def set_run_status(
        self,
        run_id: str,
        expected: Sequence[RunStatus],
        status: RunStatus,
        now: float,
        *,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        ref = self._run_ref(run_id)
        fields: dict[str, Any] = {"status": status.value}
        if status.terminal:
            fields["finished_at"] = now
        if error is not None:
            fields["error"] = docs.capped_error(error)
        if outputs is not None:
            texts = {"outputs": chunks.dumps(outputs)}
            inline, chunked = chunks.plan(texts, docs.RUN_OUTPUTS_BUDGET)
            await self._write_chunks(ref, chunked)
            fields.update(docs.value_fields(inline, chunked))
        message = (error or {}).get("message") if error else None
        event = Event(run_id, now, "run_status", status=status.value, message=message)
        token = secrets.token_hex(8)
        for tries in range(_MAX_TRIES):
            snap = await self._get(ref, field_paths=["status", "op"])
            if not snap.exists:
                return False
            data = snap.to_dict()
            if tries and data.get("op") == token:
                return True  # our earlier commit applied; its reply was lost
            if RunStatus(data["status"]) not in expected:
                return False
            writes = self._writes()
            option = self.client.write_option(last_update_time=snap.update_time)
            writes.update(ref, {**fields, "op": token}, option=option)
            writes.create(self._event_ref(run_id), docs.event_doc(event))
            self._before_commit(writes)  # pragma: SYNCPOINT
            try:
                await self._commit(writes)
            except FailedPrecondition:
                await asyncio.sleep(random.uniform(0, 0.002 * (tries + 1)))
                continue
            return True
        raise RuntimeError(f"run {run_id}: status change kept losing to concurrent writes")

    # ---- nodes ---------------------------------------------------------------------------

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None:
        snap = await self._get(self._node_ref(run_id, node_id))
        return await self._node(snap) if snap.exists else None

    async def list_nodes(self, run_id: str) -> list[NodeRecord]:
        query = self._run_ref(run_id).collection(names.COLLECTION_NODES)
        snaps = sorted(await self._query(query), key=lambda s: s.get("seq"))
        return list(await asyncio.gather(*(self._node(s) for s in snaps)))

    async def get_outputs(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeRecord]:
        refs = [self._node_ref(run_id, n) for n in dict.fromkeys(node_ids)]
        records = await asyncio.gather(
            *(self._node(s) for s in await self._get_all(refs) if s.exists)
        )
        return {r.node_id: r for r in records}

    async def _transition(
        self,
        run_id: str,
        node_id: str,
        decide: Callable[[NodeRecord], _Change | None],
        *,
        lease: _Lease | None = None,
        keep: bool = False,
        remembered: bool = True,
    ) -> dict[str, Any] | None:
        """Decide on the node's state and commit the change on that state's update time;
        the node's fields after the change, or None when `decide` declines. `lease` names
        the attempt whose state this process remembers since its claim (`keep`: remember
        the new state; `remembered`: may start from the remembered one)."""
        ref = self._node_ref(run_id, node_id)
        known = self._leases.get(lease) if lease and remembered else None
        token = secrets.token_hex(8)
        written: set[str] = set()
        for tries in range(_MAX_TRIES):
            if known is not None:
                update_time, data = known
            else:
                snap = await self._get(ref)
                if not snap.exists:
                    return None
                update_time, data = snap.update_time, snap.to_dict()
                if tries and data.get("op") == token:
                    return self._settle(lease, keep, update_time, data)  # our commit applied
            change = decide(docs.node_record(data, chunks.loads(data.get("output_json"))))
            if change is None:
                if known is None:
                    return None
                known = None  # a remembered state is only trusted under a precondition
                continue
            fresh = [c for c in change.chunked if c.prefix not in written]
            await self._write_chunks(ref, fresh)
            written.update(c.prefix for c in fresh)
            writes = self._writes()
            option = self.client.write_option(last_update_time=update_time)
            writes.update(ref, {**change.fields, "op": token}, option=option)
            increments = docs.run_increments(change.moves, change.usage)
            if increments:
                writes.update(self._run_ref(run_id), increments)
            if change.event is not None:
                writes.create(self._event_ref(run_id), docs.event_doc(change.event))
            self._before_commit(writes)  # pragma: SYNCPOINT
            try:
                results = await self._commit(writes)
            except FailedPrecondition:
                known = None
                continue
            return self._settle(lease, keep, results[0].update_time, {**data, **change.fields})
        raise RuntimeError(f"node {run_id}/{node_id}: kept losing to concurrent writes")

    def _settle(
        self, lease: _Lease | None, keep: bool, update_time: Any, data: dict[str, Any]
    ) -> dict[str, Any]:
        if lease is not None:
            self._leases.pop(lease, None)
            if keep:
                self._leases[lease] = (update_time, data)
                while len(self._leases) > _LEASES_KEPT:
                    self._leases.popitem(last=False)
        return data

    async def claim_node(
        self, run_id: str, node_id: str, attempt: int, now: float, lease_until: float
    ) -> NodeRecord | None:
        def decide(node: NodeRecord) -> _Change | None:
            if node.attempt != attempt:
                return None
            takeover = node.status == NodeStatus.RUNNING and (node.lease_until or 0) < now
            if node.status != NodeStatus.READY and not takeover:
                return None
            fields = {
                "status": NodeStatus.RUNNING.value,
                "started_at": now,
                "lease_until": lease_until,
                "updated_at": now,
                "executions": node.executions + 1,
            }
            message = "lease expired; taken over" if takeover else None
            event = Event(run_id, now, "node_status", node_id, "running", attempt, message)
            moves = () if takeover else ((NodeStatus.READY.value, NodeStatus.RUNNING.value),)
            return _Change(fields, event, moves)

        lease = (run_id, node_id, attempt)
        data = await self._transition(run_id, node_id, decide, lease=lease, keep=True)
        return None if data is None else docs.node_record(data)

    async def finish_node(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        text = chunks.dumps(outcome.output)
        error = docs.error_doc(outcome.error)

        def decide(node: NodeRecord) -> _Change | None:
            if node.status != NodeStatus.RUNNING or node.attempt != attempt:
                return None
            rest = chunks.size(chunks.dumps([node.parents, node.children, error, node.model]))
            inline, chunked = chunks.plan({"output": text}, docs.NODE_BUDGET - rest)
            fields = {
                "status": outcome.status.value,
                "error": error,
                "usage": (node.usage + outcome.usage).to_dict(),
                "model": outcome.model,
                "finished_at": now,
                "duration_ms": int((now - (node.started_at or now)) * 1000),
                "lease_until": None,
                "partial": None,
                "updated_at": now,
                **docs.value_fields(inline, chunked),
            }
            failure = outcome.error
            message = f"{failure.type}: {failure.message}" if failure else None
            status = outcome.status.value
            event = Event(run_id, now, "node_status", node_id, status, attempt, message)
            moves = ((NodeStatus.RUNNING.value, status),)
            return _Change(fields, event, moves, outcome.usage, tuple(chunked))

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
        spent = usage or Usage()

        def decide(node: NodeRecord) -> _Change | None:
            if node.status != NodeStatus.RUNNING or node.attempt != attempt:
                return None
            fields = {
                "status": NodeStatus.RETRYING.value,
                "error": docs.error_doc(error),
                "next_attempt_at": next_attempt_at,
                "lease_until": None,
                "partial": None,
                "usage": (node.usage + spent).to_dict(),
                "updated_at": now,
            }
            message = (
                f"attempt {attempt} failed ({error.type}: {error.message}); "
                f"attempt {attempt + 1} in {max(0.0, next_attempt_at - now):.2f}s"
            )
            event = Event(run_id, now, "retry", node_id, "retrying", attempt, message)
            moves = ((NodeStatus.RUNNING.value, NodeStatus.RETRYING.value),)
            return _Change(fields, event, moves, spent)

        lease = (run_id, node_id, attempt)
        return await self._transition(run_id, node_id, decide, lease=lease) is not None

    async def requeue_node(self, run_id: str, node_id: str, attempt: int, now: float) -> bool:
        def decide(node: NodeRecord) -> _Change | None:
            if node.status != NodeStatus.RETRYING or node.attempt != attempt - 1:
                return None
            fields = {
                "status": "ready",
                "attempt": attempt,
                "next_attempt_at": None,
                "updated_at": now,
            }
            event = Event(run_id, now, "node_status", node_id, "ready", attempt)
            return _Change(fields, event, ((NodeStatus.RETRYING.value, NodeStatus.READY.value),))

        return await self._transition(run_id, node_id, decide) is not None

    async def record_arrival(self, run_id: str, child_id: str, parent_id: str) -> int | None:
        """One commit: create() of the edge's arrival document (the once-per-edge
        precondition) and Increment(1) of the child's count, read from the transform."""
        child = self._node_ref(run_id, child_id)
        writes = self._writes()
        arrival = child.collection(names.COLLECTION_ARRIVALS).document(parent_id)
        writes.create(arrival, {"parent": parent_id, "at": time.time()})
        writes.update(child, {"arrivals": firestore.Increment(1)})
        self._before_commit(writes)  # pragma: SYNCPOINT
        try:
            results = await self._commit(writes)
        except AlreadyExists:
            return None
        return int(results[1].transform_results[0].integer_value)

    async def resolve_node(
        self,
        run_id: str,
        node_id: str,
        status: NodeStatus,
        now: float,
        *,
        reason: str | None = None,
        expected: Sequence[NodeStatus] = (NodeStatus.WAITING,),
    ) -> bool:
        def decide(node: NodeRecord) -> _Change | None:
            if node.status not in expected:
                return None
            fields: dict[str, Any] = {
                "status": status.value,
                "lease_until": None,
                "updated_at": now,
            }
            if status == NodeStatus.FAILED:
                failure = NodeError("ConditionError", reason or "failed", False, None, node.attempt)
                fields["error"] = docs.error_doc(failure)
            elif reason is not None:
                fields["skip_reason"] = reason
            if status in TERMINAL_NODE:
                fields["finished_at"] = now
            event = Event(run_id, now, "node_status", node_id, status.value, node.attempt, reason)
            attempts.append(node.attempt)
            return _Change(fields, event, ((node.status.value, status.value),))

        attempts: list[int] = []
        if status != NodeStatus.READY:
            return await self._transition(run_id, node_id, decide) is not None
        # A node made ready is claimed next, often by this process (one runtime serving
        # both messages): remember the state written here so that claim can commit on its
        # precondition without reading the node first (a stale memory only costs a read).
        unknown = (run_id, node_id, 0)  # attempts start at 1: a key no claim uses
        data = await self._transition(run_id, node_id, decide, lease=unknown, keep=True)
        remembered = self._leases.pop(unknown, None)
        if data is None:
            return False
        if remembered is not None:
            self._settle((run_id, node_id, attempts[-1]), True, *remembered)
        return True

    async def cancel_not_started(self, run_id: str, now: float) -> list[str]:
        """Batches of nodes, each one commit with a precondition per node; a batch that
        meets a concurrent change (a claim) is read and decided again."""
        query = (
            self._run_ref(run_id)
            .collection(names.COLLECTION_NODES)
            .where(filter=FieldFilter("status", "in", sorted(s.value for s in NOT_STARTED)))
            .select(["status", "seq", "skip_reason"])
        )
        done: list[tuple[int, str]] = []
        for _ in range(_MAX_TRIES):
            snaps = sorted(await self._query(query), key=lambda s: s.get("seq"))
            groups = [snaps[i : i + _CANCEL_BATCH] for i in range(0, len(snaps), _CANCEL_BATCH)]
            results = await asyncio.gather(
                *(self._cancel_group(run_id, g, now) for g in groups), return_exceptions=True
            )
            for group, result in zip(groups, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, FailedPrecondition):
                    raise result
                if result is None:
                    done.extend((s.get("seq"), s.id) for s in group)
            if all(r is None for r in results):
                return [node_id for _, node_id in sorted(done)]
        raise RuntimeError(f"run {run_id}: cancelling kept losing to concurrent writes")

    async def _cancel_group(self, run_id: str, group: list[Any], now: float) -> None:
        writes = self._writes()
        moves = []
        for snap in group:
            data = snap.to_dict()
            fields = {
                "status": NodeStatus.CANCELLED.value,
                "finished_at": now,
                "updated_at": now,
                "skip_reason": data.get("skip_reason") or "run_ended",
            }
            option = self.client.write_option(last_update_time=snap.update_time)
            writes.update(snap.reference, fields, option=option)
            moves.append((data["status"], NodeStatus.CANCELLED.value))
            event = Event(run_id, now, "node_status", snap.id, NodeStatus.CANCELLED.value)
            writes.create(self._event_ref(run_id), docs.event_doc(event))
        writes.update(self._run_ref(run_id), docs.run_increments(moves, None))
        self._before_commit(writes)  # pragma: SYNCPOINT
        await self._commit(writes)

    async def set_partial(self, run_id: str, node_id: str, attempt: int, text: str) -> None:
        def decide(node: NodeRecord) -> _Change | None:
            if node.status != NodeStatus.RUNNING or node.attempt != attempt:
                return None
            return _Change({"partial": docs.cap(text, docs.PARTIAL_CAP)}, None)

        lease = (run_id, node_id, attempt)
        await self._transition(run_id, node_id, decide, lease=lease, keep=True)

    # ---- events and recovery -------------------------------------------------------------

    async def append_event(self, event: Event) -> None:
        writes = self._writes()
        writes.create(self._event_ref(event.run_id), docs.event_doc(event))
        await self._commit(writes)

    async def list_events(self, run_id: str, after: int | None = None) -> list[Event]:
        query: Any = self._run_ref(run_id).collection(names.COLLECTION_EVENTS)
        if after is not None:
            start = query.document(f"{max(0, after - _EVENT_WINDOW_US):016d}")
            query = query.where(filter=FieldFilter(FieldPath.document_id(), ">=", start))
        found = []
        for snap in await self._query(query):
            seq = (snap.create_time - _EPOCH) // timedelta(microseconds=1)
            if after is None or seq > after:
                found.append((seq, snap.id, docs.event_record(run_id, snap.to_dict(), seq)))
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


def _under_runs(snap: Any) -> bool:
    """A `nodes` document of a run (the collection group would match any `nodes`)."""
    run = snap.reference.parent.parent
    return run is not None and run.parent.id == names.COLLECTION_RUNS
