"""Glue between functions-framework's ASGI stack (Starlette requests) and the handlers.

`functions/main.py` declares the entry points with `functions_framework.aio.http`, so the
framework serves them with Starlette on uvicorn and every coroutine here runs on the
server's own event loop. The Firestore, Pub/Sub and Cloud Tasks async clients bind their
gRPC channels to the loop of their first call; the engine is built once per process
(`open_engine`) on first use, inside a request, so its clients live on that one loop for
the life of the worker. (gunicorn forks the worker after importing `functions/main.py`;
nothing here starts a loop, a thread or a client at import, so nothing crosses the fork.)

The Pub/Sub functions are HTTP functions that read the push request themselves, not
`aio.cloud_event` ones: the topics deliver through push subscriptions straight to the
functions' URLs (infra/modules/agentgraph/pubsub.tf), so the request is a Pub/Sub push
envelope, not a CloudEvent. The framework's Flask stack converts such an envelope into a
CloudEvent; its ASGI stack (3.10) does not and answers 400, which Pub/Sub would redeliver
forever. The envelope is what `pubsub_message` reads either way.

Status codes are the delivery contract: for Pub/Sub push and Cloud Tasks, 2xx acks and
anything else redelivers. A handler that returns acks; one that raises answers 500 (the
framework's error middleware), so the message or task comes again. A malformed Pub/Sub
message is answered 400: a nack too, so after the subscription's max_delivery_attempts it
lands on the dead-letter topic (infra/modules/agentgraph/pubsub.tf) instead of vanishing.
A malformed retry task is answered 202 (Cloud Tasks has no dead-letter queue; the log
line is where it ends).

Each entry point continues the trace its request carries (`traceparent` in the message
attributes or the HTTP headers; agentgraph.observability.tracing), so one run is one trace
across every function that handles it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentgraph.api import Api, Caller
from agentgraph.api.errors import error_response, response_for
from agentgraph.backends.gcp import TRANSIENT_ERRORS, auth, handlers, open_engine
from agentgraph.backends.gcp.pubsub_envelope import PubSubMessage, pubsub_message
from agentgraph.core import names
from agentgraph.core.errors import AuthError, AuthMisconfigured, Forbidden, MalformedMessage
from agentgraph.engine import Engine
from agentgraph.observability import setup_telemetry, tracing
from agentgraph.observability.tracing import SpanKind

log = logging.getLogger("agentgraph.functions")
SERVICE = "agentgraph-functions"  # service.name of the functions' spans and metrics

API_TIMEOUT_S = 55.0  # under the api function's 60 s timeout
CONTROL_TIMEOUT_S = 55.0  # complete, retry, sweep, start_from_event
# exec: no timeout of ours; the node's timeout_s bounds the work, the function's the rest.


class _AnyPath(PathConvertor):
    """functions-framework routes every path to the function with Starlette's
    `/{path:path}`, whose `.*` stops at a newline: a path with an encoded newline
    (`/runs/a%0Ab`) never reached the function, and the framework's router answered a
    text/plain 404 instead of the api's JSON one (found by tests/system/test_api_fuzz.py).
    Registered when functions/main.py imports this module, which the framework does before
    it builds its routes; the api's own routes use no `path` parameter."""

    regex = "(?s:.*)"


register_url_convertor("path", _AnyPath())

_lock = threading.Lock()
_api: Api | None = None
_graphs: Any = None


def open_graphs() -> Any:
    """The graph store, on the store's Firestore client when it exposes one."""
    global _graphs
    with _lock:
        if _graphs is None:
            from agentgraph.backends.gcp.firestore_graphs import FirestoreGraphs

            _graphs = FirestoreGraphs.from_env(getattr(open_engine().store, "client", None))
        return _graphs


def open_api() -> Api:
    """The process's Api (engine, graph store, ID-token verification)."""
    global _api
    graphs = open_graphs()
    with _lock:
        if _api is None:
            _api = Api(
                open_engine(),
                graphs,
                authenticate=authenticate,
                transient=TRANSIENT_ERRORS,
                deadline_s=API_TIMEOUT_S,
            )
        return _api


def authenticate(request: Any) -> Caller:
    """The api's caller from a verified ID token (backends.gcp.auth)."""
    verified = auth.caller(request)
    return Caller(verified.uid, is_admin=verified.is_admin, email=verified.email)


# ---- HTTP ----------------------------------------------------------------------------------


class Forward(Response):
    """A response that hands the whole request to an ASGI app.

    functions-framework returns a Response from the function as it is, and Starlette then
    calls it with the request's scope, receive and send: so the api reads the body itself
    (refusing an oversized one while it streams in) and routes with its own router.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not tracing.enabled():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope.get("method", "?"), scope.get("path", "/")
        attributes = {"http.request.method": method, "url.path": path}
        route = "/" + path.strip("/").split("/", 1)[0]
        with tracing.continued(
            headers, f"api {method} {route}", attributes, SpanKind.SERVER
        ) as current:

            async def traced_send(message: Any) -> None:
                if message.get("type") == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, traced_send)


async def http_api(request: Request) -> Response:
    """The `api` function: the request goes to the process's Api."""
    setup_telemetry(SERVICE)
    try:
        api = open_api()
    except Exception:  # configuration: the log says what is missing; callers learn nothing
        log.exception("the api could not be set up")
        return error_response(
            500, "misconfigured", "the api could not be set up; see the function's logs"
        )
    return Forward(api)


