"""Glue between functions-framework (Flask requests, CloudEvents) and the handlers.

`functions/main.py` declares the entry points and calls these; everything here runs the
engine's coroutines on the process's one event loop (`loop.run`) with the engine built
once per process (`open_engine`).

Status codes are the delivery contract: for Pub/Sub push and Cloud Tasks, 2xx acks and
anything else redelivers. A CloudEvent function that returns acks; one that raises
answers 500, so Pub/Sub redelivers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentgraph.api import Api, ApiRequest, ApiResponse, Headers, error
from agentgraph.backends.gcp import TRANSIENT_ERRORS, auth, handlers, loop, open_engine
from agentgraph.backends.gcp.pubsub_envelope import PubSubMessage, pubsub_message
from agentgraph.core import names
from agentgraph.core.errors import AuthError, AuthMisconfigured, Forbidden, MalformedMessage
from agentgraph.engine import Engine

log = logging.getLogger("agentgraph.functions")

API_TIMEOUT_S = 55.0  # under the api function's 60 s timeout
CONTROL_TIMEOUT_S = 55.0  # complete, retry, sweep, start_from_event
# exec: no timeout of ours; the node's timeout_s bounds the work, the function's the rest.

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


def open_api(openapi_path: Path | str | None = None) -> Api:
    """The process's Api (engine, graph store, token verification, OpenAPI document)."""
    global _api
    graphs = open_graphs()
    with _lock:
        if _api is None:
            _api = Api(
                open_engine(),
                graphs,
                authenticate=auth.caller,
                openapi=_load_openapi(openapi_path),
                transient=TRANSIENT_ERRORS,
            )
        return _api


def _load_openapi(path: Path | str | None) -> dict[str, Any]:
    if path is None or not Path(path).exists():
        return {}
    import yaml

    loaded = yaml.safe_load(Path(path).read_text())
    return loaded if isinstance(loaded, dict) else {}


# ---- HTTP ----------------------------------------------------------------------------------


def http_api(request: Any, openapi_path: Path | str | None = None) -> Any:
    """The `api` function: Flask request in, Flask response out."""
    api_request = ApiRequest(
        method=request.method,
        path=request.path,
        headers=Headers(request.headers.items()),
        query={k: v for k, v in request.args.items()},
        body=request.stream,
        content_length=request.content_length,
    )
    try:
        api = open_api(openapi_path)
    except Exception as exc:  # configuration: say what is missing, as JSON like the rest
        log.exception("the api could not be set up")
        return to_flask(error(500, "misconfigured", f"the api could not be set up: {exc}"))
    try:
        response = loop.run(api.handle(api_request), API_TIMEOUT_S)
    except TimeoutError:
        response = error(503, "timeout", "the request took too long; retry", Retry_After="1")
    return to_flask(response)


def http_retry(request: Any) -> Any:
    """The `retry` function: a Cloud Task came due. 2xx acks the task; 5xx makes Cloud
    Tasks try again (with the queue's backoff), so transient failures are retried."""

    def audiences() -> list[str]:
        return [a for a in (os.environ.get(names.ENV_RETRY_URL), _own_url(request)) if a]

    denied = _admit_service(request, audiences())
    if denied is not None:
        return to_flask(denied)
    body = request.get_data(cache=False)
    try:
        due = _run_control(lambda engine: handlers.retry(engine, body))
    except MalformedMessage as exc:
        log.error("retry task %s dropped: %s", _task_name(request), exc)
        # 2xx on purpose: Cloud Tasks would otherwise retry a body that can never work.
        return to_flask(ApiResponse(202, {"dropped": str(exc)}))
    return to_flask(
        ApiResponse(200, {"run_id": due.run_id, "node_id": due.node_id, "attempt": due.attempt})
    )


def http_sweep(request: Any) -> Any:
    """The `sweep` function (Cloud Scheduler, every minute): re-dispatch what dead
    functions left behind; answers how many messages it sent."""
    denied = _admit_service(request, [_own_url(request) or ""])
    if denied is not None:
        return to_flask(denied)
    sent = _run_control(lambda engine: engine.sweep())
    return to_flask(ApiResponse(200, {"dispatched": sent}))


def _admit_service(request: Any, audiences: list[str]) -> ApiResponse | None:
    try:
        auth.service_caller(request, audiences)
    except AuthError as exc:
        return error(401, "unauthenticated", str(exc), WWW_Authenticate="Bearer")
    except Forbidden as exc:
        return error(403, "forbidden", str(exc))
    except AuthMisconfigured as exc:
        log.error("auth is misconfigured: %s", exc)
        return error(500, "misconfigured", str(exc))
    return None


def _own_url(request: Any) -> str | None:
    """The URL this function was called at, as OIDC audiences name it (https, no query)."""
    base = auth.request_audience(request)
    return f"{base}{request.path}".rstrip("/") if base else None


def _task_name(request: Any) -> str:
    return str(request.headers.get("X-CloudTasks-TaskName", "?"))


def to_flask(response: ApiResponse) -> Any:
    from flask import Response

    return Response(
        response.json_bytes(),
        status=response.status,
        headers=response.headers,
        mimetype="application/json" if response.body is not None else None,
    )


# ---- CloudEvents (Pub/Sub push) -------------------------------------------------------------


def pubsub_event(
    event: Any, handler: Callable[[Engine, PubSubMessage], Awaitable[Any]], what: str
) -> None:
    """Run `handler` for a Pub/Sub CloudEvent; return (ack) when it is done or when the
    message is malformed (logged with its id), raise (redeliver) on anything else."""
    try:
        message = pubsub_message(event.data)
    except MalformedMessage as exc:
        # The framework makes the Pub/Sub message id the CloudEvent id.
        log.error("%s: malformed message %s acked and dropped: %s", what, _event_id(event), exc)
        return
    try:
        _run_control(lambda engine: handler(engine, message), timeout=None)
    except MalformedMessage as exc:
        log.error(
            "%s: malformed message %s acked and dropped: %s (data %r)",
            what,
            message.message_id,
            exc,
            message.data[:200],
        )


def exec_event(event: Any) -> None:
    pubsub_event(event, handlers.execute, "exec_node")


def complete_event(event: Any) -> None:
    pubsub_event(event, handlers.complete, "complete")


def start_event(event: Any) -> None:
    graphs = open_graphs()

    async def start(engine: Engine, message: PubSubMessage) -> None:
        run = await handlers.start_from_event(engine, graphs, message)
        log.info("run-requests message %s → run %s", message.message_id, run.run_id)

    pubsub_event(event, start, "start_from_event")


def _event_id(event: Any) -> str:
    try:
        return str(event["id"])
    except (KeyError, TypeError):
        return "?"


def _run_control(
    work: Callable[[Engine], Awaitable[Any]], timeout: float | None = CONTROL_TIMEOUT_S
) -> Any:
    engine = open_engine()

    async def call() -> Any:
        return await work(engine)

    return loop.run(call(), timeout)


__all__ = [
    "complete_event",
    "exec_event",
    "http_api",
    "http_retry",
    "http_sweep",
    "open_api",
    "open_graphs",
    "start_event",
]
