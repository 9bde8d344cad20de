"""The HTTP api: an ASGI app (Starlette) over the engine and a graph store.

- `routes`: what each endpoint does, and `ENDPOINTS`, the one table that serves and
  documents them;
- `models`: the request and response bodies (pydantic);
- `bodies`: reading a request (size limit, JSON or YAML, headers, query parameters);
- `errors`: every error answer, from the table in `agentgraph.core.errors`;
- `openapi`: the OpenAPI document, generated from the table and the models;
- `caller`: who is calling (the server passes an `authenticate` callable).

Whoever serves it (the `api` Cloud Function, `agentgraph.backends.gcp.functions`) passes the
token check; tests call it through Starlette's TestClient, without a server.

The names below are loaded on first use, so a caller that needs only the body models
(`agentgraph.api.models`, as the Python client does) does not import the server side
(Starlette, the engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgraph.api.bodies import MAX_BODY_BYTES
    from agentgraph.api.caller import Authenticate, Caller
    from agentgraph.api.routes import ENDPOINTS, Api, canonical_hash

_WHERE = {
    "MAX_BODY_BYTES": "bodies",
    "Authenticate": "caller",
    "Caller": "caller",
    "ENDPOINTS": "routes",
    "Api": "routes",
    "canonical_hash": "routes",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"agentgraph.api.{_WHERE[name]}"), name)


__all__ = ["ENDPOINTS", "MAX_BODY_BYTES", "Api", "Authenticate", "Caller", "canonical_hash"]
