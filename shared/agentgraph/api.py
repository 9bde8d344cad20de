"""The HTTP API as a pure mapping from a request to a response.

No web framework here: `functions/main.py` turns a Flask request into an `ApiRequest` and
the `ApiResponse` back, so every route, status code and error body is tested without a
server (tests/unit/test_api.py) and the same mapping serves the Cloud Function and the
emulator stack.

Errors are JSON `{"error": {"code", "message", "details"}}`. A 400 lists every problem
found (graph, input and request shape), each with its path. A run or graph of another
caller is a 404, exactly like one that does not exist, so ids reveal nothing.

`POST /runs` is idempotent with an `Idempotency-Key` header: the store keeps one run per
(owner, key) with the hash of the canonical request body, so the same key and body give
the same run (201 the first time, 200 after), and the same key with another body is a 409.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import yaml
from pydantic import ValidationError

from agentgraph.backends.gcp.auth import Caller
from agentgraph.core.errors import (
    AuthError,
    AuthMisconfigured,
    Forbidden,
    GraphInvalid,
    GraphNotFound,
    IdempotencyConflict,
    InputInvalid,
    LlmNotConfigured,
    Problem,
    RequestInvalid,
    RunNotFound,
)
from agentgraph.core.messages import ONE_GRAPH, RunRequest
from agentgraph.core.ports import Event, GraphStore, RunRecord, StoredGraph
from agentgraph.core.run_json import run_to_json
from agentgraph.core.validate import MAX_INPUT_BYTES
from agentgraph.engine import Engine, new_run_id

log = logging.getLogger("agentgraph.api")

# The largest input (10 MiB) plus room for the graph and the envelope around it.
MAX_BODY_BYTES = MAX_INPUT_BYTES + 1024 * 1024
MAX_IDEMPOTENCY_KEY = 256
MAX_LIST = 200
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,256}$")


# ---- requests and responses -------------------------------------------------------------


class Headers(dict[str, str]):
    """Case-insensitive header lookup (names are stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        super().__init__((k.lower(), v) for k, v in pairs)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class ApiRequest:
    """What the routes need from an HTTP request. `body` is read only after the
    Content-Length check, so an oversized upload is refused before it is read."""

    method: str
    path: str
    headers: Headers = field(default_factory=Headers)
    query: Mapping[str, str] = field(default_factory=dict)
    body: IO[bytes] | None = None
    content_length: int | None = None

    def read(self, limit: int) -> bytes:
        """At most `limit` + 1 bytes, so a chunked body over the limit is detected."""
        return self.body.read(limit + 1) if self.body is not None else b""


@dataclass
class ApiResponse:
    status: int
    body: Any = None  # JSON-serialisable; None means no body
    headers: dict[str, str] = field(default_factory=dict)

    def json_bytes(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body, ensure_ascii=False).encode()


def error(
    status: int, code: str, message: str, details: list[Any] | None = None, **headers: str
) -> ApiResponse:
    return ApiResponse(
        status,
        {"error": {"code": code, "message": message, "details": details or []}},
        {k.replace("_", "-"): v for k, v in headers.items()},
    )


class _HttpError(Exception):
    def __init__(self, response: ApiResponse) -> None:
        super().__init__(response.body)
        self.response = response


# ---- the API ------------------------------------------------------------------------------

Handler = Callable[["Api", ApiRequest, Caller | None, dict[str, str]], Awaitable[ApiResponse]]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of a value: key order and spacing do not matter."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Api:
    """Routes requests to the engine. One per process; `handle` is safe to call
    concurrently on one event loop."""

    def __init__(
        self,
        engine: Engine,
        graphs: GraphStore,
        *,
        authenticate: Callable[[ApiRequest], Caller],
        openapi: Mapping[str, Any] | None = None,
        transient: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.graphs = graphs
        self.authenticate = authenticate
        self.openapi = dict(openapi or {})
        self.transient = transient
        self.clock = clock

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """The response to one request; never raises (errors become JSON responses)."""
        try:
            route, params = _match(request)
            caller = None if route.public else await asyncio.to_thread(self.authenticate, request)
            return await route.handler(self, request, caller, params)
        except _HttpError as exc:
            return exc.response
        except (GraphInvalid, InputInvalid, RequestInvalid) as exc:
            code = {GraphInvalid: "invalid_graph", InputInvalid: "invalid_input"}.get(
                type(exc), "invalid_request"
            )
            problems = [p.to_dict() for p in exc.problems]
            return error(400, code, str(exc).split("\n", 1)[0], problems)
        except LlmNotConfigured as exc:
            return error(400, "model_not_configured", str(exc))
        except AuthError as exc:
            return error(401, "unauthenticated", str(exc), WWW_Authenticate="Bearer")
        except Forbidden as exc:
            return error(403, "forbidden", str(exc))
        except (RunNotFound, GraphNotFound) as exc:
            return error(404, "not_found", str(exc))
        except IdempotencyConflict as exc:
            return error(409, "idempotency_conflict", str(exc))
        except AuthMisconfigured as exc:
            log.error("auth is misconfigured: %s", exc)
            return error(500, "misconfigured", str(exc))
        except Exception as exc:
            if self.transient and isinstance(exc, self.transient):
                log.warning("%s %s: transient failure: %r", request.method, request.path, exc)
                return error(
                    503, "unavailable", "a backing service is unavailable; retry", Retry_After="1"
                )
            log.exception("%s %s failed", request.method, request.path)
            return error(500, "internal", "internal error; see the function's logs")

    # ---- runs ---------------------------------------------------------------------------

    async def _create_run(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        assert caller is not None
        body = _json_body(request)
        key = _idempotency_key(request)
        spec = _validated(RunRequest, body)
        document = await self._resolve_graph(spec, caller)
        request_hash = canonical_hash(body)
        run_id = new_run_id(self.clock())
        try:
            run = await self.engine.start_run(
                document,
                spec.input,
                owner=caller.uid,
                idempotency_key=key,
                request_hash=request_hash if key else None,
                run_id=run_id,
            )
        except GraphInvalid as exc:
            if spec.graph is None:
                raise
            raise GraphInvalid(
                [Problem(f"graph.{p.path}", p.message, p.node_id) for p in exc.problems]
            ) from exc
        if run.run_id == run_id:
            return ApiResponse(201, _run_json(run), {"Location": f"/runs/{run.run_id}"})
        if run.request_hash != request_hash:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was used for run {run.run_id} with a different "
                "request body; use a new key for a new run"
            )
        return ApiResponse(200, _run_json(run), {"Location": f"/runs/{run.run_id}"})

    async def _resolve_graph(self, spec: RunRequest, caller: Caller) -> dict[str, Any]:
        if spec.graph is not None:
            return spec.graph
        assert spec.graph_id is not None
        stored = await self.graphs.get(spec.graph_id, spec.version)
        if stored is None or not _may_see(caller, stored.owner):
            raise GraphNotFound(spec.graph_id, spec.version)
        return stored.definition

    async def _visible_run(self, caller: Caller | None, run_id: str) -> RunRecord:
        assert caller is not None
        run = await self.engine.store.get_run(run_id)
        if run is None or not _may_see(caller, run.owner):
            raise RunNotFound(run_id)
        return run

    async def _get_run(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        run = await self._visible_run(caller, params["run_id"])
        nodes = await self.engine.store.list_nodes(run.run_id)
        return ApiResponse(200, {**run_to_json(run, nodes), "owner": run.owner})

    async def _list_runs(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        assert caller is not None
        limit = _int_param(request, "limit", 50, 1, MAX_LIST)
        owner = request.query.get("owner") if caller.is_admin else caller.uid
        runs = await self.engine.store.list_runs(owner=owner, limit=limit)
        return ApiResponse(200, {"runs": [_run_json(r) for r in runs]})

    async def _get_events(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        run = await self._visible_run(caller, params["run_id"])
        after = _int_param(request, "after", 0, 0, 2**62)
        events = await self.engine.store.list_events(run.run_id, after=after or None)
        return ApiResponse(200, {"events": [_event_json(e) for e in events]})

    async def _cancel_run(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        run = await self._visible_run(caller, params["run_id"])
        changed = await self.engine.cancel(run.run_id)
        after = await self.engine.store.get_run(run.run_id) or run
        return ApiResponse(200, {**_run_json(after), "cancelled": changed})

    # ---- graphs -------------------------------------------------------------------------

    async def _create_graph(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        assert caller is not None
        document = _graph_body(request)
        graph = self.engine.compile(document)
        stored, created = await self.graphs.save(
            graph.name, document, canonical_hash(document), caller.uid, caller.is_admin
        )
        status = 201 if created else 200
        return ApiResponse(
            status,
            _graph_json(stored, with_definition=False),
            {"Location": f"/graphs/{stored.id}?version={stored.version}"},
        )

    async def _get_graph(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        assert caller is not None
        version = _int_param(request, "version", 0, 1, 2**31) or None
        stored = await self.graphs.get(params["graph_id"], version)
        if stored is None or not _may_see(caller, stored.owner):
            raise GraphNotFound(params["graph_id"], version)
        return ApiResponse(200, _graph_json(stored, with_definition=True))

    # ---- service ------------------------------------------------------------------------

    async def _health(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        return ApiResponse(200, {"status": "ok"})

    async def _openapi(
        self, request: ApiRequest, caller: Caller | None, params: dict[str, str]
    ) -> ApiResponse:
        return ApiResponse(200, self.openapi)


_ID = r"(?P<{}>[A-Za-z0-9_-]{{1,128}})"
_ROUTES: tuple[_Route, ...] = tuple(
    _Route(method, re.compile(f"^{path}$"), handler, public)
    for method, path, handler, public in (
        ("GET", "/healthz", Api._health, True),
        ("GET", "/openapi.json", Api._openapi, True),
        ("POST", "/runs", Api._create_run, False),
        ("GET", "/runs", Api._list_runs, False),
        ("GET", "/runs/" + _ID.format("run_id"), Api._get_run, False),
        ("GET", "/runs/" + _ID.format("run_id") + "/events", Api._get_events, False),
        ("POST", "/runs/" + _ID.format("run_id") + "/cancel", Api._cancel_run, False),
        ("POST", "/graphs", Api._create_graph, False),
        ("GET", "/graphs/" + _ID.format("graph_id"), Api._get_graph, False),
    )
)


def _match(request: ApiRequest) -> tuple[_Route, dict[str, str]]:
    path = request.path.rstrip("/") or "/"
    method = request.method.upper()
    allowed: list[str] = []
    for route in _ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route, found.groupdict()
        allowed.append(route.method)
    if allowed:
        raise _HttpError(
            error(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path}; use {' or '.join(sorted(set(allowed)))}",
                Allow=", ".join(sorted(set(allowed))),
            )
        )
    raise _HttpError(error(404, "not_found", f"no route {method} {path}; see /openapi.json"))


# ---- helpers ------------------------------------------------------------------------------


def _may_see(caller: Caller, owner: str | None) -> bool:
    return caller.is_admin or (owner is not None and owner == caller.uid)


def _read_body(request: ApiRequest) -> bytes:
    too_large = error(
        413,
        "payload_too_large",
        f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes "
        f"(run inputs may be up to {MAX_INPUT_BYTES:,} bytes)",
    )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _HttpError(too_large)
    data = request.read(MAX_BODY_BYTES)
    if len(data) > MAX_BODY_BYTES:
        raise _HttpError(too_large)
    return data


def _json_body(request: ApiRequest) -> Any:
    data = _read_body(request)
    if not data.strip():
        raise RequestInvalid([Problem("body", "is empty; expected a JSON object")])
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestInvalid([Problem("body", f"is not valid JSON: {exc}")]) from exc


def _graph_body(request: ApiRequest) -> dict[str, Any]:
    """POST /graphs takes the definition itself, as JSON or (with a YAML content type)
    as YAML, the way graph files are usually written."""
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in _YAML_TYPES:
        data = _read_body(request)
        try:
            document = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise RequestInvalid([Problem("body", f"is not valid YAML: {exc}")]) from exc
    else:
        document = _json_body(request)
    if not isinstance(document, dict):
        raise RequestInvalid(
            [Problem("body", f"expected a graph definition (a mapping), found {_kind(document)}")]
        )
    return document


def _validated(model: type[RunRequest], body: Any) -> RunRequest:
    if not isinstance(body, dict):
        raise RequestInvalid([Problem("body", f"expected a JSON object, found {_kind(body)}")])
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [
            Problem(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()
        ]
        # pydantic skips the whole-body check when a field failed: report it as well.
        if ("graph" in body) == ("graph_id" in body) and all(p.path != "body" for p in problems):
            problems.append(Problem("body", ONE_GRAPH))
        raise RequestInvalid(problems) from exc


def _idempotency_key(request: ApiRequest) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY_PATTERN.match(key):
        raise RequestInvalid(
            [
                Problem(
                    "headers.Idempotency-Key",
                    f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters without "
                    "spaces (a UUID is a good key)",
                )
            ]
        )
    return str(key)


def _int_param(request: ApiRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise RequestInvalid(
            [Problem(f"query.{name}", f"expected an integer from {low} to {high}, found {raw!r}")]
        )
    return value


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _run_json(run: RunRecord) -> dict[str, Any]:
    """The run without its nodes (GET /runs/{id} adds them)."""
    summary = run_to_json(run, [])
    del summary["nodes"]
    return {**summary, "owner": run.owner}


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at,
        "kind": event.kind,
        "node_id": event.node_id,
        "status": event.status,
        "attempt": event.attempt,
        "message": event.message,
    }


def _graph_json(stored: StoredGraph, *, with_definition: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": stored.id,
        "version": stored.version,
        "latest_version": stored.latest_version,
        "hash": stored.hash,
        "owner": stored.owner,
        "created_at": stored.created_at,
    }
    if with_definition:
        body["definition"] = stored.definition
    return body
