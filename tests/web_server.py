"""A small real HTTP server on 127.0.0.1 for the http_get tests (standard library only).

Routes: /text (a short text answer that echoes the Host header), /binary (bytes that are
not text), /big?n=N (N bytes, streamed in 64 KiB chunks), /hang (answers only when the
server stops: a test of the timeout, with nothing timed in the test),
/redirect?to=URL (302 to URL), /loop (redirects to itself), /cut (promises 1000 bytes,
sends 10 and closes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.hosts: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.hosts.append(self.headers.get("Host", ""))
        if parts.path == "/text":
            self._send(200, f"hello from {self.headers.get('Host')}".encode(), "text/plain")
        elif parts.path == "/binary":
            self._send(200, bytes(range(256)), "application/octet-stream")
        elif parts.path == "/big":
            n = int(query.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while n > 0:
                    self.wfile.write(chunk[: min(n, len(chunk))])
                    n -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading at its cap
        elif parts.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.wfile.flush()
            self.close_connection = True
        elif parts.path == "/hang":
            self.server.stopping.wait()
        elif parts.path == "/redirect":
            self._redirect(query["to"])
        elif parts.path == "/loop":
            self._redirect("/loop")
        else:
            self._send(404, b"no such page", "text/plain")

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def web_server() -> Iterator[_Server]:
    """The server, serving on a daemon thread until the block ends."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
