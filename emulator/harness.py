"""Start and stop the Google Cloud emulators that the `gcp` backend is tested against.

Three emulators stand in for production: the official Firestore and Pub/Sub emulators that
ship with the Google Cloud CLI (Java), and the PyPI `gcloud-tasks-emulator` for Cloud Tasks,
which pins an old protobuf and therefore runs from its own virtual environment
(`.venv-tasks`), never from the project's.

What is guaranteed:

- Each emulator runs as a child process in its own process group on a free port, and is
  stopped by that group's id (SIGTERM, then SIGKILL): the Java grandchildren that gcloud and
  the launcher scripts spawn go with it. `stop()` returns only when no live process of the
  group is left, so nothing outlives a test session; an `atexit` hook covers sessions that
  forget to stop.
- `start()` returns only when the emulator answers (Firestore and Pub/Sub say "Ok" on
  `GET /`, the tasks emulator accepts connections on its gRPC port). An emulator that exits
  or hangs raises `EmulatorError` quoting the end of its log.
- A missing `gcloud`, emulator component or `java` raises `EmulatorNotInstalled` naming
  the package to install, before anything is started.
- Clients made here talk to the emulator given to them over insecure channels; nothing
  here ever falls back to real Google Cloud.

The Java emulators are started through their launchers inside the SDK
(`platform/cloud-firestore-emulator`, `platform/pubsub-emulator`), exactly as
`gcloud beta emulators ... start` would, minus the ~2 s that gcloud itself takes to start;
pass `use_gcloud=True` to go through gcloud instead.

Run `python -m emulator.harness` to keep a stack up by hand; it prints the `export` lines.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from agentgraph.core import names

if TYPE_CHECKING:
    from google.cloud import tasks_v2
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

__all__ = [
    "DEFAULT_LOCATION",
    "DEFAULT_PROJECT",
    "LOOPBACK",
    "TOPICS",
    "CloudTasksEmulator",
    "EmulatorError",
    "EmulatorNotInstalled",
    "EmulatorStack",
    "FirestoreEmulator",
    "FunctionServer",
    "PubSubEmulator",
    "create_push_subscription",
    "create_queue",
    "create_topics",
    "delete_subscription",
    "ensure_tasks_venv",
    "free_port",
    "publisher_client",
    "queue_path",
    "subscriber_client",
    "tasks_client",
]

LOOPBACK = "127.0.0.1"
DEFAULT_PROJECT = "demo-agentgraph"
DEFAULT_LOCATION = "us-central1"
TOPICS: tuple[str, ...] = (
    names.TOPIC_NODE_READY,
    names.TOPIC_NODE_FINISHED,
    names.TOPIC_RUN_REQUESTS,
    names.TOPIC_DEAD_LETTER,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS_VENV_DIR = ".venv-tasks"
TASKS_EMULATOR_REQUIREMENT = "gcloud-tasks-emulator~=0.6.2"
_TASKS_VENV_STAMP = ".agentgraph-ready"

_INSTALL_GCLOUD = (
    "apt-get install google-cloud-cli google-cloud-cli-firestore-emulator "
    "google-cloud-cli-pubsub-emulator (from Google's apt repository)"
)
_INSTALL_JAVA = (
    "apt-get install openjdk-17-jre-headless (the Firestore emulator after gcloud 528 "
    "wants Java 21 or newer)"
)


class EmulatorError(RuntimeError):
    """An emulator could not be started, died, or did not become ready in time."""


class EmulatorNotInstalled(EmulatorError):
    """A program the emulators need is missing; the message says what to install."""


# --------------------------------------------------------------------------------------
# Processes


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the emulator may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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


class _ManagedProcess:
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

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

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


_PORT_TAKEN = ("Address already in use", "BindException")

_LIVE: set[_Server] = set()  # started and not yet stopped, for the atexit hook


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class _Server:
    """A local server process on one port: launch, poll until ready, stop by group."""

    name = "server"
    startup_timeout = 60.0

    def __init__(self, port: int = 0, *, log_dir: Path | str | None = None) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._proc: _ManagedProcess | None = None
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

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.exited() is None

    def start(self, timeout: float | None = None) -> _Server:
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
        self._proc = _ManagedProcess(self.name, self._argv(port), log_path, self._env())

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


# --------------------------------------------------------------------------------------
# The emulators


def _require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") or (java_home and (Path(java_home) / "bin" / "java").exists()):
        return
    raise EmulatorNotInstalled(
        f"The Firestore and Pub/Sub emulators run on Java, but `java` is not on PATH. "
        f"Install a JRE: {_INSTALL_JAVA}."
    )


def _sdk_root() -> Path:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorNotInstalled(
            "`gcloud` is not on PATH; the Firestore and Pub/Sub emulators come with the "
            f"Google Cloud CLI. Install it: {_INSTALL_GCLOUD}."
        )
    return Path(os.path.realpath(gcloud)).parent.parent


class _JavaEmulator(_Server):
    _component = ""  # folder under <sdk>/platform
    _apt_package = ""
    _gcloud_component = ""

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        port: int = 0,
        *,
        log_dir: Path | str | None = None,
        use_gcloud: bool = False,
    ) -> None:
        super().__init__(port, log_dir=log_dir)
        self.project = project
        self.use_gcloud = use_gcloud
        self._launcher: Path | None = None

    def _check_installed(self) -> None:
        root = _sdk_root()
        _require_java()
        component = root / "platform" / self._component
        if component.is_dir():
            launchers = [p for p in component.rglob("*") if p.name == self._launcher_name()]
            self._launcher = launchers[0] if launchers else None
        elif (root / "lib" / "gcloud.py").exists():
            raise EmulatorNotInstalled(
                f"The {self.name} emulator is not installed in the Google Cloud CLI at "
                f"{root}. Install it: apt-get install {self._apt_package} (or "
                f"`gcloud components install {self._gcloud_component}` when the CLI was "
                "not installed by apt)."
            )
        # Otherwise an unusual layout: let gcloud find (or explain the lack of) it.

    def _launcher_name(self) -> str:
        raise NotImplementedError

    def _answers(self) -> bool:
        # "Ok" on GET / could come from another server that won the port; the log line
        # says that this process is the one listening.
        got = self._http_get("/")
        if got is None or got[0] != 200:
            return False
        proc = self._proc
        return proc is not None and self._ready_line(self.port) in proc.log_text()

    def _ready_line(self, port: int) -> str:
        raise NotImplementedError


class FirestoreEmulator(_JavaEmulator):
    """The official Firestore emulator (native mode)."""

    name = "Firestore"
    _component = "cloud-firestore-emulator"
    _apt_package = "google-cloud-cli-firestore-emulator"
    _gcloud_component = "cloud-firestore-emulator"

    def _launcher_name(self) -> str:
        return "cloud_firestore_emulator"

    def _ready_line(self, port: int) -> str:
        return f"API endpoint: http://{LOOPBACK}:{port}"

    def _argv(self, port: int) -> list[str]:
        if self._launcher is not None and not self.use_gcloud:
            return [
                str(self._launcher),
                "start",
                f"--host={LOOPBACK}",
                f"--port={port}",
                "--database-mode=firestore-native",
            ]
        return ["gcloud", "beta", "emulators", "firestore", "start", f"--host-port={self.host}"]

    def reset(self, project: str | None = None, database: str = "(default)") -> None:
        """Delete every document of the database (fast; the emulator keeps running)."""
        url = (
            f"http://{self.host}/emulator/v1/projects/{project or self.project}"
            f"/databases/{database}/documents"
        )
        request = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise EmulatorError(f"Firestore reset answered {resp.status} for {url}")


class PubSubEmulator(_JavaEmulator):
    """The official Pub/Sub emulator (pull and push subscriptions, filters)."""

    name = "Pub/Sub"
    _component = "pubsub-emulator"
    _apt_package = "google-cloud-cli-pubsub-emulator"
    _gcloud_component = "pubsub-emulator"

    def _launcher_name(self) -> str:
        return "cloud-pubsub-emulator"

    def _ready_line(self, port: int) -> str:
        return f"Server started, listening on {port}"

    def _argv(self, port: int) -> list[str]:
        if self._launcher is not None and not self.use_gcloud:
            return [str(self._launcher), f"--host={LOOPBACK}", f"--port={port}"]
        return [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={self.host}",
            f"--project={self.project}",
        ]


def _tasks_venv_ready(venv: Path) -> bool:
    return (venv / _TASKS_VENV_STAMP).exists() and (venv / "bin" / "gcloud-tasks-emulator").exists()


def ensure_tasks_venv(root: Path | str = REPO_ROOT, *, python: str | None = None) -> Path:
    """Create `<root>/.venv-tasks` with gcloud-tasks-emulator unless it is already there.

    Idempotent and a file stat when present. Safe against concurrent callers (a lock file
    in the temp dir) and against an interrupted install (the venv counts once its stamp
    file exists; one without a stamp is kept only if the emulator imports from it, else
    rebuilt). Takes ~30 s when it has to install. Returns the venv path.
    """
    venv = Path(root).resolve() / TASKS_VENV_DIR
    if _tasks_venv_ready(venv):
        return venv
    digest = hashlib.sha256(str(venv).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"agentgraph-tasks-venv-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _tasks_venv_ready(venv):
            return venv
        if venv.exists():
            # Made by hand (no stamp) or interrupted: keep it if the emulator imports.
            check = [str(venv / "bin" / "python"), "-c", "import gcloud_tasks_emulator.server"]
            if subprocess.run(check, capture_output=True, check=False).returncode == 0:
                (venv / _TASKS_VENV_STAMP).write_text(TASKS_EMULATOR_REQUIREMENT + "\n")
                return venv
            shutil.rmtree(venv)
        interpreter = python or shutil.which("python3") or sys.executable
        steps = [
            [interpreter, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                TASKS_EMULATOR_REQUIREMENT,
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise EmulatorNotInstalled(
                    f"Could not create the Cloud Tasks emulator environment {venv}: "
                    f"`{' '.join(step)}` exited with {done.returncode}:\n"
                    f"{(done.stdout + done.stderr)[-2000:]}\n"
                    f"By hand: python3 -m venv {venv} && {venv}/bin/pip install "
                    f"'{TASKS_EMULATOR_REQUIREMENT}'"
                )
        (venv / _TASKS_VENV_STAMP).write_text(TASKS_EMULATOR_REQUIREMENT + "\n")
    return venv


def queue_path(project: str, location: str, queue: str = names.RETRY_QUEUE) -> str:
    return f"projects/{project}/locations/{location}/queues/{queue}"


class CloudTasksEmulator(_Server):
    """gcloud-tasks-emulator (PyPI), run from its own venv, with queues created at start.

    Quirks worth knowing (0.6.2): it POSTs `http_request` tasks to their absolute URL (the
    target host/port flags only apply to App Engine tasks); it sends the task's headers plus
    X-CloudTasks-QueueName (the FULL queue path, unlike production's short name),
    X-CloudTasks-TaskName (short), -TaskRetryCount, -TaskExecutionCount, -TaskETA; it adds no
    Content-Type (urllib then sends application/x-www-form-urlencoded) and no OIDC token;
    it dispatches one task at a time per queue with no HTTP timeout; a failed task goes
    straight back to the end of the queue without backoff, forever unless `max_retries`;
    it does not reject duplicate task names; its gRPC port listens on all interfaces.
    """

    name = "Cloud Tasks"
    startup_timeout = 60.0

    def __init__(
        self,
        port: int = 0,
        *,
        project: str = DEFAULT_PROJECT,
        location: str = DEFAULT_LOCATION,
        queues: Iterable[str] = (names.RETRY_QUEUE,),
        max_retries: int | None = None,
        root: Path | str = REPO_ROOT,
        log_dir: Path | str | None = None,
    ) -> None:
        super().__init__(port, log_dir=log_dir)
        self.project = project
        self.location = location
        self.queues = tuple(queues)
        self.max_retries = max_retries
        self.root = Path(root)

    def queue_path(self, queue: str = names.RETRY_QUEUE) -> str:
        return queue_path(self.project, self.location, queue)

    def _check_installed(self) -> None:
        ensure_tasks_venv(self.root)

    def _argv(self, port: int) -> list[str]:
        exe = self.root.resolve() / TASKS_VENV_DIR / "bin" / "gcloud-tasks-emulator"
        argv = [str(exe), "start", f"--port={port}"]
        for queue in self.queues:
            argv.append(f"--default-queue={self.queue_path(queue)}")
        if self.max_retries is not None:
            argv.append(f"--max-retries={self.max_retries}")
        return argv

    def _env(self) -> dict[str, str]:
        # Its own venv only: a PYTHONPATH into the project's venv would bring in the new
        # protobuf that it cannot run with.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONWARNINGS"] = "ignore::FutureWarning"
        return env

    def _answers(self) -> bool:
        # The gRPC server listens only once started, and its queues exist before that.
        return self._accepts_connections()


class FunctionServer(_Server):
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
        exe = Path(sys.executable).parent / "functions-framework"
        program = [str(exe)] if exe.exists() else [sys.executable, "-m", "functions_framework"]
        return [
            *program,
            f"--target={self.target}",
            f"--source={self.source}",
            f"--signature-type={self.signature_type}",
            f"--host={LOOPBACK}",
            f"--port={port}",
        ]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def _answers(self) -> bool:
        return self._http_get("/robots.txt") is not None


# --------------------------------------------------------------------------------------
# Clients and resources (always pointed at an emulator, never at Google Cloud)


def _emulator_host(host: str | None, variable: str) -> str:
    host = host or os.environ.get(variable)
    if not host:
        raise EmulatorError(
            f"No emulator given: pass host= or set {variable} (the harness never talks to "
            "real Google Cloud)."
        )
    return host


def publisher_client(host: str | None = None) -> PublisherClient:
    """A PublisherClient on an insecure channel to the Pub/Sub emulator at `host`."""
    import grpc
    from google.cloud.pubsub_v1 import PublisherClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    channel = grpc.insecure_channel(_emulator_host(host, names.ENV_PUBSUB_EMULATOR))
    return PublisherClient(transport=PublisherGrpcTransport(channel=channel))


def subscriber_client(host: str | None = None) -> SubscriberClient:
    """A SubscriberClient on an insecure channel to the Pub/Sub emulator at `host`."""
    import grpc
    from google.cloud.pubsub_v1 import SubscriberClient
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    channel = grpc.insecure_channel(_emulator_host(host, names.ENV_PUBSUB_EMULATOR))
    return SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def tasks_client(host: str | None = None) -> tasks_v2.CloudTasksClient:
    """A CloudTasksClient on an insecure gRPC channel to the tasks emulator at `host`."""
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    channel = grpc.insecure_channel(_emulator_host(host, names.ENV_TASKS_EMULATOR))
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def create_topics(
    project: str, topics: Iterable[str] = TOPICS, *, host: str | None = None
) -> list[str]:
    """Create the topics (default: all of agentgraph's); existing ones are kept."""
    from google.api_core.exceptions import AlreadyExists

    publisher = publisher_client(host)
    paths = []
    try:
        for topic in topics:
            path = publisher.topic_path(project, topic)
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(request={"name": path})
            paths.append(path)
    finally:
        publisher.transport.close()
    return paths


def create_push_subscription(
    project: str,
    name: str,
    topic: str,
    push_endpoint: str,
    filter: str | None = None,
    ack_deadline_s: int = 60,
    *,
    host: str | None = None,
    min_backoff_s: float | None = None,
    max_backoff_s: float | None = None,
    exist_ok: bool = False,
) -> str:
    """Create a push subscription (optionally filtered) and return its path.

    `filter` is a Pub/Sub filter such as `names.pool_filter("default")`. With
    `exist_ok=True` an existing subscription of that name is kept as it is.
    """
    from google.api_core.exceptions import AlreadyExists

    subscriber = subscriber_client(host)
    try:
        path = subscriber.subscription_path(project, name)
        request: dict[str, Any] = {
            "name": path,
            "topic": f"projects/{project}/topics/{topic}",
            "push_config": {"push_endpoint": push_endpoint},
            "ack_deadline_seconds": ack_deadline_s,
        }
        if filter:
            request["filter"] = filter
        if min_backoff_s is not None or max_backoff_s is not None:
            request["retry_policy"] = {
                key: {"seconds": int(value), "nanos": int((value % 1) * 1e9)}
                for key, value in (
                    ("minimum_backoff", min_backoff_s),
                    ("maximum_backoff", max_backoff_s),
                )
                if value is not None
            }
        try:
            subscriber.create_subscription(request=request)
        except AlreadyExists:
            if not exist_ok:
                raise
    finally:
        subscriber.close()
    return path


def delete_subscription(project: str, name: str, *, host: str | None = None) -> None:
    """Delete a subscription if it exists (so no push keeps hitting a stopped endpoint)."""
    from google.api_core.exceptions import NotFound

    subscriber = subscriber_client(host)
    try:
        with contextlib.suppress(NotFound):
            subscriber.delete_subscription(
                request={"subscription": subscriber.subscription_path(project, name)}
            )
    finally:
        subscriber.close()


def create_queue(
    project: str,
    location: str = DEFAULT_LOCATION,
    queue: str = names.RETRY_QUEUE,
    *,
    host: str | None = None,
) -> str:
    """Create a Cloud Tasks queue (idempotent) and return its path."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import tasks_v2

    client = tasks_client(host)
    path = queue_path(project, location, queue)
    try:
        with contextlib.suppress(AlreadyExists):  # the emulator returns the existing one
            client.create_queue(
                parent=f"projects/{project}/locations/{location}", queue=tasks_v2.Queue(name=path)
            )
    finally:
        client.transport.close()
    return path


# --------------------------------------------------------------------------------------
# The stack


class EmulatorStack:
    """Firestore, Pub/Sub and Cloud Tasks emulators, started together and in parallel.

    On start the agentgraph topics (`TOPICS`) and the retry queue exist; subscriptions
    are left to the caller, since their push endpoints are the caller's servers.
    `env()` gives the variables that point the `gcp` backend at this stack.
    """

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        *,
        location: str = DEFAULT_LOCATION,
        root: Path | str = REPO_ROOT,
        log_dir: Path | str | None = None,
        create_resources: bool = True,
        tasks_max_retries: int | None = None,
        use_gcloud: bool = False,
    ) -> None:
        self.project = project
        self.location = location
        self.create_resources = create_resources
        self.firestore = FirestoreEmulator(project, log_dir=log_dir, use_gcloud=use_gcloud)
        self.pubsub = PubSubEmulator(project, log_dir=log_dir, use_gcloud=use_gcloud)
        self.tasks = CloudTasksEmulator(
            project=project,
            location=location,
            root=root,
            log_dir=log_dir,
            max_retries=tasks_max_retries,
        )
        self.startup_seconds: dict[str, float] = {}

    @property
    def emulators(self) -> tuple[_Server, ...]:
        return (self.firestore, self.pubsub, self.tasks)

    @property
    def retry_queue(self) -> str:
        """Full path of the agentgraph retry queue on the tasks emulator."""
        return self.tasks.queue_path(names.RETRY_QUEUE)

    def start(self, timeout: float = 90.0) -> EmulatorStack:
        began = time.monotonic()
        try:
            # Java first: they take longest; the tasks venv check/creation overlaps them.
            self.firestore.launch()
            self.pubsub.launch()
            self.tasks.launch()
            deadline = began + timeout
            pending = list(self.emulators)
            while pending:
                pending = [e for e in pending if not e.poll_ready()]
                if pending and time.monotonic() > deadline:
                    raise EmulatorError(
                        "Not ready after "
                        f"{timeout:.0f} s: {', '.join(e.name for e in pending)}. Logs: "
                        + ", ".join(str(e.log_path) for e in pending)
                    )
                time.sleep(0.05)
            if self.create_resources:
                create_topics(self.project, host=self.pubsub.host)
        except BaseException:
            self.stop()
            raise
        for emulator in self.emulators:
            self.startup_seconds[emulator.name] = emulator.startup_seconds or 0.0
        self.startup_seconds["total"] = time.monotonic() - began
        return self

    def env(self) -> dict[str, str]:
        """Environment that points clients and functions at this stack."""
        return {
            names.ENV_FIRESTORE_EMULATOR: self.firestore.host,
            names.ENV_PUBSUB_EMULATOR: self.pubsub.host,
            names.ENV_TASKS_EMULATOR: self.tasks.host,
            names.ENV_PROJECT: self.project,
            names.ENV_REGION: self.location,
        }

    def stop(self) -> None:
        """Stop all three (signalled together, then waited for); idempotent."""
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_collect(e.stop, errors)) for e in self.emulators]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def __enter__(self) -> EmulatorStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _collect(fn: Any, errors: list[BaseException]) -> Any:
    def run() -> None:
        try:
            fn()
        except BaseException as err:
            errors.append(err)

    return run


@contextlib.contextmanager
def emulator_stack(**kwargs: Any) -> Iterator[EmulatorStack]:
    """`with emulator_stack() as stack:` — same as `with EmulatorStack(**kwargs)`."""
    with EmulatorStack(**kwargs) as stack:
        yield stack


def main(argv: Sequence[str] | None = None) -> int:
    """Keep a stack up until Ctrl-C, printing the variables that point at it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m emulator.harness", description=main.__doc__)
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmulatorStack(args.project) as stack:
        for key, value in stack.env().items():
            print(f"export {key}={value}")
        times = ", ".join(f"{k} {v:.1f} s" for k, v in stack.startup_seconds.items())
        print(f"# started in {times}; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
