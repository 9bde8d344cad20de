"""The steps of agents' tool loops on Firestore: `runs/{run}/nodes/{node}/steps/{index}`.

A step document is written once, with `create()` (the create-if-absent the port asks
for: a second write of the same index fails with AlreadyExists and changes nothing). Its
id is the index zero-padded, so the documents list in step order. The step itself is
JSON text in `step_json`, or, when over `STEP_BUDGET` (a tool that returned a large
value), chunk documents under the step named by `step_ref`, written first
(`chunks.py`); a few fields (index, kind, name, at) stay queryable beside it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from google.api_core.exceptions import AlreadyExists

from agentgraph.backends.gcp import chunks
from agentgraph.backends.gcp import firestore_docs as docs
from agentgraph.backends.gcp.firestore_io import FirestoreIO
from agentgraph.core import names
from agentgraph.core.records import Step

STEP_BUDGET = 900_000  # bytes of step JSON kept inline in its document


class StepWrites(FirestoreIO):
    def _step_ref(self, run_id: str, node_id: str, index: int) -> Any:
        steps = self._node_ref(run_id, node_id).collection(names.COLLECTION_STEPS)
        return steps.document(f"{index:06d}")

    async def append_step(self, run_id: str, node_id: str, step: Step) -> bool:
        ref = self._step_ref(run_id, node_id, step.index)
        text = chunks.dumps(step.to_dict())
        inline, chunked = chunks.plan({"step": text}, STEP_BUDGET)
        await self._write_chunks(ref, chunked)
        writes = self._writes()
        writes.create(
            ref,
            {
                "index": step.index,
                "kind": step.kind,
                "name": step.name,
                "at": step.at,
                **docs.value_fields(inline, chunked),
            },
        )
        try:
            await self._commit(writes)
        except AlreadyExists:
            return False
        return True

    async def list_steps(self, run_id: str, node_id: str) -> list[Step]:
        query = self._node_ref(run_id, node_id).collection(names.COLLECTION_STEPS)
        snaps = await self._query(query)
        texts = await asyncio.gather(*(self._text(s.reference, s.to_dict(), "step") for s in snaps))
        steps = [Step.from_dict(json.loads(t)) for t in texts if t is not None]
        return sorted(steps, key=lambda s: s.index)
