"""Redrive on Firestore: reset the nodes of a failed or cancelled run, then set it
running. Part of `FirestoreStore` (`firestore_store.py`).

A run may have 2,000 nodes and a commit holds 500 writes, so this is several commits, in
an order that makes each prefix harmless and the whole repeatable:
1. the arrival documents a reset node had from reset parents are deleted (they will
   arrive again; a node's arrival count is counted from these documents, so it needs
   no rebuilding);
2. the nodes are reset in batches; each batch carries a precondition on the run document
   as read with status failed or cancelled, so no batch applies once the run is running
   again (a racing identical redrive that already finished cannot be undone);
3. the run goes back to running, conditioned on its status like every run change.
Until step 3 nothing of the run moves (it is not running: no message, no sweeper), so a
redrive that died part-way leaves a failed run whose repeated redrive finishes the job:
the plan then counts the reset nodes (waiting, attempt 1) among those to run again.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from agentgraph.backends.gcp import chunks
from agentgraph.backends.gcp import firestore_docs as docs
from agentgraph.backends.gcp.contention import until_settled
from agentgraph.backends.gcp.firestore_io import FirestoreIO
from agentgraph.core import names, transitions
from agentgraph.core.records import NodeRecord
from agentgraph.core.status import NodeStatus, RunStatus

_NODES_PER_COMMIT = 200  # a node update and its event each, plus the run
_DELETES_PER_COMMIT = 450
_REDRIVABLE = (RunStatus.FAILED.value, RunStatus.CANCELLED.value)


class RedriveWrites(FirestoreIO):
    """`redrive_run` of the Store port on Firestore."""

    async def redrive_run(self, run_id: str, resets: Mapping[str, NodeStatus], now: float) -> bool:
        run_ref = self._run_ref(run_id)
        ids = list(resets)
        records = [
            docs.node_record(snap.to_dict())
            for snap in await self._get_all([self._node_ref(run_id, n) for n in ids])
            if snap.exists
        ]
        stale = []
        for record in records:
            if _may_have_arrivals(record):  # its arrival documents are its count
                arrivals = self._node_ref(run_id, record.node_id).collection(
                    names.COLLECTION_ARRIVALS
                )
                for snap in await self._query(arrivals.select(["parent"])):
                    if (snap.to_dict() or {}).get("parent") in resets:
                        stale.append(snap.reference)
        for start in range(0, len(stale), _DELETES_PER_COMMIT):
            if not await self._guarded(run_id, lambda w, s=start: _delete(w, stale, s)):
                return False
        for start in range(0, len(ids), _NODES_PER_COMMIT):
            group = ids[start : start + _NODES_PER_COMMIT]
            if not await self._reset_group(run_id, group, resets, now):
                return False
        return await self._set_redriven(run_ref, run_id, len(resets), now)

    async def _guarded(self, run_id: str, fill: Any) -> bool:
        """One commit of `fill`'s writes, applied only while the run is failed or
        cancelled (a precondition on the run document's update time)."""

        async def attempt(_: int) -> bool:
            ref = self._run_ref(run_id)
            snap = await self._get(ref, field_paths=["status"])
            if not snap.exists or snap.get("status") not in _REDRIVABLE:
                return False
            writes = self._writes()
            increments = await fill(writes)
            option = self.client.write_option(last_update_time=snap.update_time)
            writes.update(ref, increments or {"redriven_at": None}, option=option)
            self._before_commit(writes)  # pragma: SYNCPOINT
            await self._commit(writes)
            return True

        return await until_settled(attempt, f"run {run_id}: redriving")

    async def _reset_group(
        self, run_id: str, group: list[str], resets: Mapping[str, NodeStatus], now: float
    ) -> bool:
        async def fill(writes: Any) -> dict[str, Any]:
            snaps = await self._get_all([self._node_ref(run_id, n) for n in group])
            for snap in snaps:
                if not snap.exists:
                    continue
                node = docs.node_record(snap.to_dict())
                change = transitions.redrive_node(node, resets[node.node_id], now)
                if change is None:
                    continue
                fields, chunked = docs.change_fields(node, change)
                assert not chunked  # the output is reset to null
                option = self.client.write_option(last_update_time=snap.update_time)
                writes.update(snap.reference, fields, option=option)
                if change.event is not None:
                    writes.create(self._event_ref(run_id), docs.event_doc(change.event))
            return {}

        return await self._guarded(run_id, fill)

    async def _set_redriven(self, ref: Any, run_id: str, nodes: int, now: float) -> bool:
        token = secrets.token_hex(8)

        async def attempt(tries: int) -> bool:
            snap = await self._get(ref, field_paths=["status", "op"])
            if not snap.exists:
                return False
            if tries and snap.get("op") == token:
                return True  # our earlier commit applied; its reply was lost
            change = transitions.redrive_run(run_id, RunStatus(snap.get("status")), now, nodes)
            if change is None:
                return False
            writes = self._writes()
            fields = docs.run_change_fields(
                change, docs.value_fields({"outputs": chunks.dumps(None)}, [])
            )
            option = self.client.write_option(last_update_time=snap.update_time)
            writes.update(ref, {**fields, "op": token}, option=option)
            writes.create(self._event_ref(run_id), docs.event_doc(change.event))
            self._before_commit(writes)  # pragma: SYNCPOINT
            await self._commit(writes)
            return True

        return await until_settled(attempt, f"run {run_id}: redriven")


async def _delete(writes: Any, refs: list[Any], start: int) -> dict[str, Any]:
    for ref in refs[start : start + _DELETES_PER_COMMIT]:
        writes.delete(ref)
    return {}


def _may_have_arrivals(record: NodeRecord) -> bool:
    """Arrival documents exist only under a node with two or more parents and under a
    controller that expanded (its units arrive at it: `meta.expect`); Firestore keeps no
    arrival count on the node to tell, the count being those documents."""
    return len(record.parents) > 1 or "expect" in (record.meta or {})