async def http_retry(request: Request) -> Response:
    """The `retry` function: a Cloud Task came due. 2xx acks the task; 5xx makes Cloud
    Tasks try again (with the queue's backoff), so transient failures are retried."""
    setup_telemetry(SERVICE)
    audiences = [a for a in (os.environ.get(names.ENV_RETRY_URL), _own_url(request)) if a]
    denied = await _admit_service(request, audiences)
    if denied is not None:
        return denied
    body = await request.body()
    try:
        with tracing.continued(
            request.headers,
            "retry",
            {"cloud_tasks.task_name": _task_name(request)},
            SpanKind.SERVER,
        ):
            due = await _run_control(lambda engine: handlers.retry(engine, body))
    except MalformedMessage as exc:
        log.error("retry task %s dropped: %s", _task_name(request), exc)
        # 2xx on purpose: Cloud Tasks would otherwise retry a body that can never work.
        return JSONResponse({"dropped": str(exc)}, status_code=202)
    return JSONResponse({"run_id": due.run_id, "node_id": due.node_id, "attempt": due.attempt})


async def http_sweep(request: Request) -> Response:
    """The `sweep` function (Cloud Scheduler, every minute): re-dispatch what dead
    functions left behind; answers how many messages it sent."""
    setup_telemetry(SERVICE)
    denied = await _admit_service(request, [_own_url(request) or ""])
    if denied is not None:
        return denied
    with tracing.span("sweep", kind=SpanKind.SERVER):
        sent = await _run_control(lambda engine: engine.sweep())
    return JSONResponse({"dispatched": sent})


async def _admit_service(request: Request, audiences: list[str]) -> Response | None:
    try:
        await asyncio.to_thread(auth.service_caller, request, audiences)
    except (AuthError, Forbidden, AuthMisconfigured) as exc:
        return response_for(exc, request)
    return None


def _own_url(request: Request) -> str | None:
    """The URL this function was called at, as OIDC audiences name it (https, no query).

    Taken from the request, unlike the api's audience: retry and sweep admit only the
    invoker service account, and Cloud Run IAM (run.invoker granted to that account alone,
    internal ingress) has already checked the token's audience against this service before
    the request reaches the code; this check is the second one. Terraform cannot name a
    function's own URL in its own environment (a self-reference), and the api, which
    admits allUsers and so has no such first check, takes its audience from configuration
    only (docs/security.md)."""
    base = auth.request_audience(request)
    return f"{base}{request.url.path}".rstrip("/") if base else None


def _task_name(request: Request) -> str:
    return str(request.headers.get("X-CloudTasks-TaskName", "?"))


# ---- Pub/Sub push ---------------------------------------------------------------------------


def _ack() -> Response:
    """200: Pub/Sub push takes any 2xx as the ack (functions-framework said "OK")."""
    return Response("OK", media_type="text/plain")


def _refuse(what: str, message_id: str, attempt: Any, why: str) -> Response:
    """400 for a message no redelivery can fix: Pub/Sub takes it as a nack, redelivers it
    with the subscription's backoff and, after its dead_letter_policy's
    max_delivery_attempts, moves it to the dead-letter topic, where a person finds it.
    Acking it instead would make it vanish with nothing but a log line."""
    log.error(
        "%s: malformed message %s refused for the dead-letter topic (delivery %s): %s",
        what,
        message_id,
        attempt if attempt is not None else "?",
        why,
    )
    return Response(f"malformed message: {why}"[:1000], status_code=400, media_type="text/plain")


async def pubsub_push(
    request: Request, handler: Callable[[Engine, PubSubMessage], Awaitable[Any]], what: str
) -> Response:
    """Run `handler` for the message of a Pub/Sub push request; answer 2xx (ack) when it
    is done, 400 (nack, so it ends in the dead-letter topic) when the message is
    malformed, raise (500: redeliver) on anything else."""
    setup_telemetry(SERVICE)
    envelope = await _json_or_none(request)
    attempt = _delivery_attempt(envelope)
    try:
        message = pubsub_message(envelope)
    except MalformedMessage as exc:
        return _refuse(what, _message_id(envelope), attempt, str(exc))
    attributes = {"messaging.system": "gcp_pubsub", "messaging.message.id": message.message_id}
    try:
        with tracing.continued(message.attributes, what, attributes):
            await _run_control(lambda engine: handler(engine, message), timeout=None)
    except MalformedMessage as exc:
        return _refuse(what, message.message_id, attempt, f"{exc} (data {message.data[:200]!r})")
    return _ack()


async def exec_push(request: Request) -> Response:
    return await pubsub_push(request, handlers.execute, "exec_node")


async def complete_push(request: Request) -> Response:
    return await pubsub_push(request, handlers.complete, "complete")


async def start_push(request: Request) -> Response:
    graphs = open_graphs()

    async def start(engine: Engine, message: PubSubMessage) -> None:
        run = await handlers.start_from_event(engine, graphs, message)
        log.info("run-requests message %s → run %s", message.message_id, run.run_id)

    return await pubsub_push(request, start, "start_from_event")


async def _json_or_none(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return None


def _delivery_attempt(envelope: Any) -> Any:
    """`deliveryAttempt` of the envelope: Pub/Sub sets it on subscriptions with a
    dead-letter policy (the emulator does not)."""
    return envelope.get("deliveryAttempt") if isinstance(envelope, dict) else None


def _message_id(envelope: Any) -> str:
    try:
        return str(envelope["message"]["messageId"])
    except (KeyError, TypeError):
        return "?"


async def _run_control(
    work: Callable[[Engine], Awaitable[Any]], timeout: float | None = CONTROL_TIMEOUT_S
) -> Any:
    engine = open_engine()
    async with asyncio.timeout(timeout):
        return await work(engine)


__all__ = [
    "complete_push",
    "exec_push",
    "http_api",
    "http_retry",
    "http_sweep",
    "open_api",
    "open_graphs",
    "start_push",
]
