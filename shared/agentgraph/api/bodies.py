"""Reading what a request carries: its body (size-limited, JSON or YAML), the
Idempotency-Key header and integer query parameters. Every problem is a RequestInvalid
naming where it is (`body`, `headers.Idempotency-Key`, `query.limit`), or PayloadTooLarge.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from agentgraph.core.documents import parse_json, parse_yaml
from agentgraph.core.errors import PayloadTooLarge, Problem, RequestInvalid
from agentgraph.core.messages import ONE_GRAPH
from agentgraph.core.validate import MAX_INPUT_BYTES

# The largest input (10 MiB) plus room for the graph and the envelope around it.
MAX_BODY_BYTES = MAX_INPUT_BYTES + 1024 * 1024
MAX_IDEMPOTENCY_KEY = 256
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,256}$")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
M = TypeVar("M", bound=BaseModel)


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes "
        f"(run inputs may be up to {MAX_INPUT_BYTES:,} bytes)"
    )


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused before reading when Content-Length is over `limit`, and while
    reading as soon as more than `limit` bytes arrived (a chunked or lying upload)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    """The body as JSON, parsed on a worker thread: a body may be 11 MiB."""
    return await asyncio.to_thread(_parse_json, await read_body(request))


async def optional_json_body(request: Request) -> Any:
    """The body as JSON, or {} when there is none (a decision without a comment)."""
    data = await read_body(request)
    return await asyncio.to_thread(_parse_json, data) if data.strip() else {}


async def graph_body(request: Request) -> dict[str, Any]:
    """POST /graphs takes the definition itself, as JSON or (with a YAML content type)
    as YAML, the way graph files are usually written."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data = await read_body(request)
    if content_type in YAML_TYPES:
        document = await asyncio.to_thread(parse_yaml, data)
    else:
        document = await asyncio.to_thread(_parse_json, data)
    if not isinstance(document, dict):
        raise RequestInvalid(
            [Problem("body", f"expected a graph definition (a mapping), found {kind(document)}")]
        )
    return document


def validated(model: type[M], body: Any) -> M:
    """`body` as `model`, or RequestInvalid listing every field that is wrong."""
    if not isinstance(body, dict):
        raise RequestInvalid([Problem("body", f"expected a JSON object, found {kind(body)}")])
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


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
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
    return key


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """`?name=` as an integer from `low` to `high`, `default` when absent. Only what the
    document calls an integer: ASCII digits with an optional minus, so an empty value,
    `+1`, ` 1` or `1_000` (all of which `int()` takes) are a 400 like any other non-integer."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw) if _INTEGER.fullmatch(raw) else low - 1
    if not low <= value <= high:
        raise RequestInvalid(
            [Problem(f"query.{name}", f"expected an integer from {low} to {high}, found {raw!r}")]
        )
    return value


def kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _parse_json(data: bytes) -> Any:
    if not data.strip():
        raise RequestInvalid([Problem("body", "is empty; expected a JSON object")])
    return parse_json(data)
