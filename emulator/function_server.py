"""One Cloud Function under functions-framework, as Cloud Functions would run it.

`functions_framework_command` is the one place that spells the command line of a function
process (the emulator stack, the end-to-end tests and the emulator facts all start their
functions through `FunctionServer`, which uses it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from emulator.processes import LOOPBACK, Server


def functions_framework_command(
    target: str, source: Path | str, signature_type: str, port: int
) -> list[str]:
    """The argv that serves entry point `target` of `source` on LOOPBACK:`port`."""
    exe = Path(sys.executable).parent / "functions-framework"
    program = [str(exe)] if exe.exists() else [sys.executable, "-m", "functions_framework"]
    return [
        *program,
        f"--target={target}",
        f"--source={source}",
        f"--signature-type={signature_type}",
        f"--host={LOOPBACK}",
        f"--port={port}",
    ]


class FunctionServer(Server):
    """A functions-framework server for one function, as Cloud Functions would run it.

    Ready when it answers `GET /robots.txt` (404 from the framework, without calling the
    function). `url` is the base URL to push to.
    """

    name = "functions-framework"
    startup_timeout = 30.0

    def __init__(
        self,
        target: str,
        source: Path | str,
        *,
        signature_type: str = "http",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        log_dir: Path | str | None = None,
    ) -> None:
        super().__init__(port, log_dir=log_dir)
        self.name = f"functions-framework {target}"
        self.target = target
        self.source = Path(source)
        self.signature_type = signature_type
        self.extra_env = dict(env or {})

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _argv(self, port: int) -> list[str]:
        return functions_framework_command(self.target, self.source, self.signature_type, port)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def _answers(self) -> bool:
        return self._http_get("/robots.txt") is not None
