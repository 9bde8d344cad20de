"""`Client`: the REST api of a deployed agentgraph, from Python.

Typed: every answer is parsed into the api's own pydantic models (`agentgraph.api.models`),
so the client and the server cannot disagree on a field. Every error answer becomes an
`ApiError` (`agentgraph.core.errors`) carrying the api's `code`, message and per-field
problems.

Safe to retry: 429 and 503 answers and dropped connections are tried again (bounded, see
`agentgraph.client.retrying`), honouring `Retry-After`. `create` sends an
`Idempotency-Key`, one per call and the same on each of its tries, so a try whose answer
was lost returns the run the first try started instead of starting a second one.

Who calls: a static bearer token (`token=`), a Google ID token fetched with google-auth for
an `audience` (the api's URL; from the metadata server, a service-account key in
GOOGLE_APPLICATION_CREDENTIALS, or gcloud's credentials) and refreshed before it expires,
or nothing (the emulator stack runs with auth off).

Following a run: `stream` yields the run each time it changed and ends when the run ended;
`wait` returns the ended run or raises TimeoutError. Changes are noticed by a Firestore
listener when the caller can read Firestore (`agentgraph.client.watch`), otherwise by
polling the run's events (`GET /runs/{id}/events?after=`).

Human approval has no endpoint yet, so the client has no `approve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception

from agentgraph.api import models
from agentgraph.client.retrying import (
    RETRY_STATUSES,
    retry_after_seconds,
    stop_strategy,
    wait_strategy,
)
from agentgraph.client.watch import RunListener, firestore_project
from agentgraph.core.errors import ApiError, Problem

M = TypeVar("M", bound=BaseModel)
_log = logging.getLogger("agentgraph.client")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_TOKEN_MARGIN_S = 300.0  # refresh an ID token this long before it expires


def api_error(response: httpx.Response, now: float) -> ApiError:
    """The ApiError for an error answer; one that is not the api's error body (a proxy's
    502 page, say) keeps its status, with the code "unexpected"."""
    retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
    try:
        body = models.ErrorBody.model_validate_json(response.content)
    except ValidationError:
        text = response.text.strip()[:500] or response.reason_phrase
        return ApiError(response.status_code, "unexpected", text, retry_after_s=retry_after)
    error = body.error
    problems = [Problem(p.path, p.message, p.node_id) for p in error.details]
    return ApiError(response.status_code, error.code, error.message, problems, retry_after)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError)


class IdToken:
    """A Google ID token for `audience`, fetched with google-auth and kept until shortly
    before it expires. Fetching blocks (a metadata-server or token-endpoint request), so it
    runs on a worker thread."""

    def __init__(self, audience: str, clock: Callable[[], float] = time.time) -> None:
        self.audience = audience
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        async with self._lock:
            if self._token is not None and self.clock() < self._expires_at - _TOKEN_MARGIN_S:
                return self._token
            token, self._expires_at = await asyncio.to_thread(self._fetch)
            self._token = token
            return token

    def _fetch(self) -> tuple[str, float]:
        from google.auth import jwt
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token

        token = id_token.fetch_id_token(Request(), self.audience)
        claims = jwt.decode(token, verify=False)
        return token, float(claims.get("exp", self.clock() + 3600))


_NO_PAYLOAD: Any = object()  # approve() without an edited payload


class Client:
    """The api at `url`. Use as `async with Client(url) as client:` (or call `aclose`).

    `retries`: tries after the first for a retryable failure; `max_wait_s`: the longest
    single wait (a longer Retry-After ends the retries); `poll_s`: how often `stream` polls
    without a listener; `listen`: use a Firestore listener (None: when available, see
    `agentgraph.client.watch`); `transport`, `sleep`: for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        audience: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
        max_wait_s: float = 60.0,
        poll_s: float = 0.5,
        listen: bool | None = None,
        firestore_project: str | None = None,
        listener_poll_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token and audience:
            raise ValueError("give a static token or an audience to fetch ID tokens for, not both")
        self.url = url.rstrip("/")
        self.token = token
        self.id_token = IdToken(audience, clock) if audience else None
        self.retries = retries
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self.listen = listen
        self.firestore_project = firestore_project
        self.listener_poll_s = listener_poll_s
        self.sleep = sleep
        self.clock = clock
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- requests --------------------------------------------------------------------------

    async def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        token = await self.id_token.get() if self.id_token else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One call: tried again on 429, 503 and dropped connections (module docstring)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_strategy(self.retries + 1, self.max_wait_s),
            wait=wait_strategy(0.5, self.max_wait_s),
            sleep=self.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                response = await self._http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    content=content,
                    headers=await self._headers(headers),
                )
                if response.status_code >= 400:
                    raise api_error(response, self.clock())
                return response
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        response = await self._send(method, path, **kwargs)
        return model.model_validate_json(response.content)

    # ---- runs ------------------------------------------------------------------------------

    async def create(
        self,
        graph: Mapping[str, Any] | None = None,
        input: Any = None,
        *,
        graph_id: str | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> models.RunSummary:
        """Start a run of `graph` (a definition) or of the stored `graph_id` (latest
        version unless `version`). Repeating a call with the same `idempotency_key` and
        body returns the same run; without one, a fresh key is made for this call."""
        body: dict[str, Any] = {"input": input}
        if graph is not None:
            body["graph"] = dict(graph)
        if graph_id is not None:
            body["graph_id"] = graph_id
        if version is not None:
            body["version"] = version
        key = idempotency_key or str(uuid.uuid4())
        return await self._call(
            models.RunSummary, "POST", "/runs", json=body, headers={"Idempotency-Key": key}
        )

    async def get(self, run_id: str, *, nodes_limit: int | None = None) -> models.Run:
        """The run with every node, following the api's node pages (`nodes_limit` per
        request; the api's default when None); ApiError 404 (`not_found`) for an unknown
        id. The summary is the last page's, so it is at least as new as every node."""
        run = await self.get_page(run_id, nodes_limit=nodes_limit)
        nodes = list(run.nodes)
        while run.next_nodes_after is not None:
            run = await self.get_page(
                run_id, nodes_limit=nodes_limit, nodes_after=run.next_nodes_after
            )
            nodes.extend(run.nodes)
        return run.model_copy(update={"nodes": nodes, "next_nodes_after": None})

    async def get_page(
        self, run_id: str, *, nodes_limit: int | None = None, nodes_after: int | None = None
    ) -> models.Run:
        """The run with one page of its nodes (`next_nodes_after` names the next page)."""
        params: dict[str, Any] = {}
        if nodes_limit is not None:
            params["nodes_limit"] = nodes_limit
        if nodes_after is not None:
            params["nodes_after"] = nodes_after
        return await self._call(models.Run, "GET", f"/runs/{run_id}", params=params or None)

    async def list_runs(self, limit: int = 50, owner: str | None = None) -> list[models.RunSummary]:
        """The caller's runs, newest first (admins: everyone's, or `owner`'s)."""
        params: dict[str, Any] = {"limit": limit}
        if owner is not None:
            params["owner"] = owner
        page = await self._call(models.RunList, "GET", "/runs", params=params)
        return page.runs

    async def events(self, run_id: str, after: int = 0) -> list[models.Event]:
        """The run's timeline, only events with a `seq` above `after` when it is given."""
        params = {"after": after} if after else None
        page = await self._call(models.EventsPage, "GET", f"/runs/{run_id}/events", params=params)
        return page.events

    async def steps(self, run_id: str, node_id: str) -> list[models.Step]:
        """The steps of an agent's tool loop (none for a node without tools)."""
        page = await self._call(models.StepsPage, "GET", f"/runs/{run_id}/nodes/{node_id}/steps")
        return page.steps

    async def cancel(self, run_id: str) -> models.CancelledRun:
        """Cancel the run (`cancelled` is False when it had already ended)."""
        return await self._call(models.CancelledRun, "POST", f"/runs/{run_id}/cancel")

    async def approve(
        self, run_id: str, node_id: str, comment: str | None = None, payload: Any = _NO_PAYLOAD
    ) -> models.DecidedNode:
        """Approve a node waiting for approval; `payload`, when given, replaces its computed
        value. Approving again returns the same decision; ApiError 409
        (`approval_conflict`) once it was decided otherwise or is not waiting."""
        body: dict[str, Any] = {"comment": comment}
        if payload is not _NO_PAYLOAD:
            body["payload"] = payload
        return await self._call(
            models.DecidedNode, "POST", f"/runs/{run_id}/nodes/{node_id}/approve", json=body
        )

    async def reject(
        self, run_id: str, node_id: str, comment: str | None = None
    ) -> models.DecidedNode:
        """Reject a node waiting for approval (it fails; its `on_error` applies)."""
        return await self._call(
            models.DecidedNode,
            "POST",
            f"/runs/{run_id}/nodes/{node_id}/reject",
            json={"comment": comment},
        )

    async def redrive(self, run_id: str) -> models.RedrivenRun:
        """Run a failed or cancelled run again from where it stopped; ApiError 409
        (`redrive_conflict`) for a run in another status."""
        return await self._call(models.RedrivenRun, "POST", f"/runs/{run_id}/redrive")

    # ---- graphs ----------------------------------------------------------------------------

    async def save_graph(self, definition: Mapping[str, Any]) -> models.GraphVersion:
        """Store a graph definition as a new version (the latest again if unchanged)."""
        return await self._call(models.GraphVersion, "POST", "/graphs", json=dict(definition))

    async def get_graph(self, graph_id: str, version: int | None = None) -> models.StoredGraphBody:
        params = {"version": version} if version else None
        return await self._call(models.StoredGraphBody, "GET", f"/graphs/{graph_id}", params=params)

    # ---- following a run -------------------------------------------------------------------

    async def _listener(self, run_id: str) -> RunListener | None:
        if self.listen is False:
            return None
        project = firestore_project(self.firestore_project)
        if project is None:
            if self.listen:
                raise ValueError(
                    "listen=True needs google-cloud-firestore and a project (firestore_project="
                    ", or GOOGLE_CLOUD_PROJECT with FIRESTORE_EMULATOR_HOST)"
                )
            return None
        try:
            return await RunListener(project, run_id).start()
        except Exception as exc:
            if self.listen:
                raise
            # Auto mode: a listener that cannot start (no permission, no network path to
            # Firestore) costs nothing but the fallback to polling.
            _log.warning("no Firestore listener for run %s (%r); polling instead", run_id, exc)
            return None

    async def stream(self, run_id: str) -> AsyncGenerator[models.Run, None]:
        """The run now, then again each time it changed; the last one yielded has ended.

        With a listener, each change wakes the stream (and a slow poll every
        `listener_poll_s` covers a listener that stopped delivering); without, it polls
        the events every `poll_s` and reads the run when there are new ones.
        """
        listener = await self._listener(run_id)
        last: models.Run | None = None
        seq = 0
        try:
            while True:
                if listener is not None:
                    listener.changed.clear()
                run = await self.get(run_id)
                if run != last:
                    yield run
                    last = run
                if run.status in TERMINAL:
                    return
                if listener is not None:
                    await listener.wait(self.listener_poll_s)
                    continue
                seq = await self._next_events(run_id, seq)
        finally:
            if listener is not None:
                await listener.close()

    async def _next_events(self, run_id: str, seq: int) -> int:
        """Poll the timeline until it has events after `seq` (at most ~20 polls, then the
        run is read anyway); the new last seq."""
        for _ in range(20):
            await self.sleep(self.poll_s)
            events = await self.events(run_id, after=seq)
            if events:
                return max((e.seq or seq for e in events), default=seq)
        return seq

    async def wait(self, run_id: str, timeout_s: float | None = None) -> models.Run:
        """The run once it has ended; TimeoutError after `timeout_s` (the run goes on)."""

        async def last() -> models.Run:
            final: models.Run | None = None
            async with contextlib.aclosing(self.stream(run_id)) as runs:
                async for run in runs:
                    final = run
            assert final is not None
            return final

        async with asyncio.timeout(timeout_s):
            return await last()
