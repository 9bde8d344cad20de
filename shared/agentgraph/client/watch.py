"""Knowing when a run changed: a Firestore listener when the caller can read Firestore.

A listener (`on_snapshot`) on `runs/{id}` and on its `nodes` collection tells the client
the moment anything of the run is written, so following a run costs one GET per change
instead of a poll every half second. The listener only wakes the client; what it shows
still comes from the api (`GET /runs/{id}`), so there is one way to read a run (chunked
values reassembled, the same typed models) and a listener that stops delivering only
makes the client fall back to its slow safety poll.

Firestore access means: google-cloud-firestore is importable and a project is configured,
either passed explicitly or, against the emulator, GOOGLE_CLOUD_PROJECT with
FIRESTORE_EMULATOR_HOST. Without both the client polls `GET /runs/{id}/events?after=`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

from agentgraph.core import names


def firestore_project(explicit: str | None = None) -> str | None:
    """The project to listen in, or None when the caller has no Firestore access."""
    if importlib.util.find_spec("google.cloud.firestore") is None:
        return None
    if explicit:
        return explicit
    if os.environ.get(names.ENV_FIRESTORE_EMULATOR):
        return os.environ.get(names.ENV_PROJECT) or None
    return None


class RunListener:
    """Listens to one run; `changed` is set (on the caller's event loop) at every snapshot.
    `start()` returns once both listeners delivered their first snapshot, so a change made
    after it (and after `changed.clear()`) is a change the listener reports. `close()`
    stops the listeners; it is safe to call twice."""

    def __init__(self, project: str, run_id: str, client: Any = None) -> None:
        self.project = project
        self.run_id = run_id
        self.changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._client = client
        self._own_client = client is None
        self._watches: list[Any] = []
        self._live = [asyncio.Event(), asyncio.Event()]

    def _waker(self, index: int) -> Any:
        def wake(*_: Any) -> None:
            # On the listener's thread: only the loop's own thread may touch its Events.
            self._loop.call_soon_threadsafe(self._live[index].set)
            self._loop.call_soon_threadsafe(self.changed.set)

        return wake

    def _open_client(self) -> Any:
        from google.cloud import firestore

        credentials = None
        if os.environ.get(names.ENV_FIRESTORE_EMULATOR):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        database = os.environ.get(names.ENV_FIRESTORE_DATABASE) or None
        return firestore.Client(project=self.project, credentials=credentials, database=database)

    def _start(self) -> None:
        if self._client is None:
            self._client = self._open_client()
        run = self._client.collection(names.COLLECTION_RUNS).document(self.run_id)
        self._watches.append(run.on_snapshot(self._waker(0)))
        nodes = run.collection(names.COLLECTION_NODES)
        self._watches.append(nodes.on_snapshot(self._waker(1)))

    def _stop(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.unsubscribe()
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    async def start(self, timeout_s: float = 60.0) -> RunListener:
        """Start both listeners (their setup blocks, so it runs on a worker thread) and wait
        for their first snapshots; TimeoutError (listeners closed) if they do not come."""
        await asyncio.to_thread(self._start)
        try:
            async with asyncio.timeout(timeout_s):
                for live in self._live:
                    await live.wait()
        except BaseException:
            await self.close()
            raise
        return self

    async def wait(self, timeout_s: float) -> bool:
        """Until a change since the last `changed.clear()`, or `timeout_s`; whether one
        came. The caller clears before it reads, so a change during the read is not lost."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await asyncio.to_thread(self._stop)
