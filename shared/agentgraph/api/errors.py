"""Every error answer of the api, as JSON `{"error": {"code", "message", "details"}}`.

An exception raised by a handler becomes its answer through the table in
`agentgraph.core.errors` (`kind_of`: status, code, Retry-After); the backend names the types
of its transient failures (`transient`), which answer 503 with Retry-After like Contention.
Unknown routes (404) and wrong methods (405, with Allow) are found by Starlette's router
and only reworded here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match

from agentgraph.api.models import ErrorBody
from agentgraph.core.errors import INTERNAL, UNAVAILABLE, AuthMisconfigured, Problem, kind_of

log = logging.getLogger("agentgraph.api")

ExceptionHandler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def error_response(
    status: int,
    code: str,
    message: str,
    problems: Sequence[Problem] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody.of(code, message, problems).json_body()
    return JSONResponse(body, status_code=status, headers=headers)


def response_for(
    exc: BaseException, request: Request, transient: tuple[type[BaseException], ...] = ()
) -> JSONResponse:
    """The answer to a request whose handler raised `exc`."""
    kind = kind_of(exc, transient)
    message = str(exc)
    problems: Sequence[Problem] = ()
    if hasattr(exc, "problems"):  # GraphInvalid, InputInvalid, RequestInvalid
        message, problems = message.split("\n", 1)[0], exc.problems
    if kind is INTERNAL:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        message = "internal error; see the function's logs"
    elif kind is UNAVAILABLE:
        log.warning("%s %s: transient failure: %r", request.method, request.url.path, exc)
        message = "a backing service is unavailable; retry"
    elif isinstance(exc, AuthMisconfigured):
        log.error("auth is misconfigured: %s", exc)
    headers: dict[str, str] = {}
    if kind.retry_after_s is not None:
        headers["Retry-After"] = str(kind.retry_after_s)
    if kind.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(kind.http_status, kind.code, message, problems, headers)


def route_errors(routes: Iterable[BaseRoute]) -> dict[Any, ExceptionHandler]:
    """Starlette exception handlers for the router's own answers (404 and 405)."""
    table = list(routes)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            404,
            "not_found",
            f"no route {request.method} {request.url.path}; see /openapi.json",
        )

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's Allow names only the first route on the path (and HEAD); every
        # route on it counts.
        allowed = sorted(
            {
                method
                for route in table
                if route.matches(request.scope)[0] is not Match.NONE
                for method in getattr(route, "methods", None) or ()
            }
            - {"HEAD"}
        )
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}; use {' or '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )

    async def other(request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error_response(status, "invalid_request", str(getattr(exc, "detail", exc)))

    return {404: not_found, 405: method_not_allowed, HTTPException: other}
