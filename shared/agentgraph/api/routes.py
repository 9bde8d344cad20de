"""The api's routes: what each endpoint does, and the table that serves and documents them.

`ENDPOINTS` is the one list of routes: `Api` serves it through Starlette's router (paths
like `/runs/{run_id:id}`, so Starlette answers unknown paths and wrong methods), and
`agentgraph.api.openapi` generates the OpenAPI document from it and the body models. Each
endpoint names the errors it raises on purpose; their statuses come from the table in
`agentgraph.core.errors`, so the documented answers are the ones the handler can give.

A run or graph of another caller is a 404, exactly like one that does not exist, so ids
reveal nothing. `POST /runs` is idempotent with an `Idempotency-Key` header: the store
keeps one run per (owner, key) with the hash of the canonical request body, so the same
key and body give the same run (201 the first time, 200 after), and the same key with
another body is a 409.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agentgraph.api import bodies, models
from agentgraph.api.caller import Authenticate, Caller
from agentgraph.api.errors import response_for, route_errors
from agentgraph.core import approval
from agentgraph.core.errors import (
    AgentgraphError,
    ApprovalConflict,
    GraphInvalid,
    GraphNotFound,
    IdempotencyConflict,
    InputInvalid,
    LimitExceeded,
    LlmNotConfigured,
    NodeNotFound,
    Problem,
    RedriveConflict,
    RequestInvalid,
    RunNotFound,
)
from agentgraph.core.limits import check_start
from agentgraph.core.messages import RUN_ID_REGEX, RunRequest
from agentgraph.core.model import NODE_ID_PATTERN, GraphSpec
from agentgraph.core.ports import GraphStore
from agentgraph.core.records import NodeRecord, RunRecord
from agentgraph.core.run_json import run_to_json
from agentgraph.engine import Engine, new_run_id
from agentgraph.engine_grow import resolve_stored_subgraphs

MAX_LIST = 200
NODES_PAGE = 100  # nodes per GET /runs/{id} unless ?nodes_limit= (outputs are up to 10 MiB)
MAX_NODES_PAGE = 1000
CONSOLE_PREFIX = "/api"  # the web console reaches the api at /api/** (infra hosting.tf)
ID_PATTERN = RUN_ID_REGEX  # also what graph names fit in; never a Firestore-reserved __x__


class _IdConvertor(StringConvertor):
    """Run and graph ids in paths: anything else is no route (404) before any lookup."""

    regex = ID_PATTERN


register_url_convertor("id", _IdConvertor())


class _NodeIdConvertor(StringConvertor):
    """Node ids in paths (the graph format's pattern)."""

    regex = NODE_ID_PATTERN.removeprefix("^").removesuffix("$")


register_url_convertor("node_id", _NodeIdConvertor())


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of a value: key order and spacing do not matter."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _json(body: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


class Api:
    """The HTTP api as an ASGI app over an engine and a graph store. One per process;
    requests run concurrently on the server's event loop.

    `authenticate` verifies the caller (blocking is fine: it runs on a worker thread).
    `transient` are the backend's failure types that a retry can fix (503, Retry-After);
    `deadline_s` bounds each request so it answers before the platform's own timeout.
    """

    def __init__(
        self,
        engine: Engine,
        graphs: GraphStore,
        *,
        authenticate: Authenticate,
        transient: tuple[type[BaseException], ...] = (),
        deadline_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.graphs = graphs
        self.authenticate = authenticate
        self.transient: tuple[type[BaseException], ...] = (TimeoutError, *transient)
        self.deadline_s = deadline_s
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(CONSOLE_PREFIX + "/"):
            # Firebase Hosting forwards the console's /api/** here with the prefix kept.
            scope = {**scope, "path": scope["path"][len(CONSOLE_PREFIX) :]}
        if scope["type"] == "http" and len(scope["path"]) > 1 and scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"].rstrip("/")}
        await self.app(scope, receive, send)

    @cached_property
    def app(self) -> ASGIApp:
        routes = [
            Route(e.path, self._endpoint(e), methods=[e.method], name=e.operation_id)
            for e in ENDPOINTS
        ]
        app = Starlette(routes=routes, exception_handlers=route_errors(routes))
        app.router.redirect_slashes = False
        return app

    def _endpoint(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            try:
                async with asyncio.timeout(self.deadline_s):
                    caller = None
                    if not endpoint.public:
                        caller = await asyncio.to_thread(self.authenticate, request)
                    return await endpoint.handler(self, request, caller)
            except Exception as exc:
                return response_for(exc, request, self.transient)

        return serve

    @cached_property
    def openapi(self) -> dict[str, Any]:
        from agentgraph.api.openapi import document

        return document(ENDPOINTS)

    # ---- runs ---------------------------------------------------------------------------

    async def create_run(self, request: Request, caller: Caller | None) -> Response:
        assert caller is not None
        body = await bodies.json_body(request)
        key = bodies.idempotency_key(request)
        spec = bodies.validated(RunRequest, body)
        await self._check_limits(caller)
        document = await self._resolve_graph(spec, caller)
        request_hash = await asyncio.to_thread(canonical_hash, body)
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
        location = {"Location": f"/runs/{run.run_id}"}
        if run.run_id == run_id:
            return _json(models.RunSummary.of(run), 201, location)
        if run.request_hash != request_hash:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was used for run {run.run_id} with a different "
                "request body; use a new key for a new run"
            )
        return _json(models.RunSummary.of(run), 200, location)

    async def _check_limits(self, caller: Caller) -> None:
        """Per-owner limits (core/limits.py), counted from the caller's runs; admins are
        not limited. Over a limit: LimitExceeded, a 429 with Retry-After."""
        activity = self.engine.owner_activity
        if activity is None or caller.is_admin:
            return
        now = self.clock()
        limits = self.engine.owner_limits
        check_start(limits, await activity.activity(caller.uid, now, limits), now)

    async def _resolve_graph(self, spec: RunRequest, caller: Caller) -> dict[str, Any]:
        """The graph to run, with its stored subgraphs (`graph: name@version`) inlined."""
        if spec.graph is not None:
            return await resolve_stored_subgraphs(spec.graph, caller.uid, self.graphs)
        assert spec.graph_id is not None
        stored = await self.graphs.get(caller.uid, spec.graph_id, spec.version)
        if stored is None:
            raise GraphNotFound(spec.graph_id, spec.version)
        return await resolve_stored_subgraphs(stored.definition, caller.uid, self.graphs)

    async def _visible_run(
        self, caller: Caller | None, run_id: str, *, counts: bool = False
    ) -> RunRecord:
        """`counts`: only for answers that show them (a running run's are aggregated)."""
        assert caller is not None
        run = await self.engine.store.get_run_summary(run_id, counts=counts)
        if run is None or not caller.may_see(run.owner):
            raise RunNotFound(run_id)
        return run

    async def get_run(self, request: Request, caller: Caller | None) -> Response:
        limit = bodies.int_param(request, "nodes_limit", NODES_PAGE, 1, MAX_NODES_PAGE)
        after = bodies.int_param(request, "nodes_after", -1, 0, 2**62)
        run = await self._visible_run(caller, request.path_params["run_id"], counts=True)
        page = await self.engine.store.list_nodes_page(
            run.run_id, limit=limit, after=None if after < 0 else after
        )
        return _json(models.Run.with_nodes(run, page.nodes, next_nodes_after=page.next_after))

    async def list_runs(self, request: Request, caller: Caller | None) -> Response:
        assert caller is not None
        limit = bodies.int_param(request, "limit", 50, 1, MAX_LIST)
        owner = request.query_params.get("owner") if caller.is_admin else caller.uid
        runs = await self.engine.store.list_runs(owner=owner, limit=limit)
        return _json(models.RunList(runs=[models.RunSummary.of(r) for r in runs]))

    async def get_events(self, request: Request, caller: Caller | None) -> Response:
        run = await self._visible_run(caller, request.path_params["run_id"])
        after = bodies.int_param(request, "after", 0, 0, 2**62)
        events = await self.engine.store.list_events(run.run_id, after=after or None)
        return _json(models.EventsPage(events=[models.Event.of(e) for e in events]))

    async def get_steps(self, request: Request, caller: Caller | None) -> Response:
        run = await self._visible_run(caller, request.path_params["run_id"])
        node_id = request.path_params["node_id"]
        if await self.engine.store.get_node(run.run_id, node_id) is None:
            raise NodeNotFound(run.run_id, node_id)
        steps = await self.engine.store.list_steps(run.run_id, node_id)
        return _json(
            models.StepsPage(
                run_id=run.run_id, node_id=node_id, steps=[models.Step.of(s) for s in steps]
            )
        )

    async def cancel_run(self, request: Request, caller: Caller | None) -> Response:
        run = await self._visible_run(caller, request.path_params["run_id"])
        changed = await self.engine.cancel(run.run_id)
        after = await self.engine.store.get_run_summary(run.run_id) or run
        summary = models.RunSummary.of(after).model_dump()
        return _json(models.CancelledRun(**summary, cancelled=changed))

    # ---- approvals and redrive ----------------------------------------------------------

    async def approve_node(self, request: Request, caller: Caller | None) -> Response:
        body = await bodies.optional_json_body(request)
        spec = bodies.validated(models.ApprovalRequest, body)
        payload = spec.payload if "payload" in spec.model_fields_set else approval.UNSET
        return await self._decide(request, caller, "approved", spec.comment, payload)

    async def reject_node(self, request: Request, caller: Caller | None) -> Response:
        body = await bodies.optional_json_body(request)
        spec = bodies.validated(models.RejectionRequest, body)
        return await self._decide(request, caller, "rejected", spec.comment, approval.UNSET)

    async def _decide(
        self,
        request: Request,
        caller: Caller | None,
        decision: approval.Decision,
        comment: str | None,
        payload: Any,
    ) -> Response:
        """The run's owner (or an admin) or an approver the node lists may decide; to
        anyone else the run does not exist (404), as for any run of another owner."""
        assert caller is not None
        run_id, node_id = request.path_params["run_id"], request.path_params["node_id"]
        run = await self.engine.store.get_run(run_id, counts=False)
        if run is None:
            raise RunNotFound(run_id)
        step = self.engine.approval_step(run, node_id)
        approvers = step.approvers if step is not None else []
        if not caller.may_see(run.owner) and not approval.may_decide(
            [caller.uid, caller.email], None, approvers
        ):
            raise RunNotFound(run_id)
        record = await self.engine.decide_approval(
            run_id, node_id, decision, caller.email or caller.uid, comment, payload
        )
        return _json(models.DecidedNode(run_id=run_id, node=_node(run, record)))

    async def redrive_run(self, request: Request, caller: Caller | None) -> Response:
        run = await self._visible_run(caller, request.path_params["run_id"])
        redriven, nodes = await self.engine.redrive(run.run_id)
        after = await self.engine.store.get_run(run.run_id) or run
        summary = models.RunSummary.of(after).model_dump()
        return _json(models.RedrivenRun(**summary, redriven=redriven, nodes_to_run=nodes))

    # ---- graphs -------------------------------------------------------------------------

    async def create_graph(self, request: Request, caller: Caller | None) -> Response:
        assert caller is not None
        document = await bodies.graph_body(request)
        graph = await self.engine.compile_off_loop(document)
        digest = await asyncio.to_thread(canonical_hash, document)
        stored, created = await self.graphs.save(caller.uid, graph.name, document, digest)
        return _json(
            models.GraphVersion.of(stored),
            201 if created else 200,
            {"Location": f"/graphs/{stored.id}?version={stored.version}"},
        )

    async def get_graph(self, request: Request, caller: Caller | None) -> Response:
        assert caller is not None
        graph_id = request.path_params["graph_id"]
        version = bodies.int_param(request, "version", 0, 1, 2**31) or None
        stored = await self.graphs.get(caller.uid, graph_id, version)
        if stored is None:
            raise GraphNotFound(graph_id, version)
        return _json(models.StoredGraphBody.with_definition(stored))

    # ---- service ------------------------------------------------------------------------

    async def health(self, request: Request, caller: Caller | None) -> Response:
        return _json(models.Health())

    async def get_openapi(self, request: Request, caller: Caller | None) -> Response:
        return JSONResponse(self.openapi)


def _node(run: RunRecord, record: NodeRecord) -> models.Node:
    return models.Node.model_validate(run_to_json(run, [record])["nodes"][0])


# ---- the route table ------------------------------------------------------------------------

Handler = Callable[[Api, Request, Caller | None], Awaitable[Response]]


@dataclass(frozen=True)
class Reply:
    """A successful answer: its description, body model and whether it sets Location."""

    description: str
    model: type[BaseModel]
    location: bool = False


@dataclass(frozen=True)
class Param:
    """A query or header parameter (path parameters come from the path)."""

    name: str
    where: str  # query | header
    schema: Mapping[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    """One route. Besides the `raises` it names, every endpoint may answer 401 (unless
    public), 413 (when it reads a body) and 503 (when it uses the store)."""

    method: str
    path: str  # Starlette's, with convertors: /runs/{run_id:id}
    operation_id: str
    summary: str
    handler: Handler
    replies: Mapping[int, Reply]
    raises: tuple[type[AgentgraphError], ...] = ()
    public: bool = False
    body: type[BaseModel] | None = None
    body_types: tuple[str, ...] = ("application/json",)
    params: tuple[Param, ...] = ()
    description: str = ""
    uses_store: bool = True


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/runs",
        "createRun",
        "Start a run",
        Api.create_run,
        {
            201: Reply("The run was created.", models.RunSummary, location=True),
            200: Reply(
                "The run created earlier with this Idempotency-Key and body.",
                models.RunSummary,
                location=True,
            ),
        },
        raises=(
            RequestInvalid,
            GraphInvalid,
            InputInvalid,
            LlmNotConfigured,
            GraphNotFound,
            IdempotencyConflict,
            LimitExceeded,
        ),
        body=RunRequest,
        params=(
            Param(
                "Idempotency-Key",
                "header",
                {"type": "string", "maxLength": bodies.MAX_IDEMPOTENCY_KEY},
                "1 to 256 printable ASCII characters without spaces; a UUID is a good key.",
            ),
        ),
        description="Validates the graph and the input, writes the run and its nodes, and "
        "dispatches the root nodes. With an `Idempotency-Key`, repeating the request returns "
        "the same run (200); the same key with a different body is a 409.",
    ),
    Endpoint(
        "GET",
        "/runs",
        "listRuns",
        "Recent runs of the caller (admins: of everyone, or of ?owner=)",
        Api.list_runs,
        {200: Reply("Newest first.", models.RunList)},
        raises=(RequestInvalid,),
        params=(
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIST}),
            Param("owner", "query", {"type": "string"}, "admins only"),
        ),
    ),
    Endpoint(
        "GET",
        "/runs/{run_id:id}",
        "getRun",
        "A run with a page of its nodes",
        Api.get_run,
        {200: Reply("The run and one page of its nodes, in the graph's order.", models.Run)},
        raises=(RunNotFound, RequestInvalid),
        params=(
            Param(
                "nodes_limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": MAX_NODES_PAGE},
                f"Nodes per page (default {NODES_PAGE}).",
            ),
            Param(
                "nodes_after",
                "query",
                {"type": "integer", "minimum": 0},
                "The `next_nodes_after` of the previous page; absent for the first page.",
            ),
        ),
        description=f"Returns the run's summary and at most `nodes_limit` nodes (default "
        f"{NODES_PAGE}, at most {MAX_NODES_PAGE}). When the run has more, `next_nodes_after` "
        "is set: request the same path with `?nodes_after=<it>` for the next page; it is null "
        "on the last page. The summary is read on every page, so it may be newer than the "
        "first page's nodes.",
    ),
    Endpoint(
        "GET",
        "/runs/{run_id:id}/events",
        "getRunEvents",
        "The run's timeline (status changes, retries, errors)",
        Api.get_events,
        {200: Reply("Events in order.", models.EventsPage)},
        raises=(RunNotFound, RequestInvalid),
        params=(
            Param(
                "after",
                "query",
                {"type": "integer", "minimum": 0},
                "Only events with a larger `seq` (to follow a run).",
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/runs/{run_id:id}/nodes/{node_id:node_id}/steps",
        "getNodeSteps",
        "The steps of an agent's tool loop (model turns and tool calls)",
        Api.get_steps,
        {200: Reply("Steps by index.", models.StepsPage)},
        raises=(RunNotFound, NodeNotFound),
        description="Every completed model turn (tokens, cost, duration, text and function "
        "calls) and tool call (arguments, result or error, duration) of the node, across "
        "its attempts. A node without `tools` has none.",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id:id}/cancel",
        "cancelRun",
        "Cancel a run",
        Api.cancel_run,
        {200: Reply("The run after the cancellation.", models.CancelledRun)},
        raises=(RunNotFound,),
        description="Nodes that have not started are cancelled; running nodes finish their "
        "call but start nothing after them. Cancelling a run that already ended changes "
        "nothing (`cancelled: false`).",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id:id}/nodes/{node_id:node_id}/approve",
        "approveNode",
        "Approve a node that waits for approval",
        Api.approve_node,
        {200: Reply("The node, succeeded; its output records the decision.", models.DecidedNode)},
        raises=(RunNotFound, NodeNotFound, ApprovalConflict, RequestInvalid),
        body=models.ApprovalRequest,
        description="For the run's owner and the approvers the node's `approval` lists (by "
        "uid or verified email). The node succeeds with the output `{decision: approved, by, "
        "comment, payload, message, at}`; `payload` is the body's, else the node's computed "
        "value. Approving again returns the same decision (200); approving a node that was "
        "rejected, timed out or is not waiting for approval is a 409.",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id:id}/nodes/{node_id:node_id}/reject",
        "rejectNode",
        "Reject a node that waits for approval",
        Api.reject_node,
        {200: Reply("The node, failed with ApprovalRejected.", models.DecidedNode)},
        raises=(RunNotFound, NodeNotFound, ApprovalConflict, RequestInvalid),
        body=models.RejectionRequest,
        description="The node fails (ApprovalRejected, with the comment) and its `on_error` "
        "applies. Rejecting again returns the same decision (200); rejecting a node that was "
        "approved, timed out or is not waiting for approval is a 409.",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id:id}/redrive",
        "redriveRun",
        "Run a failed or cancelled run again from where it stopped",
        Api.redrive_run,
        {200: Reply("The run, running again.", models.RedrivenRun)},
        raises=(RunNotFound, RedriveConflict),
        description="Succeeded nodes keep their outputs; failed, cancelled, never-run nodes "
        "and those skipped because of a failure run again with fresh attempts. A run that is "
        "running, pending or succeeded is a 409; a request that races an identical one "
        "answers 200 with `redriven: false`.",
    ),
    Endpoint(
        "POST",
        "/graphs",
        "createGraph",
        "Store a new version of a graph definition",
        Api.create_graph,
        {
            201: Reply("A new version was stored.", models.GraphVersion, location=True),
            200: Reply(
                "The definition equals the latest version.", models.GraphVersion, location=True
            ),
        },
        raises=(RequestInvalid, GraphInvalid),
        body=GraphSpec,
        body_types=("application/json", "application/yaml"),
        description="The body is the definition itself (JSON, or YAML with a YAML content "
        "type). It is validated first. The graph's `name` is its id; each change makes a new "
        "version, and posting the latest definition again returns that version (200). "
        "Names are per caller: another caller's graph of the same name is another graph.",
    ),
    Endpoint(
        "GET",
        "/graphs/{graph_id:id}",
        "getGraph",
        "A stored graph (the latest version, or ?version=)",
        Api.get_graph,
        {200: Reply("The definition.", models.StoredGraphBody)},
        raises=(GraphNotFound, RequestInvalid),
        params=(Param("version", "query", {"type": "integer", "minimum": 1}),),
    ),
    Endpoint(
        "GET",
        "/healthz",
        "health",
        "Liveness",
        Api.health,
        {200: Reply("The function is up.", models.Health)},
        public=True,
        uses_store=False,
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        "openapi",
        "This document",
        Api.get_openapi,
        {200: Reply("OpenAPI 3.1", models.OpenApiDocument)},
        public=True,
        uses_store=False,
    ),
)
