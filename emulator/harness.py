"""Start and stop the Google Cloud emulators that the `gcp` backend is tested against.

Three emulators stand in for production: the official Firestore and Pub/Sub emulators that
ship with the Google Cloud CLI (Java, `java_emulators.py`), and the PyPI
`gcloud-tasks-emulator` for Cloud Tasks (`tasks_emulator.py`), which pins an old protobuf
and therefore runs from its own virtual environment (`.venv-tasks`), never from the
project's. `EmulatorStack` here starts the three together; how a server process is
launched, polled and stopped (by process group, nothing left behind) is `processes.py`;
the clients and resources on the emulators are `clients.py`; one function under
functions-framework is `function_server.py`.

This module is also the one import for callers: every name of those modules that the
tests, the benchmarks and `emulator/stack.py` use is re-exported here
(`from emulator import harness; harness.FunctionServer(...)`).

What is guaranteed: `start()` returns only when all three answer, with agentgraph's
topics and retry queue created; `stop()` returns only when no process of theirs is left.
A missing `gcloud`, emulator component or `java` raises `EmulatorNotInstalled` naming the
package to install, before anything is started. Nothing here ever falls back to real
Google Cloud.

Run `python -m emulator.harness` to keep a stack up by hand; it prints the `export` lines.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from agentgraph.core import names
from emulator.clients import (
    TOPICS,
    create_push_subscription,
    create_queue,
    create_topics,
    delete_subscription,
    publisher_client,
    subscriber_client,
    tasks_client,
)
from emulator.function_server import FunctionServer, functions_framework_command
from emulator.java_emulators import FirestoreEmulator, PubSubEmulator
from emulator.processes import (
    DEFAULT_LOCATION,
    DEFAULT_PROJECT,
    LOOPBACK,
    REPO_ROOT,
    EmulatorError,
    EmulatorNotInstalled,
    Server,
    free_port,
)
from emulator.tasks_emulator import CloudTasksEmulator, ensure_tasks_venv, queue_path

__all__ = [
    "DEFAULT_LOCATION",
    "DEFAULT_PROJECT",
    "LOOPBACK",
    "REPO_ROOT",
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
    "emulator_stack",
    "ensure_tasks_venv",
    "free_port",
    "functions_framework_command",
    "publisher_client",
    "queue_path",
    "subscriber_client",
    "tasks_client",
]


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
    def emulators(self) -> tuple[Server, ...]:
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
