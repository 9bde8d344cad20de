"""The Cloud Tasks emulator: `gcloud-tasks-emulator` from PyPI, in its own venv.

It pins protobuf 4, which the project's clients cannot run with, so it lives in
`.venv-tasks/` (created on first use by `ensure_tasks_venv`, ~30 s once, afterwards a file
stat) and is started with an environment that keeps the project's venv out.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from agentgraph.core import names
from emulator.processes import (
    DEFAULT_LOCATION,
    DEFAULT_PROJECT,
    REPO_ROOT,
    EmulatorNotInstalled,
    Server,
)

TASKS_VENV_DIR = ".venv-tasks"
TASKS_EMULATOR_REQUIREMENT = "gcloud-tasks-emulator~=0.6.2"
_TASKS_VENV_STAMP = ".agentgraph-ready"


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


class CloudTasksEmulator(Server):
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
