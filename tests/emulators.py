"""pytest plugin: the Google Cloud emulators as fixtures, started once per session.

Register it from tests/conftest.py with `pytest_plugins = ["tests.emulators"]` (or run
`pytest -p tests.emulators`). Every test that uses one of these fixtures gets the
`emulator` marker, so `pytest -m "not emulator"` runs without Java or gcloud.

The session's `emulator_stack` also exports its variables (FIRESTORE_EMULATOR_HOST,
PUBSUB_EMULATOR_HOST, CLOUD_TASKS_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT, AGENTGRAPH_REGION)
into os.environ for the session, because the Firestore client reads its emulator host
only from there; they are restored when the session ends.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_utils.system import EmulatorCreds, unique_resource_id

from emulator import harness

EMULATOR_FIXTURES = frozenset(
    {
        "emulator_stack",
        "firestore_client",
        "firestore_async_client",
        "isolated_firestore",
        "clean_firestore",
        "pubsub_publisher",
        "pubsub_subscriber",
        "push_subscription",
        "tasks_client",
        "retry_queue",
        "function_server",
    }
)

_log = logging.getLogger("agentgraph.tests.emulators")
FAILED_LOG_LINES = 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if EMULATOR_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulator)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran against a function stack (emulator/stack.py) reports the end
    of every function's log: what a function did with a message that never came back is
    only there, and CI keeps nothing but the test output."""
    report = yield
    if report.failed and call.when == "call":
        from emulator.stack import Stack

        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                for name, server in value.servers.items():
                    tail = server.log_tail(FAILED_LOG_LINES)
                    if tail:
                        report.sections.append((f"function {name}, last lines of its log", tail))
    return report


@pytest.fixture(scope="session")
def emulator_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.EmulatorStack]:
    """Firestore, Pub/Sub and Cloud Tasks emulators for the whole session.

    Topics and the retry queue exist; logs stay in pytest's temp dir
    (`.../emulator-logs0/`). Stopped by process group at the end of the session.
    """
    stack = harness.EmulatorStack(log_dir=tmp_path_factory.mktemp("emulator-logs"))
    stack.start()
    times = ", ".join(f"{name} {secs:.1f} s" for name, secs in stack.startup_seconds.items())
    _log.info("emulators up: %s", times)
    patch = pytest.MonkeyPatch()
    for key, value in stack.env().items():
        patch.setenv(key, value)
    try:
        yield stack
    finally:
        patch.undo()
        stack.stop()


@pytest.fixture(scope="session")
def unique_name() -> Callable[[str], str]:
    """`unique_name("run")` → a name no other test or session uses (letters first)."""
    counter = itertools.count(1)
    session = unique_resource_id("-")

    def make(base: str) -> str:
        return f"{base}{session}-{next(counter)}"

    return make


@pytest.fixture(scope="session")
def firestore_client(emulator_stack: harness.EmulatorStack) -> Iterator[Any]:
    """A sync `google.cloud.firestore.Client` on the emulator."""
    from google.cloud import firestore

    client = firestore.Client(project=emulator_stack.project, credentials=EmulatorCreds())
    yield client
    client.close()


@pytest.fixture
def firestore_async_client(emulator_stack: harness.EmulatorStack) -> Any:
    """A `google.cloud.firestore.AsyncClient` on the emulator, new for each test.

    Per test because its gRPC channel belongs to the event loop of its first call: use it
    within one `asyncio.run(...)`.
    """
    from google.cloud import firestore

    return firestore.AsyncClient(project=emulator_stack.project, credentials=EmulatorCreds())


@pytest.fixture
async def isolated_firestore(
    emulator_stack: harness.EmulatorStack, unique_name: Callable[[str], str]
) -> AsyncIterator[Any]:
    """An AsyncClient on the emulator in a project of its own: this test's documents only.
    Its channel is closed on this test's event loop."""
    from google.cloud import firestore

    client = firestore.AsyncClient(project=unique_name("fs"), credentials=EmulatorCreds())
    yield client
    await client._firestore_api.transport.close()


@pytest.fixture
def clean_firestore(emulator_stack: harness.EmulatorStack) -> None:
    """Start the test with an empty Firestore database."""
    emulator_stack.firestore.reset()


@pytest.fixture(scope="session")
def pubsub_publisher(emulator_stack: harness.EmulatorStack) -> Iterator[Any]:
    """A `pubsub_v1.PublisherClient` on the emulator."""
    client = harness.publisher_client(emulator_stack.pubsub.host)
    yield client
    client.stop()
    client.transport.close()


@pytest.fixture(scope="session")
def pubsub_subscriber(emulator_stack: harness.EmulatorStack) -> Iterator[Any]:
    """A `pubsub_v1.SubscriberClient` on the emulator."""
    client = harness.subscriber_client(emulator_stack.pubsub.host)
    yield client
    client.close()


@pytest.fixture
def push_subscription(
    emulator_stack: harness.EmulatorStack, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Factory `push_subscription(topic, push_endpoint, filter=None, **kw) -> path`.

    Names are unique per call (pass `name=` to choose); every subscription made is
    deleted after the test, so no push keeps hitting a server that is gone.
    """
    made: list[str] = []

    def make(
        topic: str,
        push_endpoint: str,
        filter: str | None = None,
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> str:
        name = name or unique_name("sub")
        path = harness.create_push_subscription(
            emulator_stack.project,
            name,
            topic,
            push_endpoint,
            filter,
            host=emulator_stack.pubsub.host,
            **kwargs,
        )
        made.append(name)
        return path

    yield make
    for name in made:
        harness.delete_subscription(emulator_stack.project, name, host=emulator_stack.pubsub.host)


@pytest.fixture(scope="session")
def tasks_client(emulator_stack: harness.EmulatorStack) -> Iterator[Any]:
    """A `tasks_v2.CloudTasksClient` on the tasks emulator (insecure gRPC channel)."""
    client = harness.tasks_client(emulator_stack.tasks.host)
    yield client
    client.transport.close()


@pytest.fixture
def retry_queue(emulator_stack: harness.EmulatorStack, tasks_client: Any) -> Iterator[str]:
    """Full path of the `agentgraph-retries` queue; purged after the test."""
    yield emulator_stack.retry_queue
    tasks_client.purge_queue(name=emulator_stack.retry_queue)


@pytest.fixture
def function_server(
    emulator_stack: harness.EmulatorStack, tmp_path: Path
) -> Iterator[Callable[..., harness.FunctionServer]]:
    """Factory `function_server(target, source, signature_type="http", env=None)`.

    Starts functions-framework in a subprocess with the stack's environment (plus `env`),
    waits until it answers and returns the `FunctionServer` (`.url`, `.host`); all are
    stopped by process group after the test.
    """
    servers: list[harness.FunctionServer] = []

    def start(
        target: str,
        source: Path | str,
        signature_type: str = "http",
        env: dict[str, str] | None = None,
    ) -> harness.FunctionServer:
        server = harness.FunctionServer(
            target,
            source,
            signature_type=signature_type,
            env={**emulator_stack.env(), **(env or {})},
            log_dir=tmp_path / "function-logs",
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
