"""A local stand-in for the Gemini REST API, so tests and offline demos need no network.

google-genai talks to it unchanged once `GOOGLE_GEMINI_BASE_URL` (or
`HttpOptions(base_url=...)`) points here. Standard library only, so it runs anywhere.

Endpoints (the `{version}` may be v1, v1beta, v1beta1 or v1alpha; anything between the
version and `models/` is accepted, so Vertex paths such as
`/v1beta1/projects/P/locations/L/publishers/google/models/M:generateContent` work too):

- `POST /{version}/models/{model}:generateContent`
- `POST /{version}/models/{model}:streamGenerateContent?alt=sse`: server-sent events,
  `data: {...}\\r\\n\\r\\n`, two words per chunk; the last chunk carries finishReason
  and usageMetadata.
- `GET /stub/calls`: what was asked (see `GeminiStub.calls`); `POST /stub/reset`.

Answers are a pure function of the request, so tests can assert them exactly:

- The *answer* is `f"[{base_model}] {last_user_text}"`, where base_model is the model
  name without its `~...` fault suffix and last_user_text is the text parts of the last
  `user` turn joined with "" (a repair turn therefore changes the answer).
- Text mode: the text is the answer. JSON mode (`responseMimeType: application/json`):
  the text is `json.dumps(value)` where value satisfies `responseSchema` (Gemini's
  OpenAPI subset, types like "OBJECT") or `responseJsonSchema` (JSON Schema): every
  listed and required property, `const` or the first `enum` value when given, the
  first non-null branch of anyOf/oneOf, `$ref` into `$defs`/`definitions`, integers and
  numbers 1 (moved into [minimum, maximum]), booleans true, arrays of max(1, minItems)
  items, strings the answer (cut to maxLength). Without a schema: `{"text": answer}`.
- Then `stopSequences` cut the text before the first occurrence of any of them, and
  `maxOutputTokens` keeps that many words (finishReason MAX_TOKENS instead of STOP).
- Tokens are whitespace-separated words. promptTokenCount counts the system
  instruction and every text part of every turn; candidatesTokenCount the returned
  text; thoughtsTokenCount and cachedContentTokenCount are 0 unless a fault asks;
  totalTokenCount = prompt + candidates + thoughts. modelVersion is base_model.
- The system instruction changes the answer only through promptTokenCount; it is
  recorded in `calls()` so tests can assert it was sent.

Fault injection rides on the model name, which the SDK copies into the URL path
unchanged: `gemini-2.5-flash~fail=2x429~latency=100ms`. The same grammar is accepted in
an `x-stub-faults` request header (added to the suffix's faults). Items are separated by
`~` or `,`; durations are `<number>ms` or `<number>s`:

    fail=NxCODE     the first N calls of this conversation answer HTTP CODE, then the
                    next item (repeatable: fail=1x429~fail=1x503), then success
    status=CODE     every call answers HTTP CODE (400, 401, 403, 404, 429, 500, 503...)
    retrydelay=DUR  google.rpc.RetryInfo retryDelay on error answers (429 has 1s by
                    default; other codes carry none unless this is given)
    latency=DUR     wait before answering (added to the server-wide latency)
    chunkdelay=DUR  wait between streamed chunks
    badjson=N       the first N answered calls in JSON mode return truncated JSON
    block           promptFeedback.blockReason SAFETY, no candidates
    finish=REASON   finishReason REASON; SAFETY-like reasons come without any text
    thoughts=N      report N thinking tokens;  cached=N  report N cached prompt tokens

"This conversation" is the raw model name (suffix included), the header's faults and
the first user turn's text, so a JSON repair turn appended to a conversation counts as
its second call. An unknown fault answers 400 with a message listing the grammar.

Run it alone with `python -m emulator.gemini_stub --port 8089 [--latency-ms N]`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

_CALL_PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1beta1|v1alpha)/(?:.*/)?models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent)$"
)
_FAULT_HEADER = "x-stub-faults"
_WORDS_PER_CHUNK = 2
_DEFAULT_429_DELAY_S = 1.0
_SAFETY_REASONS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"})
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GRAMMAR = (
    "fail=NxCODE, status=CODE, retrydelay=DUR, latency=DUR, chunkdelay=DUR, badjson=N, "
    "block, finish=REASON, thoughts=N, cached=N (DUR is like 100ms or 2s; items joined "
    "by '~' or ',')"
)


class _BadRequest(Exception):
    """The request cannot be answered as asked; becomes a 400 INVALID_ARGUMENT."""


# ---- faults ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Faults:
    fail: tuple[tuple[int, int], ...] = ()
    status: int | None = None
    retry_delay_s: float | None = None
    latency_s: float = 0.0
    chunk_delay_s: float = 0.0
    badjson: int = 0
    block: bool = False
    finish: str | None = None
    thoughts: int = 0
    cached: int = 0

    def error_for(self, call_index: int) -> int | None:
        """The HTTP status the call with this 0-based index must fail with, if any."""
        if self.status is not None:
            return self.status
        start = 0
        for count, code in self.fail:
            if call_index < start + count:
                return code
            start += count
        return None


def _duration(value: str, item: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", value.strip())
    if not match:
        raise _BadRequest(f"stub fault {item!r}: expected a duration like 100ms or 2s")
    number = float(match.group(1))
    return number / 1000.0 if match.group(2) == "ms" else number


def _count(value: str, item: str) -> int:
    if not value.isdigit():
        raise _BadRequest(f"stub fault {item!r}: expected a whole number, found {value!r}")
    return int(value)


def _http_code(value: str, item: str) -> int:
    code = _count(value, item)
    if not 400 <= code <= 599:
        raise _BadRequest(f"stub fault {item!r}: expected an HTTP error code 400..599")
    return code


def _parse_faults(spec: str) -> _Faults:
    """Parse the fault grammar of the module docstring; raises _BadRequest."""
    faults = _Faults()
    for raw in re.split(r"[~,]", spec):
        item = raw.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name == "fail":
            match = re.fullmatch(r"(\d+)x(\d{3})", value.strip())
            if not match:
                raise _BadRequest(f"stub fault {item!r}: expected fail=NxCODE, e.g. fail=2x429")
            step = (int(match.group(1)), _http_code(match.group(2), item))
            faults = replace(faults, fail=(*faults.fail, step))
        elif name == "status":
            faults = replace(faults, status=_http_code(value, item))
        elif name == "retrydelay":
            faults = replace(faults, retry_delay_s=_duration(value, item))
        elif name == "latency":
            faults = replace(faults, latency_s=faults.latency_s + _duration(value, item))
        elif name == "chunkdelay":
            faults = replace(faults, chunk_delay_s=_duration(value, item))
        elif name == "badjson":
            faults = replace(faults, badjson=_count(value, item))
        elif name == "block" and not value:
            faults = replace(faults, block=True)
        elif name == "finish" and value:
            faults = replace(faults, finish=value.strip().upper())
        elif name == "thoughts":
            faults = replace(faults, thoughts=_count(value, item))
        elif name == "cached":
            faults = replace(faults, cached=_count(value, item))
        else:
            raise _BadRequest(f"unknown stub fault {item!r}; expected one of: {_GRAMMAR}")
    return faults


# ---- answers --------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def _turn_text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _user_turns(body: dict[str, Any]) -> list[str]:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    return [
        _turn_text(c) for c in contents if isinstance(c, dict) and c.get("role", "user") == "user"
    ]


def _prompt_tokens(body: dict[str, Any]) -> int:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    return _words(_turn_text(body.get("systemInstruction") or {})) + sum(
        _words(_turn_text(c)) for c in contents
    )


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for key in ref.removeprefix("#/").split("/"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise _BadRequest(f"schema $ref {ref!r} does not resolve inside the schema")
    return node


def _value_for(schema: Any, answer: str, root: dict[str, Any], depth: int = 0) -> Any:
    """The simplest value satisfying `schema` (rules in the module docstring)."""
    if not isinstance(schema, dict) or depth > 32:
        return answer
    if "$ref" in schema:
        return _value_for(_resolve_ref(str(schema["$ref"]), root), answer, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if _type_of(o) != "null"]
        if options:
            return _value_for(options[0], answer, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        ordering = schema.get("propertyOrdering") or schema.get("property_ordering") or []
        order = [*ordering, *props]
        names = list(dict.fromkeys([*order, *(schema.get("required") or [])]))
        return {n: _value_for(props.get(n, {}), answer, root, depth + 1) for n in names}
    if kind == "array":
        count = max(1, int(schema.get("minItems") or 0))
        return [_value_for(schema.get("items", {}), answer, root, depth + 1)] * count
    if kind in ("integer", "number"):
        value = 1
        if schema.get("minimum") is not None:
            value = max(value, schema["minimum"])
        if schema.get("maximum") is not None:
            value = min(value, schema["maximum"])
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    max_length = schema.get("maxLength")
    return answer[: int(max_length)] if max_length is not None else answer


def _type_of(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "string"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _cut_words(text: str, limit: int) -> str:
    """The text up to the end of its `limit`-th word."""
    if limit <= 0:
        return ""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text if len(ends) <= limit else text[: ends[limit - 1]]


@dataclass
class _Answer:
    text: str
    finish_reason: str
    usage: dict[str, int]
    blocked: bool = False


def _answer(body: dict[str, Any], base_model: str, faults: _Faults, answered: int) -> _Answer:
    """What the model says for this request; `answered` counts earlier successful calls
    of the same conversation (for badjson)."""
    config = body.get("generationConfig") or {}
    turns = _user_turns(body)
    answer = f"[{base_model}] {turns[-1] if turns else ''}"
    finish = "STOP"
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        value = _value_for(schema, answer, schema) if schema else {"text": answer}
        text = json.dumps(value)
        if answered < faults.badjson:
            text = text[: max(1, len(text) // 2)]
    else:
        text = answer
    for stop in config.get("stopSequences") or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    limit = config.get("maxOutputTokens")
    if limit is not None and _words(text) > int(limit):
        text = _cut_words(text, int(limit))
        finish = "MAX_TOKENS"
    if faults.finish:
        finish = faults.finish
        if finish in _SAFETY_REASONS:
            text = ""
    prompt = _prompt_tokens(body)
    candidates = 0 if faults.block else _words(text)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + faults.thoughts,
        "thoughtsTokenCount": faults.thoughts,
        "cachedContentTokenCount": min(faults.cached, prompt),
    }
    return _Answer(text=text, finish_reason=finish, usage=usage, blocked=faults.block)


def _response_chunks(answer: _Answer, base_model: str, stream: bool) -> Iterator[dict[str, Any]]:
    """The JSON objects of one answer: one for generateContent, several for streaming."""
    common = {"modelVersion": base_model, "responseId": f"stub-{time.monotonic_ns()}"}
    if answer.blocked:
        yield {
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                ],
            },
            "usageMetadata": answer.usage,
            **common,
        }
        return
    pieces = re.split(r"(?<=\s)(?=\S)", answer.text) if answer.text else []
    if stream:
        groups = [
            "".join(pieces[i : i + _WORDS_PER_CHUNK])
            for i in range(0, len(pieces), _WORDS_PER_CHUNK)
        ] or [""]
    else:
        groups = [answer.text]
    for i, group in enumerate(groups):
        candidate: dict[str, Any] = {"index": 0}
        if group:
            candidate["content"] = {"role": "model", "parts": [{"text": group}]}
        chunk: dict[str, Any] = {"candidates": [candidate], **common}
        if i == len(groups) - 1:
            candidate["finishReason"] = answer.finish_reason
            chunk["usageMetadata"] = answer.usage
        yield chunk


def _error_body(code: int, message: str, retry_delay_s: float | None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if code == 429:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "stub/generate_content_requests"}],
            }
        )
    if retry_delay_s is None and code == 429:
        retry_delay_s = _DEFAULT_429_DELAY_S
    if retry_delay_s is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{retry_delay_s:g}s",
            }
        )
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": _STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _error_message(code: int, model: str, version: str, method: str) -> str:
    if code == 404:
        return (
            f"models/{model} is not found for API version {version}, or is not supported "
            f"for {method}. (gemini stub: injected fault)"
        )
    if code == 429:
        return "Resource has been exhausted (e.g. check quota). (gemini stub: injected fault)"
    if code == 400:
        return "Request contains an invalid argument. (gemini stub: injected fault)"
    return f"The service answered {code}. (gemini stub: injected fault)"


# ---- server ---------------------------------------------------------------------------


@dataclass
class _State:
    """Call counters and log, shared by the handler threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: dict[tuple[str, str, str], int] = field(default_factory=dict)
    answered: dict[tuple[str, str, str], int] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            counts = [
                {"model": model, "faults": header, "prompt": prompt, "count": n}
                for (model, header, prompt), n in self.calls.items()
            ]
            return {"total": len(self.log), "counts": counts, "log": list(self.log)}

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.answered.clear()
            self.log.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default listen backlog is 5: with more simultaneous calls Linux drops
    # the surplus handshakes and the clients retry after 1 s (TCP's retransmit timer).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], latency_s: float) -> None:
        super().__init__(address, _Handler)
        self.latency_s = latency_s
        self.state = _State()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "gemini-stub/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the call log at /stub/calls is the record."""

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") == "/stub/calls":
            self._send_json(200, self.server.state.snapshot())
        else:
            self._send_json(404, _error_body(404, f"no GET route {self.path}", None))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path.rstrip("/") == "/stub/reset":
            self.server.state.reset()
            self._send_json(200, {"reset": True})
            return
        match = _CALL_PATH.match(path)
        if not match:
            message = (
                f"no route {path}; expected POST /v1beta/models/MODEL:generateContent "
                "or :streamGenerateContent"
            )
            self._send_json(404, _error_body(404, message, None))
            return
        try:
            self._generate(unquote(match["model"]), match["method"], match["version"])
        except _BadRequest as exc:
            self._send_json(400, _error_body(400, str(exc), None))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nobody is left to answer

    def _generate(self, raw_model: str, method: str, version: str) -> None:
        base_model, _, suffix = raw_model.partition("~")
        header = self.headers.get(_FAULT_HEADER, "")
        faults = _parse_faults(f"{suffix}~{header}")
        body = self._read_body()
        stream = method == "streamGenerateContent"
        turns = _user_turns(body)
        key = (raw_model, header, turns[0] if turns else "")
        state = self.server.state
        with state.lock:
            index = state.calls.get(key, 0)
            state.calls[key] = index + 1
            error = faults.error_for(index)
            answered = state.answered.get(key, 0)
            if error is None:
                state.answered[key] = answered + 1
            state.log.append(
                {
                    "seq": len(state.log) + 1,
                    "model": raw_model,
                    "base_model": base_model,
                    "method": method,
                    "stream": stream,
                    "api_version": version,
                    "faults": header,
                    "prompt": key[2],
                    "last_user_text": turns[-1] if turns else "",
                    "system": _turn_text(body.get("systemInstruction") or {}) or None,
                    "generation_config": body.get("generationConfig") or {},
                    "safety_settings": body.get("safetySettings") or [],
                    "status": error or 200,
                }
            )
        delay = self.server.latency_s + faults.latency_s
        if delay > 0:
            time.sleep(delay)
        if error is not None:
            message = _error_message(error, base_model, version, method)
            self._send_json(error, _error_body(error, message, faults.retry_delay_s))
            return
        answer = _answer(body, base_model, faults, answered)
        chunks = _response_chunks(answer, base_model, stream)
        if not stream:
            self._send_json(200, next(chunks))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for i, chunk in enumerate(chunks):
            if i and faults.chunk_delay_s:
                time.sleep(faults.chunk_delay_s)
            self.wfile.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            self.wfile.flush()

    def _read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise _BadRequest(f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _BadRequest(f"request body must be a JSON object, found {type(body).__name__}")
        return body

    def _send_json(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class GeminiStub:
    """The stub server in a daemon thread: `with GeminiStub() as stub: ... stub.url`."""

    def __init__(self, port: int = 0, latency_s: float = 0.0, host: str = "127.0.0.1") -> None:
        self._address = (host, port)
        self._latency_s = latency_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GeminiStub:
        """Bind (port 0 picks a free port) and serve until `stop`."""
        if self._server is None:
            self._server = _Server(self._address, self._latency_s)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # so stop() returns promptly
                name="gemini-stub",
                daemon=True,
            )
            self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._running().server_address[1]

    @property
    def url(self) -> str:
        """Base URL for `GOOGLE_GEMINI_BASE_URL`, e.g. http://127.0.0.1:8089."""
        return f"http://{self._address[0]}:{self.port}"

    def calls(self) -> dict[str, Any]:
        """`{"total": n, "counts": [{model, faults, prompt, count}], "log": [...]}`;
        each log entry records model, method, prompt, system, generation_config, status."""
        return self._running().state.snapshot()

    def count(self, model: str | None = None, prompt: str | None = None) -> int:
        """Calls so far, optionally only those with this raw model name and first prompt."""
        return sum(
            1
            for entry in self.calls()["log"]
            if (model is None or entry["model"] == model)
            and (prompt is None or entry["prompt"] == prompt)
        )

    def reset(self) -> None:
        """Forget all calls, so fault counters start again."""
        self._running().state.reset()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _running(self) -> _Server:
        if self._server is None:
            raise RuntimeError("GeminiStub is not running: call start() or use it in a with block")
        return self._server

    def __enter__(self) -> GeminiStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-in for the Gemini REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    args = parser.parse_args(argv)
    server = _Server((args.host, args.port), args.latency_ms / 1000.0)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"gemini stub on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
