"""The whole gcp backend on this machine: emulators, Gemini stub and every function.

`python -m emulator.stack [--base-port N] [--pools default,gpu]` runs in the foreground
until Ctrl-C (or SIGTERM), then stops everything it started:

- the Firestore, Pub/Sub and Cloud Tasks emulators (emulator/harness.py);
- the Gemini stub (emulator/gemini_stub.py), so Gemini graphs run offline;
- each Cloud Function under functions-framework on its own port, exactly as deployed
  (`functions/main.py`, entry points agentgraph.core.names.ENTRY_*), with the environment
  pointing at the emulators, AGENTGRAPH_AUTH=emulator (a request without a token is the
  admin "local", as with "off"; one with an emulator ID token is that user: the web
  console's), AGENTGRAPH_RETRY_URL at the retry function and GOOGLE_GEMINI_BASE_URL at
  the stub;
- the topics, the push subscriptions (node-ready → exec-<pool> for every pool, with the
  pool filter; node-finished → complete; run-requests → start_from_event) and the queue;
- a sweeper that calls the sweep function every minute, as Cloud Scheduler does;
- with `console=True`, the web console (emulator/console.py) on N+8, which also loads
  firestore.rules into the Firestore emulator for this project.

The Pub/Sub emulator of gcloud 528 ignores subscription filters, so every exec-<pool>
also gets AGENTGRAPH_POOL and acks messages of other pools without running them.

`Stack` is the same thing as a context manager, for the end-to-end tests and the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agentgraph.core import names
from emulator import harness
from emulator.console import WEB_DIST, ConsoleServer, load_rules
from emulator.gemini_stub import GeminiStub

# The demo graph's tools; production loads only the modules its deployment names.
DEMO_TOOLS = "agentgraph.tools.code_review"

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_SOURCE = REPO_ROOT / "functions" / "main.py"
SWEEP_EVERY_S = 60.0
CONSOLE_PORT_OFFSET = 8


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed function: its name (as in Cloud Functions), entry point and trigger."""

    name: str
    target: str
    topic: str | None = None  # push subscription source, for the Pub/Sub functions
    subscription: str | None = None
    filter: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    ack_deadline_s: int = 60


def function_specs(pools: Sequence[str]) -> list[FunctionSpec]:
    """The functions of a deployment with these pools (the same set Terraform makes)."""
    specs = [
        FunctionSpec("api", names.ENTRY_API),
        FunctionSpec("retry", names.ENTRY_RETRY),
        FunctionSpec("sweep", names.ENTRY_SWEEP),
        FunctionSpec(
            "complete",
            names.ENTRY_COMPLETE,
            names.TOPIC_NODE_FINISHED,
            names.SUBSCRIPTION_COMPLETE,
        ),
        FunctionSpec(
            "start_from_event",
            names.ENTRY_START_FROM_EVENT,
            names.TOPIC_RUN_REQUESTS,
            names.SUBSCRIPTION_RUN_REQUESTS,
        ),
    ]
    for pool in pools:
        specs.append(
            FunctionSpec(
                names.exec_function(pool),
                names.ENTRY_EXEC,
                names.TOPIC_NODE_READY,
                names.exec_subscription(pool),
                names.pool_filter(pool),
                ((names.ENV_POOL, pool),),
                # Pub/Sub waits at most 600 s for a push answer; a longer node sees a
                # redelivery, which its lease turns into a no-op.
                ack_deadline_s=600,
            )
        )
    return specs


