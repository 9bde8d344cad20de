"""The web console (web/dist) on this machine, as Firebase Hosting serves it in production.

`ConsoleServer` is a small threaded HTTP server that
- serves the built console (`web/dist`, made by `npm run build` in web/; `make emulators`
  and `make test` build it first);
- answers `/config.json` with this stack's project, the Firestore emulator's address (so
  the page signs in with mock user tokens) and the api's address;
- forwards `/api/...` to the api function, so the page and the api share one origin and
  the api needs no CORS (Firebase Hosting does the same with a rewrite to the api);
- loads `firestore.rules` into the Firestore emulator for this project first: the page
  reads Firestore directly as the signed-in user, and the emulator enforces those rules
  on mock-token requests exactly as production does (the functions' own clients use the
  emulator's admin credentials, which the rules do not apply to, like service accounts).
"""

from __future__ import annotations

import json
import mimetypes
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WEB_DIST = REPO_ROOT / "web" / "dist"
RULES = REPO_ROOT / "firestore.rules"
API_PREFIX = "/api"
_FORWARDED = ("Authorization", "Content-Type", "Idempotency-Key")


class ConsoleNotBuilt(RuntimeError):
    """web/dist is missing: `make web` (or `make emulators`) builds it."""


def load_rules(firestore_host: str, project: str, rules: Path = RULES) -> None:
    """Make the Firestore emulator enforce `rules` for `project` (its REST endpoint)."""
    body = json.dumps({"rules": {"files": [{"name": rules.name, "content": rules.read_text()}]}})
    request = urllib.request.Request(
        f"http://{firestore_host}/emulator/v1/projects/{project}:securityRules",
        data=body.encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


class ConsoleServer:
    """`web/dist` + `/config.json` + `/api` forwarding, on 127.0.0.1:`port` (0: a free one)."""

    def __init__(
        self,
        *,
        project: str,
        firestore_host: str,
        api_url: str,
        port: int = 0,
        dist: Path = WEB_DIST,
    ) -> None:
        if not (dist / "index.html").exists():
            raise ConsoleNotBuilt(f"{dist}/index.html is missing: run `make web` first")
        self.dist = dist.resolve()
        self.api_url = api_url.rstrip("/")
        host, _, fs_port = firestore_host.rpartition(":")
        self.config = {
            "firebase": {"projectId": project, "apiKey": "emulator-key"},
            "apiUrl": API_PREFIX,
            "emulator": {"firestoreHost": host, "firestorePort": int(fs_port)},
        }
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        console = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                if self.path.startswith(API_PREFIX + "/"):
                    self._forward()
                elif self.path.split("?")[0] == "/config.json":
                    self._send(200, json.dumps(console.config).encode(), "application/json")
                else:
                    self._static()

            def do_POST(self) -> None:
                if self.path.startswith(API_PREFIX + "/"):
                    self._forward()
                else:
                    self._send(405, b"method not allowed", "text/plain")

            def _static(self) -> None:
                relative = self.path.split("?")[0].split("#")[0].lstrip("/") or "index.html"
                target = (console.dist / relative).resolve()
                if not target.is_relative_to(console.dist) or not target.is_file():
                    self._send(404, b"not found", "text/plain")
                    return
                kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                self._send(200, target.read_bytes(), kind)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {h: v for h in _FORWARDED if (v := self.headers.get(h))}
                url = console.api_url + self.path[len(API_PREFIX) :]
                request = urllib.request.Request(
                    url, data=body, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, data = response.status, response.read()
                        kind = response.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as error:
                    status, data = error.code, error.read()
                    kind = error.headers.get("Content-Type", "application/json")
                self._send(status, data, kind)

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

        return Handler
