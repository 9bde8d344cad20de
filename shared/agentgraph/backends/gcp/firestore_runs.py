"""Runs on Firestore: creating a run with all its nodes, reading runs, and changing a
run's status. Part of `FirestoreStore` (`firestore_store.py`).

- `create_run` creates the node documents (batches of <= 500, concurrently), then the run
  document LAST, with create() everywhere: a run document that exists means all its nodes
  exist, and a writer finishing a half-written run never overwrites a node. With an
  idempotency key, the key document is created first.
- `set_run_status` reads the run's status only, asks `core.transitions` and commits on the
  run's update time (no node transition writes the run document, so it rarely retries);
  it never locks the document. A run's end also stores its counts and usage
  (`_final_fields`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from agentgraph.backends.gcp import chunks
from agentgraph.backends.gcp import firestore_docs as docs
from agentgraph.backends.gcp.contention import TryAgain, until_found, until_settled
from agentgraph.backends.gcp.firestore_io import FirestoreIO
from agentgraph.core import names, transitions
from agentgraph.core.errors import IdempotencyConflict
from agentgraph.core.records import NodeRecord, RunRecord
from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus

_BATCH_WRITES = 500  # Firestore's limit per commit
_BATCH_BYTES = 3_500_000  # under the emulator's 4 MiB request cap (production: 10 MiB)
UNFINISHED = [s for s in NodeStatus if s not in TERMINAL_NODE]
OTHER_FINAL = sorted(TERMINAL_NODE - {NodeStatus.SUCCEEDED})


class RunWrites(FirestoreIO):
    """The run-level half of the Store port on Firestore."""

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
        existing = await until_found(
            lambda: self.get_run(run_id)
        )  # its creator may still be writing
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
        event = transitions.run_started(
            run.run_id, run.graph_name, run.status, run.created_at, len(nodes)
        )
        writes.create(self._event_ref(run.run_id), docs.event_doc(event))
        with contextlib.suppress(AlreadyExists):  # a writer of the same request was first
            await self._commit(writes)

    async def _create_nodes(self, group: list[tuple[Any, dict[str, Any]]]) -> None:
        """create() every node of the group; if some exist (a writer finishing the same
        run), create only the missing ones: an existing node is never overwritten."""
        missing = list(group)

        async def attempt(_: int) -> None:
            nonlocal missing
            writes = self._writes()
            for ref, doc in missing:
                writes.create(ref, doc)
            try:
                await self._commit(writes)
            except AlreadyExists:
                found = await self._get_all([ref for ref, _ in missing], field_paths=["status"])
                present = {s.reference.path for s in found if s.exists}
                missing = [(ref, doc) for ref, doc in missing if ref.path not in present]
                if missing:
                    raise TryAgain from None

        await until_settled(attempt, f"creating {len(group)} node documents")

    async def get_run(self, run_id: str, *, counts: bool = True) -> RunRecord | None:
        snap = await self._get(self._run_ref(run_id))
        return await self._run(snap, counts=counts) if snap.exists else None

    async def get_run_summary(self, run_id: str, *, counts: bool = True) -> RunRecord | None:
        snap = await self._get(self._run_ref(run_id), field_paths=docs.RUN_SUMMARY_FIELDS)
        return await self._run_summary(snap, counts=counts) if snap.exists else None

    async def list_runs(self, owner: str | None = None, limit: int = 50) -> list[RunRecord]:
        query: Any = self.client.collection(names.COLLECTION_RUNS)
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        query = query.select(docs.RUN_SUMMARY_FIELDS)
        found = await self._query(query)
        return list(await asyncio.gather(*(self._run_summary(s) for s in found)))

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
        encoded: dict[str, Any] = {}
        if outputs is not None:
            texts = {"outputs": chunks.dumps(outputs)}
            inline, chunked = chunks.plan(texts, docs.RUN_OUTPUTS_BUDGET)
            await self._write_chunks(ref, chunked)
            encoded = docs.value_fields(inline, chunked)
        token = secrets.token_hex(8)

        async def attempt(tries: int) -> bool:
            snap = await self._get(ref, field_paths=["status", "op", "node_count"])
            if not snap.exists:
                return False
            data = snap.to_dict()
            if tries and data.get("op") == token:
                return True  # our earlier commit applied; its reply was lost
            change = transitions.set_run_status(
                run_id,
                RunStatus(data["status"]),
                expected,
                status,
                now,
                outputs=outputs,
                error=error,
            )
            if change is None:
                return False
            final = await self._final_fields(snap) if status.terminal else {}
            writes = self._writes()
            option = self.client.write_option(last_update_time=snap.update_time)
            fields = {**docs.run_change_fields(change, encoded), **final, "op": token}
            writes.update(ref, fields, option=option)
            writes.create(self._event_ref(run_id), docs.event_doc(change.event))
            self._before_commit(writes)  # pragma: SYNCPOINT
            await self._commit(writes)
            return True

        return await until_settled(attempt, f"run {run_id}: status change")

    async def _final_fields(self, snap: Any) -> dict[str, Any]:
        """The counts and usage a run's end stores with its status (no write of its own),
        when no node is left unfinished: final nodes never change while the run stays
        ended, so they stay true. A run ending with nodes still running (failed or
        cancelled) stores none: its counts are derived on reading, as while it ran.

        All read at the run document's read time, so its node_count is the nodes counted:
        one `count()` of the nodes not succeeded (none, on a successful run: then every
        one succeeded), else one per other status; and the usage `sum()`s."""
        nodes = snap.reference.collection(names.COLLECTION_NODES)
        at = snap.read_time
        total = int(snap.get("node_count") or 0)
        others = [s for s in NodeStatus if s != NodeStatus.SUCCEEDED]
        rest, spent = await asyncio.gather(
            self._count_in(nodes, others, at), self._usage(nodes, at)
        )
        counts = {NodeStatus.SUCCEEDED.value: total - rest}
        if rest:
            unfinished, found = await asyncio.gather(
                self._count_in(nodes, UNFINISHED, at),
                self._aggregate(snap.reference, OTHER_FINAL, at, usage=False),
            )
            if unfinished:
                return {}
            counts.update(found[0])
        return docs.final_fields(counts, spent)
