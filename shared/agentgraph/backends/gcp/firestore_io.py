"""What the Firestore store's parts share: the client and document references, reads and
writes counted in billing units, and JSON values too large for one document.

Reads and writes are counted in `self.stats` in billing units (a document read; a document
write, its field transforms included) so benchmarks can report operations per node.
Values too large for one document (inputs and outputs up to 10 MiB, big graph snapshots)
go to chunk documents (`chunks.py`), written before the document that names them, and
every reader reassembles and verifies them transparently.

Event ids are the writer's clock in microseconds (monotonic per process) plus a random
suffix; see `firestore_store.py` for how the timeline is ordered.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Self

from google.api_core.exceptions import AlreadyExists, FailedPrecondition
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from agentgraph.backends.gcp import chunks
from agentgraph.backends.gcp import firestore_docs as docs
from agentgraph.core import names
from agentgraph.core.records import NodeRecord, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus


def doc_id(node_id: str) -> str:
    """A node's document id: instance ids (core/grow.py) hold `/`, which a Firestore id
    may not; `|` never occurs in a node id, so the mapping is one to one."""
    return node_id.replace("/", "|")


class Writes:
    """A batch that counts the documents it writes (a transform rides on its document)."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.batch = client.batch()
        self.count = 0

    def create(self, ref: Any, data: dict[str, Any]) -> None:
        self.batch.create(ref, data)
        self.count += 1

    def set(self, ref: Any, data: dict[str, Any], merge: bool = False) -> None:
        self.batch.set(ref, data, merge=merge)
        self.count += 1

    def update(self, ref: Any, data: dict[str, Any], option: Any = None) -> None:
        self.batch.update(ref, data, option=option)
        self.count += 1

    def delete(self, ref: Any) -> None:
        self.batch.delete(ref)
        self.count += 1


class FirestoreIO:
    """The client, document references, counted reads and writes, and large values: what
    every part of the Firestore store builds on."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client
        self.stats: Counter[str] = Counter()
        self._last_us = 0

    @classmethod
    def from_env(cls) -> Self:
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
        return self._run_ref(run_id).collection(names.COLLECTION_NODES).document(doc_id(node_id))

    def _event_ref(self, run_id: str) -> Any:
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        event_id = f"{self._last_us:016d}-{secrets.token_hex(4)}"
        return self._run_ref(run_id).collection(names.COLLECTION_EVENTS).document(event_id)

    def _writes(self) -> Writes:
        return Writes(self.client)

    def _before_commit(self, writes: Writes) -> None:
        """Called on the SYNCPOINT lines: where orchestrate lets another caller go first."""

    async def _commit(self, writes: Writes) -> list[Any]:
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

    async def _run_summary(self, snap: Any, *, counts: bool = True) -> RunRecord:
        """A snapshot read with `docs.RUN_SUMMARY_FIELDS`: graph {} and input None."""
        data = snap.to_dict()
        outputs, (counts_, spent) = await asyncio.gather(
            self._text(snap.reference, data, "outputs"), self._counts(snap, data, counts)
        )
        texts = {"graph": None, "input": None, "outputs": outputs}
        run = docs.run_record(snap.id, data, texts)
        return replace(run, graph={}, counts=counts_, usage=spent)

    async def _run(self, snap: Any, *, counts: bool = True) -> RunRecord:
        data = snap.to_dict()
        fields = ("graph", "input", "outputs")
        texts, (counts_, spent) = await asyncio.gather(
            asyncio.gather(*(self._text(snap.reference, data, f) for f in fields)),
            self._counts(snap, data, counts),
        )
        run = docs.run_record(snap.id, data, dict(zip(fields, texts, strict=True)))
        return replace(run, counts=counts_, usage=spent)

    async def _counts(
        self, snap: Any, data: dict[str, Any], wanted: bool = True
    ) -> tuple[dict[str, int], Usage]:
        """The run's node counts and usage: those its end stored on the run document
        (`docs.final_fields`: no read), else, if `wanted`, derived from its node documents
        (`_aggregate`) as they were when the run document was read (its read time: every
        count of the same instant, so they add up to its node_count while nodes end);
        else none."""
        if data.get("counts") is not None and RunStatus(data["status"]).terminal:
            stored = {k: int(v) for k, v in data["counts"].items() if v}
            return stored, docs.usage(data.get("usage"))
        if not wanted:
            return {}, Usage()
        return await self._aggregate(snap.reference, read_time=snap.read_time)

    async def _aggregate(
        self,
        run_ref: Any,
        statuses: Sequence[NodeStatus] = tuple(NodeStatus),
        read_time: Any = None,
        *,
        usage: bool = True,
    ) -> tuple[dict[str, int], Usage]:
        """The run's nodes counted per status (one `count()` query each) and their usage
        summed (two `sum()` queries: at most five aggregations share one; `usage=False`:
        none), all at once.
        Nothing is written for them: each node document holds its own status and usage."""
        nodes = run_ref.collection(names.COLLECTION_NODES)
        counted, spent = await asyncio.gather(
            asyncio.gather(*(self._count_in(nodes, (s,), read_time) for s in statuses)),
            self._usage(nodes, read_time) if usage else _no_usage(),
        )
        return {s.value: n for s, n in zip(statuses, counted, strict=True) if n}, spent

    async def _count_in(
        self, nodes: Any, statuses: Sequence[NodeStatus], read_time: Any = None
    ) -> int:
        """How many of `nodes` are in one of `statuses`: one aggregation query (an
        equality or `in` filter on the single-field index of `status`)."""
        values = sorted(s.value for s in statuses)
        where = FieldFilter("status", "==", values[0]) if len(values) == 1 else None
        where = where or FieldFilter("status", "in", values)
        found = await self._aggregation(nodes.where(filter=where).count(alias="n"), read_time)
        n = int(found.get("n") or 0)
        self._billed(n)
        return n

    async def _usage(self, nodes: Any, read_time: Any = None) -> Usage:
        """The nodes' usage summed. A query of several aggregations covers the documents
        holding every field it aggregates: every node document holds every usage field
        (`docs.node_doc`, `change_fields` write the whole map)."""
        keys = list(Usage().to_dict())
        first: Any = nodes.count(alias="n")
        for key in keys[:4]:
            first = first.sum(f"usage.{key}", alias=key)
        second: Any = nodes.sum(f"usage.{keys[4]}", alias=keys[4])
        for key in keys[5:]:
            second = second.sum(f"usage.{key}", alias=key)
        a, b = await asyncio.gather(
            self._aggregation(first, read_time), self._aggregation(second, read_time)
        )
        self._billed(int(a.get("n") or 0), queries=2)
        return docs.usage({k: v for k, v in {**a, **b}.items() if k in keys and v is not None})

    async def _aggregation(self, query: Any, read_time: Any = None) -> dict[str, Any]:
        """An aggregation query's values by alias (at `read_time`: a consistent snapshot,
        within the hour Firestore keeps old versions for)."""
        rows = await query.get(read_time=read_time)
        return {r.alias: r.value for row in rows for r in row}

    def _billed(self, entries: int, queries: int = 1) -> None:
        """Aggregation queries are billed one read per 1,000 index entries (at least one)."""
        self.stats["reads"] += queries * max(1, -(-entries // 1000))

    async def count_nodes(self, run_id: str, statuses: Sequence[NodeStatus]) -> int:
        return await self._count_in(
            self._run_ref(run_id).collection(names.COLLECTION_NODES), statuses
        )


async def _no_usage() -> Usage:
    return Usage()
