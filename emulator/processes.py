"""Server processes for the emulators and functions: launch, wait until ready, stop by group.

What is guaranteed:

- Each server runs as a child process in its own process group on a free port (or a given
  one), and is stopped by that group's id (SIGTERM, then SIGKILL): the Java grandchildren
  that gcloud and the launcher scripts spawn go with it. `stop()` returns only when no
  live process of the group is left, so nothing outlives a test session; an `atexit` hook
  covers sessions that forget to stop.
- `start()` returns only when the server answers (each kind says what answering means in
  `_answers`). One that exits or hangs raises `EmulatorError` quoting the end of its log;
  one that lost the race for a free port is relaunched on another (up to 3 times).

The kinds of server are in `java_emulators.py` (Firestore, Pub/Sub), `tasks_emulator.py`
(Cloud Tasks) and `function_server.py` (functions-framework); `harness.py` composes them.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
DEFAULT_PROJECT = "demo-agentgraph"
DEFAULT_LOCATION = "us-central1"
REPO_ROOT = Path(__file__).resolve().parents[1]


class EmulatorError(RuntimeError):
    """An emulator could not be started, died, or did not become ready in time."""


class EmulatorNotInstalled(EmulatorError):
    """A program the emulators need is missing; the message says what to install."""


_HANDED_OUT: set[int] = set()  # every port free_port returned in this process


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the emulator may still lose a race for it),
    and never one this process was given before. The kernel may hand the same free port to
    two binds in a row, and a stack that picks its six function ports that way would start
    two functions on one port: the one that loses it retries for seconds before it exits,
    while the other has already answered the readiness check made for both."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group.

    Zombies are left out on purpose: orphans re-parented to an init that does not reap
    them would otherwise look alive forever.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel directly
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


class ManagedProcess:
    """One child process in its own process group, logging to a file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # own session => own process group, pgid == pid
            )
        self.pid = self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25, empty: str = "(empty log)") -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or empty

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Reap the leader and wait until no live member of the group is left."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=0)
            if self.popen.returncode is not None and not _group_members(self.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        # Children first, while the leader (a launcher script or gcloud) still lives to
        # reap them: orphans would be left to an init that may be slow to reap zombies.
        children = [pid for pid in _group_members(self.pid) if pid != self.pid]
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout / 2
        # Until reaped, not merely dead: a zombie child means the leader has yet to wait().
        while any(Path(f"/proc/{pid}").exists() for pid in children):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.signal_group(signal.SIGTERM)
        if self.wait_gone(timeout):
            return
        self.signal_group(signal.SIGKILL)
        if not self.wait_gone(5.0):
            raise EmulatorError(
                f"{self.name}: processes {_group_members(self.pid)} of group {self.pid} "
                "survived SIGKILL"
            )


# How a server says it lost its port: the Java emulators, then gunicorn (functions-framework).
_PORT_TAKEN = ("Address already in use", "BindException", "Connection in use")

_LIVE: set[Server] = set()  # started and not yet stopped, for the atexit hook


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class Server:
    """A local server process on one port: launch, poll until ready, stop by group."""

    name = "server"
    startup_timeout = 60.0

    def __init__(self, port: int = 0, *, log_dir: Path | str | None = None) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._proc: ManagedProcess | None = None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._owns_log_dir = False
        self._launched_at = 0.0
        self._launches = 0
        self._ready = False
        self.startup_seconds: float | None = None

    # -- to be provided by subclasses
    def _argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _answers(self) -> bool:
        raise NotImplementedError

    def _check_installed(self) -> None:
        """Raise EmulatorNotInstalled before launching when a prerequisite is missing."""

    # -- public API
    @property
    def port(self) -> int:
        if self._port is None:
            raise EmulatorError(f"{self.name} is not started")
        return self._port

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the value of the matching *_EMULATOR_HOST variable."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the group leader (also the process group id)."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self._proc.log_path if self._proc else None

    def log_tail(self, lines: int = 25) -> str:
        """The last lines the process wrote ("" before it is launched or after `stop`)."""
        return self._proc.log_tail(lines, empty="") if self._proc else ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.exited() is None

    def start(self, timeout: float | None = None) -> Server:
        """Launch and wait until the server answers; returns self."""
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Spawn the process without waiting (start several, then `wait_ready` each)."""
        if self._proc is not None:
            raise EmulatorError(f"{self.name} is already started (pid {self._proc.pid})")
        self._check_installed()
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="agentgraph-emulators-"))
            self._owns_log_dir = True
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._spawn()
        _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while not self.poll_ready():
            if time.monotonic() > deadline:
                proc = self._proc
                raise EmulatorError(
                    f"{self.name} did not become ready on {self.host} within "
                    f"{timeout or self.startup_timeout:.0f} s. Log {self.log_path}:\n"
                    f"{proc.log_tail() if proc else ''}"
                )
            time.sleep(0.05)

    def poll_ready(self) -> bool:
        """True once the server answers; raises EmulatorError if it died."""
        if self._ready:
            return True
        proc = self._proc
        if proc is None:
            raise EmulatorError(f"{self.name} is not launched")
        code = proc.exited()
        # The Java emulators do not exit when their port is taken: they log and hang.
        port_taken = code is None and any(m in proc.log_text() for m in _PORT_TAKEN)
        if code is not None or port_taken:
            if self._requested_port == 0 and self._launches < 3:
                # Lost the race for the free port, most likely: try another one.
                proc.stop(timeout=2.0)
                self._spawn()
                return False
            what = f"exited with status {code}" if code is not None else "could not bind its port"
            raise EmulatorError(
                f"{self.name} {what} before it was ready "
                f"(command: {' '.join(proc.argv)}). Log {proc.log_path}:\n{proc.log_tail()}"
            )
        if self._answers():
            self._ready = True
            self.startup_seconds = time.monotonic() - self._launched_at
            return True
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole process group; idempotent. Keeps the log if it failed to start."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            proc.stop(timeout)
        if self._owns_log_dir and self._ready and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
            self._owns_log_dir = False
        self._ready = False
        self._port = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals
    def _spawn(self) -> None:
        assert self._log_dir is not None
        self._launches += 1
        port = self._requested_port or free_port()
        self._port = port
        slug = "".join(c if c.isalnum() else "-" for c in self.name.lower())
        log_path = self._log_dir / f"{slug}-{port}.log"
        self._launched_at = time.monotonic()
        self._proc = ManagedProcess(self.name, self._argv(port), log_path, self._env())

    def _http_get(self, path: str = "/") -> tuple[int, bytes] | None:
        """(status, body) of a GET, or None when nothing answers yet."""
        try:
            with urllib.request.urlopen(f"http://{self.host}{path}", timeout=1.0) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()
        except (OSError, http.client.HTTPException):
            return None

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                return True
        except OSError:
            return False
