"""The runs' scratch space in Cloud Storage: `gs://BUCKET/runs/{run_id}/{path}`.

The ScratchSpace port (tools/context.py) over google-cloud-storage, whose calls are
blocking: each runs on a worker thread. Paths arrive normalised (tools/run_files.py),
so an object name is always under its run's prefix. An upload of one object is atomic
in Cloud Storage: a reader sees the old object or the new one. The exec functions'
service account holds roles/storage.objectUser on the bucket only (infra/run_files.tf).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agentgraph.core.names import ENV_RUN_FILES_BUCKET

PREFIX = "runs"


class GcsScratch:
    def __init__(self, client: Any, bucket: str, prefix: str = PREFIX) -> None:
        self._client = client
        self._bucket = client.bucket(bucket)
        self._name = bucket
        self._prefix = prefix.strip("/")

    @classmethod
    def from_env(cls) -> GcsScratch | None:
        """The space of AGENTGRAPH_RUN_FILES_BUCKET, or None when it is not set (the
        run-file tools then say the deployment has none)."""
        bucket = os.environ.get(ENV_RUN_FILES_BUCKET, "").strip().removeprefix("gs://")
        if not bucket:
            return None
        from google.cloud import storage  # type: ignore[attr-defined]  # untyped

        return cls(storage.Client(), bucket.rstrip("/"))

    def _object(self, run_id: str, path: str = "") -> str:
        return f"{self._prefix}/{run_id}/{path}"

    def location(self, run_id: str) -> str:
        return f"gs://{self._name}/{self._object(run_id)}"

    async def read(self, run_id: str, path: str, limit: int) -> bytes:
        from google.api_core.exceptions import NotFound

        blob = self._bucket.blob(self._object(run_id, path))
        try:
            data: bytes = await asyncio.to_thread(blob.download_as_bytes, start=0, end=limit)
        except NotFound:
            raise FileNotFoundError(path) from None
        return data

    async def write(self, run_id: str, path: str, data: bytes) -> None:
        blob = self._bucket.blob(self._object(run_id, path))
        await asyncio.to_thread(
            blob.upload_from_string, data, content_type="application/octet-stream"
        )

    async def sizes(self, run_id: str) -> dict[str, int]:
        prefix = self._object(run_id)

        def work() -> dict[str, int]:
            blobs = self._client.list_blobs(self._bucket, prefix=prefix)
            return {b.name[len(prefix) :]: int(b.size or 0) for b in blobs}

        return await asyncio.to_thread(work)
