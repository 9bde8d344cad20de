"""A local stand-in for the Gemini REST API, so tests and offline demos need no network.

google-genai talks to it unchanged once `GOOGLE_GEMINI_BASE_URL` (or
`HttpOptions(base_url=...)`) points here. Standard library only, so it runs anywhere.

This module is the HTTP protocol: routes, request parsing, call counting, streaming. What
the stub answers is `gemini_answers.py` (a pure function of the request, so tests assert
it exactly), and the faults a test can ask for are `gemini_faults.py`.

Endpoints (the `{version}` may be v1, v1beta, v1beta1 or v1alpha; anything between the
version and `models/` is accepted, so Vertex paths such as
`/v1beta1/projects/P/locations/L/publishers/google/models/M:generateContent` work too):

- `POST /{version}/models/{model}:generateContent`
- `POST /{version}/models/{model}:streamGenerateContent?alt=sse`: server-sent events,
  `data: {...}\\r\\n\\r\\n`, two words per chunk; the last chunk carries finishReason
  and usageMetadata.
- `GET /stub/calls`: what was asked (see `GeminiStub.calls`); `POST /stub/reset`.

Function calling is scripted by `@call TURN NAME {args}` lines in the prompt (see
`gemini_answers.py`); each log entry records the declared `tools`, the `model_turns`
already in the conversation and the thought `signatures` sent back with them.

Faults ride on the model name (`gemini-2.5-flash~fail=2x429~latency=100ms`) or the
`x-stub-faults` header. Fault counters are per conversation: the raw model name (suffix
included), the header's faults and the first user turn's text, so a JSON repair turn
appended to a conversation counts as its second call. The system instruction is
recorded in `calls()` so tests can assert it was sent.

Run it alone with `python -m emulator.gemini_stub --port 8089 [--latency-ms N]`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from emulator.gemini_answers import (
    answer_for,
    attachments_of,
    declared_tools,
    error_body,
    error_message,
    last_user_content,
    model_turns,
    response_chunks,
    returned_signatures,
    turn_text,
    user_turns,
)
from emulator.gemini_faults import BadRequest, parse_faults

_CALL_PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1beta1|v1alpha)/(?:.*/)?models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent)$"
)
_FAULT_HEADER = "x-stub-faults"


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
    # Keep-alive, as Gemini's front ends: a client's pooled connection carries its calls
    # (HTTP/1.0 would make every call pay a TCP connect and the stub a thread).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else a reply's body waits out the client's delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the call log at /stub/calls is the record."""

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") == "/stub/calls":
            self._send_json(200, self.server.state.snapshot())
        else:
            self._send_json(404, error_body(404, f"no GET route {self.path}", None))

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
            self._send_json(404, error_body(404, message, None))
            return
        try:
            self._generate(unquote(match["model"]), match["method"], match["version"])
        except BadRequest as exc:
            self._send_json(400, error_body(400, str(exc), None))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nobody is left to answer

    def _generate(self, raw_model: str, method: str, version: str) -> None:
        base_model, _, suffix = raw_model.partition("~")
        header = self.headers.get(_FAULT_HEADER, "")
        faults = parse_faults(f"{suffix}~{header}")
        body = self._read_body()
        stream = method == "streamGenerateContent"
        turns = user_turns(body)
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
                    "system": turn_text(body.get("systemInstruction") or {}) or None,
                    "generation_config": body.get("generationConfig") or {},
                    "safety_settings": body.get("safetySettings") or [],
                    "tools": declared_tools(body),
                    "model_turns": model_turns(body),
                    "signatures": returned_signatures(body),
                    "attachments": attachments_of(last_user_content(body)),
                    "status": error or 200,
                }
            )
        delay = self.server.latency_s + faults.latency_s
        if delay > 0:
            time.sleep(delay)
        if error is not None:
            message = error_message(error, base_model, version, method)
            self._send_json(error, error_body(error, message, faults.retry_delay_s))
            return
        reply = answer_for(body, base_model, faults, answered)
        chunks = response_chunks(reply, base_model, stream)
        if not stream:
            self._send_json(200, next(chunks))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends with the connection
        self.close_connection = True
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
            raise BadRequest(f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest(f"request body must be a JSON object, found {type(body).__name__}")
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
        each log entry records model, method, prompt, system, generation_config, status,
        and the last user turn's files (`attachments`: mime_type with bytes or uri)."""
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