class Stack:
    """Emulators + Gemini stub + functions + subscriptions; `with Stack() as stack:`."""

    def __init__(
        self,
        *,
        base_port: int = 0,
        pools: Sequence[str] = (names.DEFAULT_POOL,),
        project: str = harness.DEFAULT_PROJECT,
        tools: Iterable[str] = (DEMO_TOOLS,),
        log_dir: Path | str | None = None,
        env: dict[str, str] | None = None,
        sweep_every_s: float | None = SWEEP_EVERY_S,
        stub_latency_s: float = 0.0,
        emulators: harness.EmulatorStack | None = None,
        console: bool = False,
    ) -> None:
        """`emulators`: an already running EmulatorStack to use (and leave running), e.g.
        the test session's; with another `project` than its own, this stack's topics,
        queue and documents are kept apart from everything else on those emulators."""
        self.base_port = base_port
        self.pools = list(dict.fromkeys(pools)) or [names.DEFAULT_POOL]
        self.project = project
        self.tools = [t for t in tools if t]
        self._own_log_dir = log_dir is None
        self.log_dir = (
            Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="agentgraph-stack-"))
        )
        self.extra_env = dict(env or {})
        self.sweep_every_s = sweep_every_s
        self._own_emulators = emulators is None
        self.emulators = emulators or harness.EmulatorStack(project, log_dir=self.log_dir)
        if base_port and self._own_emulators:
            self._fix_emulator_ports(base_port)
        self.stub = GeminiStub(port=base_port + 3 if base_port else 0, latency_s=stub_latency_s)
        self.specs = function_specs(self.pools)
        self.servers: dict[str, harness.FunctionServer] = {}
        self.subscriptions: list[str] = []
        self.startup_seconds: dict[str, float] = {}
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started_cleanly = False
        self.want_console = console
        self.console: ConsoleServer | None = None

    def _fix_emulator_ports(self, base: int) -> None:
        """Fixed ports (base, base+1, base+2) instead of free ones, for a stack by hand."""
        log_dir = self.log_dir
        self.emulators.firestore = harness.FirestoreEmulator(self.project, base, log_dir=log_dir)
        self.emulators.pubsub = harness.PubSubEmulator(self.project, base + 1, log_dir=log_dir)
        self.emulators.tasks = harness.CloudTasksEmulator(
            base + 2, project=self.project, location=self.emulators.location, log_dir=log_dir
        )

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Stack:
        began = time.monotonic()
        try:
            if self._own_emulators:
                self.emulators.start()
                self.startup_seconds.update(self.emulators.startup_seconds)
            if self.project != self.emulators.project:
                self._create_resources()
            self.stub.start()
            functions_began = time.monotonic()
            self._start_functions()
            self.startup_seconds["functions"] = time.monotonic() - functions_began
            self._subscribe()
            if self.want_console:
                self._start_console()
            if self.sweep_every_s:
                self._sweeper = threading.Thread(target=self._sweep_loop, daemon=True)
                self._sweeper.start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds["total"] = time.monotonic() - began
        self._started_cleanly = True
        return self

    def stop(self) -> None:
        """Subscriptions first (so nothing pushes to a stopped server), then the functions,
        the stub and the emulators. Idempotent."""
        self._stopping.set()
        if self.subscriptions and self.emulators.pubsub.running:
            for name in self.subscriptions:
                with contextlib.suppress(Exception):
                    harness.delete_subscription(self.project, name, host=self.emulators.pubsub.host)
        self.subscriptions.clear()
        if self.console is not None:
            self.console.stop()
            self.console = None
        for server in self.servers.values():
            server.stop()
        self.stub.stop()
        if self._own_emulators:
            self.emulators.stop()
        if self._own_log_dir and self._started_cleanly:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- functions and subscriptions -------------------------------------------------------

    def _create_resources(self) -> None:
        """Topics and the retry queue of this stack's project on shared emulators."""
        harness.create_topics(self.project, host=self.emulators.pubsub.host)
        harness.create_queue(self.project, self.emulators.location, host=self.emulators.tasks.host)

    def _ports(self) -> dict[str, int]:
        if not self.base_port:
            return {spec.name: harness.free_port() for spec in self.specs}
        return {spec.name: self.base_port + 10 + i for i, spec in enumerate(self.specs)}

    def function_env(self, retry_url: str) -> dict[str, str]:
        """What every function process gets on top of this process's environment."""
        env = {
            **self.env(),
            names.ENV_BACKEND: "gcp",
            names.ENV_AUTH_MODE: "emulator",
            names.ENV_RETRY_URL: retry_url,
            names.ENV_GEMINI_BASE_URL: self.stub.url,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        if self.tools:
            env[names.ENV_TOOLS] = ",".join(self.tools)
        return {**env, **self.extra_env}

    def _start_functions(self) -> None:
        ports = self._ports()
        retry_url = f"http://{harness.LOOPBACK}:{ports['retry']}/"
        env = self.function_env(retry_url)
        log_dir = self.log_dir
        for spec in self.specs:
            server = harness.FunctionServer(
                spec.target,
                FUNCTIONS_SOURCE,
                port=ports[spec.name],
                env={**env, **dict(spec.env)},
                log_dir=log_dir,
            )
            server.name = f"function {spec.name}"
            self.servers[spec.name] = server
            server.launch()
        pending = list(self.servers.values())
        deadline = time.monotonic() + 60
        while pending:
            pending = [s for s in pending if not s.poll_ready()]
            if pending and time.monotonic() > deadline:
                raise harness.EmulatorError(
                    "functions not ready after 60 s: "
                    + ", ".join(f"{s.name} (log {s.log_path})" for s in pending)
                )
            time.sleep(0.05)

    def _start_console(self) -> None:
        """The web console, after the rules it relies on are loaded into the emulator."""
        load_rules(self.emulators.firestore.host, self.project)
        port = self.base_port + CONSOLE_PORT_OFFSET if self.base_port else 0
        self.console = ConsoleServer(
            project=self.project,
            firestore_host=self.emulators.firestore.host,
            api_url=self.api_url,
            port=port,
        ).start()

    def push_endpoint(self, function: str, topic: str) -> str:
        """Push URL of a Pub/Sub function (its subscription posts to it), with the topic path."""
        return f"{self.servers[function].url}/projects/{self.project}/topics/{topic}"

    def _subscribe(self) -> None:
        for spec in self.specs:
            if spec.topic is None or spec.subscription is None:
                continue
            harness.create_push_subscription(
                self.project,
                spec.subscription,
                spec.topic,
                self.push_endpoint(spec.name, spec.topic),
                spec.filter,
                spec.ack_deadline_s,
                host=self.emulators.pubsub.host,
                exist_ok=True,
            )
            self.subscriptions.append(spec.subscription)

    def add_push_subscription(self, name: str, topic: str, function: str) -> str:
        """Another push subscription to a function (tests: duplicate every delivery)."""
        path = harness.create_push_subscription(
            self.project,
            name,
            topic,
            self.push_endpoint(function, topic),
            ack_deadline_s=600,
            host=self.emulators.pubsub.host,
        )
        self.subscriptions.append(name)
        return path

    def remove_push_subscription(self, name: str) -> None:
        harness.delete_subscription(self.project, name, host=self.emulators.pubsub.host)
        with contextlib.suppress(ValueError):
            self.subscriptions.remove(name)

    def _sweep_loop(self) -> None:
        """Cloud Scheduler's job: POST /sweep every interval; a failed tick is harmless."""
        assert self.sweep_every_s is not None
        while not self._stopping.wait(self.sweep_every_s):
            with contextlib.suppress(OSError, urllib.error.URLError):
                request = urllib.request.Request(self.url("sweep"), data=b"", method="POST")
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()

    # ---- what to print ---------------------------------------------------------------------

    def url(self, function: str) -> str:
        return self.servers[function].url

    @property
    def api_url(self) -> str:
        return self.url("api")

    def env(self) -> dict[str, str]:
        """Variables for clients on this machine (`agentgraph show --backend gcp`, tests)."""
        return {
            **self.emulators.env(),
            names.ENV_PROJECT: self.project,
            names.ENV_GEMINI_BASE_URL: self.stub.url,
        }

    def describe(self) -> str:
        lines = ["agentgraph emulator stack", ""]
        if self.console is not None:
            lines.append(f"  web console       {self.console.url}   (sign in with any user id)")
        lines.append(f"  api               {self.api_url}   (try {self.api_url}/openapi.json)")
        for spec in self.specs:
            if spec.name == "api":
                continue
            trigger = (f"push from {spec.subscription}" if spec.subscription else "HTTP") + (
                f" [{spec.filter}]" if spec.filter else ""
            )
            lines.append(f"  {spec.name:<17} {self.url(spec.name)}   {trigger}")
        lines += [
            f"  gemini stub       {self.stub.url}",
            f"  firestore         {self.emulators.firestore.host}",
            f"  pubsub            {self.emulators.pubsub.host}",
            f"  cloud tasks       {self.emulators.tasks.host}   queue {names.RETRY_QUEUE}",
            "",
            f"  logs              {self.log_dir}",
            "",
            "For the CLI and clients in another shell:",
        ]
        lines += [f"  export {k}={v}" for k, v in self.env().items()]
        lines += [
            "",
            f"Demo:  python -m emulator.demo --api {self.api_url}",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m emulator.stack",
        description="Emulators, Gemini stub and every agentgraph function on this machine.",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="firestore=N, pubsub=N+1, tasks=N+2, gemini stub=N+3, functions from N+10 "
        "(default: free ports)",
    )
    parser.add_argument(
        "--pools",
        default=names.DEFAULT_POOL,
        help="comma-separated executor pools, one exec function each (default: default)",
    )
    parser.add_argument("--project", default=harness.DEFAULT_PROJECT)
    parser.add_argument(
        "--tools",
        action="append",
        default=[],
        help="module or .py file with @tool functions for the exec functions (repeatable; "
        f"default: {DEMO_TOOLS}, the demo's)",
    )
    parser.add_argument("--log-dir", help="keep every process's log here")
    parser.add_argument(
        "--sweep-every", type=float, default=SWEEP_EVERY_S, help="seconds; 0 turns it off"
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="do not serve the web console (it is served when web/dist is built)",
    )
    args = parser.parse_args(argv)
    console = not args.no_console and (WEB_DIST / "index.html").exists()
    if not args.no_console and not console:
        print("web/dist is not built (`make web`): no web console this time", flush=True)
    pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    tools = [str(Path(t).resolve()) if t.endswith(".py") else t for t in args.tools or [DEMO_TOOLS]]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack = Stack(
        base_port=args.base_port,
        pools=pools,
        project=args.project,
        tools=tools,
        log_dir=args.log_dir,
        sweep_every_s=args.sweep_every or None,
        console=console,
    )
    print("starting the emulators, the Gemini stub and the functions…", flush=True)
    try:
        stack.start()
    except harness.EmulatorNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except harness.EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(stack.describe(), flush=True)
        print(f"(up in {stack.startup_seconds['total']:.1f} s)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        print("\nstopping…", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
