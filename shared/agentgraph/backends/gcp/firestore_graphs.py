"""Versioned graph definitions on Firestore (`graphs/{owner key}-{name}/versions/{n}`).

Names are per owner: the document id is a hash of the owner (uids may hold characters a
document id may not) and the graph's name, so another owner's name is neither visible nor
taken. `graphs/{id}` holds the owner, the name and the latest version number and hash;
each version is an immutable document. Saving is one transaction on `graphs/{name}`: publishing a graph is
rare, so the one hot document the transaction locks is never contended the way a fan-in
would be. Saving the same definition again returns the latest version instead of making a
new one, so a deploy script can POST its graphs on every run.

Definitions are stored as JSON text: Firestore maps cannot hold every JSON value (arrays
of arrays, for one), and a definition is only ever read whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from agentgraph.core import names
from agentgraph.core.errors import Problem, RequestInvalid
from agentgraph.core.ports import StoredGraph

MAX_DEFINITION_BYTES = 900 * 1024  # under Firestore's 1 MiB per document, with room


class FirestoreGraphs:
    """Satisfies agentgraph.core.ports.GraphStore on a Firestore AsyncClient."""

    def __init__(self, client: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    @classmethod
    def from_env(cls, client: Any | None = None) -> FirestoreGraphs:
        """On the given client (share the store's), or one for GOOGLE_CLOUD_PROJECT and
        AGENTGRAPH_FIRESTORE_DATABASE (FIRESTORE_EMULATOR_HOST is honoured by the client)."""
        if client is None:
            from google.cloud import firestore

            client = firestore.AsyncClient(
                project=os.environ.get(names.ENV_PROJECT) or None,
                database=os.environ.get(names.ENV_FIRESTORE_DATABASE) or None,
            )
        return cls(client)

    def _graph(self, owner: str, graph_id: str) -> Any:
        owner_key = hashlib.sha256(owner.encode()).hexdigest()[:32]
        return self.client.collection(names.COLLECTION_GRAPHS).document(f"{owner_key}-{graph_id}")

    async def save(
        self, owner: str, graph_id: str, definition: dict[str, Any], digest: str
    ) -> tuple[StoredGraph, bool]:
        from google.cloud import firestore

        text = json.dumps(definition, ensure_ascii=False, sort_keys=True)
        if len(text.encode()) > MAX_DEFINITION_BYTES:
            raise RequestInvalid(
                [
                    Problem(
                        "body",
                        f"the definition is {len(text.encode()):,} bytes; stored graphs are "
                        f"limited to {MAX_DEFINITION_BYTES:,} (post it inline to /runs instead)",
                    )
                ]
            )
        head_ref = self._graph(owner, graph_id)
        now = self.clock()

        @firestore.async_transactional  # type: ignore[untyped-decorator]
        async def save_in(transaction: Any) -> tuple[StoredGraph, bool]:
            head = await head_ref.get(transaction=transaction)
            data = head.to_dict() if head.exists else {}
            latest = int(data.get("latest", 0))
            if latest and data.get("latest_hash") == digest:
                stored = await self.get(owner, graph_id, latest)
                if stored is not None:
                    return stored, False
            version = latest + 1
            transaction.create(
                head_ref.collection(names.COLLECTION_VERSIONS).document(str(version)),
                {
                    "version": version,
                    "definition": text,
                    "hash": digest,
                    "owner": owner,
                    "created_at": now,
                },
            )
            transaction.set(
                head_ref,
                {
                    "name": graph_id,
                    "owner": owner,
                    "latest": version,
                    "latest_hash": digest,
                    "created_at": data.get("created_at", now),
                    "updated_at": now,
                },
            )
            return StoredGraph(graph_id, version, definition, digest, owner, now, version), True

        result: tuple[StoredGraph, bool] = await save_in(self.client.transaction())
        return result

    async def get(
        self, owner: str, graph_id: str, version: int | None = None
    ) -> StoredGraph | None:
        head = await self._graph(owner, graph_id).get()
        if not head.exists:
            return None
        latest = int(head.get("latest"))
        number = version or latest
        snapshot = (
            await self._graph(owner, graph_id)
            .collection(names.COLLECTION_VERSIONS)
            .document(str(number))
            .get()
        )
        if not snapshot.exists:
            return None
        data = snapshot.to_dict()
        return StoredGraph(
            id=graph_id,
            version=number,
            definition=json.loads(data["definition"]),
            hash=data["hash"],
            owner=head.get("owner"),
            created_at=float(data["created_at"]),
            latest_version=latest,
        )
