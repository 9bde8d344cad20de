"""Production delivery on the emulators, with execution kept in the test process.

The `gcp` contract harness wires the engine exactly as `open_engine()` does
(FirestoreStore + PubSubDispatcher + CloudTasksRetries), but the functions that receive the
messages run here, in the test's event loop, so the scripted tools (and their call counters)
are the ones that execute. What stands in for the Google-managed plumbing, and why it is
faithful:

- Pub/Sub push → `PullConsumer`. Each subscription is pulled and every message is wrapped in
  the push envelope Pub/Sub POSTs to a push endpoint, then parsed by
  `agentgraph.backends.gcp.pubsub_envelope.pubsub_message` and given to
  `agentgraph.backends.gcp.handlers.execute` / `complete`: the same decode-and-dispatch as
  `backends/gcp/functions.pubsub_push`. As with
  a push subscription, a message is acked only when the handler returned, and redelivered
  when it raised or was malformed (the function answers 400 so that production's
  dead-letter policy catches it; these pull subscriptions have none). The
  emulator ignores a subscription's retry policy on pull, so the consumer applies the
  backoff itself (`modify_ack_deadline` to the backoff instead of acking).
- Cloud Tasks → `RetryEndpoint`. The tasks emulator honours `schedule_time` and POSTs the
  task to this in-test HTTP server, which does what the `retry` function does
  (`handlers.retry`: 200 on success, 202 for a body no retry can fix, 500 to be tried again).
- A crash (`Delivery.crash`) kills every in-flight handler where it stands: nothing after
  the current line runs, nothing is acked. Pub/Sub sees the failed pushes and redelivers
  after the backoff; Cloud Tasks sees the dropped connection and tries again. Deliveries
  wait until fresh instances are up (`Delivery.start`), as they would for a cold start.

Every test gets its own project (Firestore, Pub/Sub, Cloud Tasks are all per project on the
emulators), so topics, subscriptions and the queue are unique to the test and no test sees
another's messages; `Delivery.close` deletes them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.api_core.exceptions import DeadlineExceeded, GoogleAPICallError

from agentgraph.backends.gcp.pubsub_envelope import PubSubMessage, pubsub_message
from agentgraph.core import names
from agentgraph.core.errors import MalformedMessage
from agentgraph.core.ports import RetryScheduler

log = logging.getLogger("agentgraph.tests.gcp_delivery")

ACK_DEADLINE_S = 10
"""The shortest Pub/Sub allows. Handlers in flight have their lease extended and a crash
nacks what it killed, so this only bounds how long a message lost some other way stays
invisible."""

REDELIVERY_BACKOFF_S = 1
"""Stands in for the subscriptions' `retry_policy.minimum_backoff` (10 s in infra/): a failed
delivery is not retried at once, so a test can observe the state the failure left."""

PULL_BATCH = 100
PULL_TIMEOUT_S = 30.0

Handler = Callable[[PubSubMessage], Awaitable[None]]
RetryHandler = Callable[[bytes], Awaitable[object]]


class Clock:
    """The engine's clock: the wall clock, plus time the test lets pass instantly.

    Recovery in production waits for the dead executor's lease to expire (timeout_s plus a
    margin, minutes for the default node). `advance` makes that time pass for the engine
    and the store without sleeping through it.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)


class WallClockRetries:
    """Hands the real retry scheduler wall-clock times: Cloud Tasks counts `schedule_time`
    on the wall clock, the engine on `Clock`, which may be ahead of it."""

    def __init__(self, inner: RetryScheduler, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None:
        await self.inner.schedule(run_id, node_id, attempt, at - self.clock.offset, tag=tag)


@dataclass
class InFlight:
    """Deliveries being handled, per run: what `wait` needs to tell "the run has ended and
    nothing of it is still being worked on" from "the run's status is final already"."""

    runs: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @contextlib.contextmanager
    def of(self, run_id: str) -> Iterator[None]:
        self.runs[run_id] += 1
        try:
            yield
        finally:
            self.runs[run_id] -= 1
            if not self.runs[run_id]:
                del self.runs[run_id]
            self.changed.set()

    def busy_with(self, run_id: str) -> bool:
        return self.runs[run_id] > 0

    async def wait_change(self, timeout: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)


def push_envelope(message: Any, subscription: str) -> dict[str, Any]:
    """The body of the HTTP request a push subscription sends for `message`."""
    return {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id,
            "publishTime": message.publish_time.isoformat(),
        },
        "subscription": subscription,
    }


class PullConsumer:
    """One subscription delivered to one handler, with push-subscription semantics.

    Two sides, as in production: the pulls stand for Pub/Sub's push machinery and live as
    long as the subscription; the handler tasks stand for function instances, and those
    are what a crash kills. (Cancelling a pull would not model anything, and the emulator
    would hand the next message to the dead pull and hold it for the ack deadline.)

    Handlers run concurrently (Cloud Functions scales out); a message is acked only after
    its handler returned; one whose handler raised comes back after `REDELIVERY_BACKOFF_S`.
    """

    def __init__(self, client: Any, path: str, handler: Handler, in_flight: InFlight) -> None:
        self.client = client
        self.path = path
        self.handler = handler
        self.in_flight = in_flight
        self._up = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._handling: dict[str, asyncio.Task[None]] = {}  # ack_id → its handler

    def open(self, pullers: int = 2) -> None:
        """Two outstanding pulls: the emulator answers a pull ~50 ms after a publish, and a
        second pull covers the gap while the first one's messages are being spawned."""
        self._background = [
            asyncio.create_task(self._pull(), name=f"pull {self.path}") for _ in range(pullers)
        ]
        self._background.append(asyncio.create_task(self._extend_leases()))
        self.start()

    def start(self) -> None:
        """Instances are up: deliveries go to the handler (those held meanwhile first)."""
        self._up.set()

    async def crash(self) -> None:
        """Every instance dies where it stands: its pushes fail, so what it had not acked
        goes back to Pub/Sub; new deliveries wait for `start` (a cold start)."""
        self._up.clear()
        unacked = list(self._handling)
        tasks = list(self._handling.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._nack(unacked)

    async def close(self) -> None:
        await self.crash()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _pull(self) -> None:
        while True:
            try:
                response = await self.client.pull(
                    subscription=self.path, max_messages=PULL_BATCH, timeout=PULL_TIMEOUT_S
                )
            except DeadlineExceeded:
                continue
            except GoogleAPICallError as exc:  # keep pulling, as Pub/Sub keeps pushing
                log.warning("%s: pull failed (%s); pulling again", self.path, exc)
                # the sleep is the behaviour modelled: Pub/Sub backs off before pushing again
                await asyncio.sleep(0.1)
                continue
            for received in response.received_messages:
                log.debug(
                    "%s: received %s",
                    self.path.rsplit("/", 1)[-1],
                    dict(received.message.attributes),
                )
                self._handling[received.ack_id] = asyncio.create_task(
                    self._deliver(received), name=f"deliver {received.message.message_id}"
                )

    async def _deliver(self, received: Any) -> None:
        """`functions.pubsub_push` on the test's loop and engine."""
        ack_id = received.ack_id
        run_id = received.message.attributes.get("run_id", "?")
        try:
            with self.in_flight.of(run_id):
                await self._up.wait()
                try:
                    message = pubsub_message(push_envelope(received.message, self.path))
                    await self.handler(message)
                except MalformedMessage as exc:  # 400 from the push function: a nack
                    log.error("%s: malformed message refused (nacked): %s", self.path, exc)
                    await self._nack([ack_id], REDELIVERY_BACKOFF_S)
                    return
                except Exception:
                    log.exception("%s: delivery failed; redelivered later", self.path)
                    await self._nack([ack_id], REDELIVERY_BACKOFF_S)
                    return
                try:
                    await self.client.acknowledge(subscription=self.path, ack_ids=[ack_id])
                except GoogleAPICallError as exc:  # at least once: it comes back, a duplicate
                    log.warning("%s: ack failed (%s); it will be redelivered", self.path, exc)
        finally:
            self._handling.pop(ack_id, None)

    async def _nack(self, ack_ids: list[str], backoff_s: int = REDELIVERY_BACKOFF_S) -> None:
        if ack_ids:
            with contextlib.suppress(GoogleAPICallError):
                await self.client.modify_ack_deadline(
                    subscription=self.path, ack_ids=ack_ids, ack_deadline_seconds=backoff_s
                )

    async def _extend_leases(self) -> None:
        """Keep messages whose handlers are still working from being redelivered (the real
        clients' lease management; a push request holds its message for its duration)."""
        while True:
            # the sleep is the behaviour modelled: the client's lease timer, a third of the deadline
            await asyncio.sleep(ACK_DEADLINE_S / 3)
            if self._handling:
                with contextlib.suppress(GoogleAPICallError):
                    await self.client.modify_ack_deadline(
                        subscription=self.path,
                        ack_ids=list(self._handling),
                        ack_deadline_seconds=ACK_DEADLINE_S,
                    )


class RetryEndpoint:
    """The `retry` function's HTTP contract, served in the test's loop for the tasks
    emulator (which POSTs a plain HTTP/1.1 request and reads only the status)."""

    def __init__(self, handler: RetryHandler, in_flight: InFlight) -> None:
        self.handler = handler
        self.in_flight = in_flight
        # Bound now, so the URL (which the retry scheduler needs) is known before serving.
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/retry"
        self._server: asyncio.Server | None = None
        self._up = asyncio.Event()
        self._handling: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self._socket)
        self._up.set()

    def start(self) -> None:
        self._up.set()

    async def crash(self) -> None:
        """Requests in flight die without an answer; new ones wait for `start`."""
        self._up.clear()
        tasks = list(self._handling)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.crash()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._socket.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handling.add(task)
        try:
            body = await _read_body(reader)
            with self.in_flight.of(_run_of(body)):
                await self._up.wait()
                status = await self._call(body)
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._handling.discard(task)
            writer.close()

    async def _call(self, body: bytes) -> int:
        """`functions.http_retry` minus the OIDC check (the emulator sends no token)."""
        try:
            await self.handler(body)
        except MalformedMessage as exc:
            log.error("retry task dropped: %s", exc)
            return 202
        except Exception:
            log.exception("retry task failed; Cloud Tasks tries again")
            return 500
        return 200


def _run_of(body: bytes) -> str:
    """The run a task body names, for `InFlight` only (the handler does the real parsing)."""
    try:
        return str(json.loads(body).get("run_id", "?"))
    except (ValueError, AttributeError):
        return "?"


async def _read_body(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    return await reader.readexactly(length)


class Delivery:
    """The Pub/Sub and Cloud Tasks side of one test's project on the emulators: topics,
    the exec and complete subscriptions with their consumers, the retry queue and its
    endpoint."""

    def __init__(
        self,
        project: str,
        *,
        pubsub_host: str,
        tasks_host: str,
        location: str,
        queue: str,
        execute: Handler,
        complete: Handler,
        retry: RetryHandler,
    ) -> None:
        import grpc
        from google.cloud import tasks_v2
        from google.cloud.tasks_v2.services.cloud_tasks.transports import (
            CloudTasksGrpcAsyncIOTransport,
        )
        from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
        from google.pubsub_v1.services.subscriber.transports import (
            SubscriberGrpcAsyncIOTransport,
        )

        self.project = project
        self.location = location
        self.queue_path = f"projects/{project}/locations/{location}/queues/{queue}"
        self.in_flight = InFlight()
        self._handlers = {
            names.exec_subscription(names.DEFAULT_POOL): (names.TOPIC_NODE_READY, execute),
            names.SUBSCRIPTION_COMPLETE: (names.TOPIC_NODE_FINISHED, complete),
        }
        self.endpoint = RetryEndpoint(retry, self.in_flight)
        self.consumers: list[PullConsumer] = []
        # Async clients on insecure channels to the emulators, bound to the running loop.
        self._publisher = PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(pubsub_host))
        )
        self._subscriber = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(pubsub_host))
        )
        self._tasks = tasks_v2.CloudTasksAsyncClient(
            transport=CloudTasksGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(tasks_host))
        )
        self._queue = tasks_v2.Queue(name=self.queue_path)

    async def open(self) -> None:
        """Create the resources and start receiving."""
        for topic in (names.TOPIC_NODE_READY, names.TOPIC_NODE_FINISHED):
            await self._publisher.create_topic(name=self._topic(topic))
        for name, (topic, handler) in self._handlers.items():
            path = self._subscription(name)
            await self._subscriber.create_subscription(
                request={
                    "name": path,
                    "topic": self._topic(topic),
                    "ack_deadline_seconds": ACK_DEADLINE_S,
                }
            )
            self.consumers.append(PullConsumer(self._subscriber, path, handler, self.in_flight))
        await self._tasks.create_queue(
            parent=f"projects/{self.project}/locations/{self.location}",
            queue=self._queue,
        )
        await self.endpoint.open()
        for consumer in self.consumers:
            consumer.open()

    def start(self) -> None:
        """Fresh function instances: held and new deliveries reach the handlers again."""
        for consumer in self.consumers:
            consumer.start()
        self.endpoint.start()

    async def crash(self) -> None:
        """Every function instance dies mid-line (see PullConsumer and RetryEndpoint)."""
        await asyncio.gather(*(c.crash() for c in self.consumers), self.endpoint.crash())

    async def close(self) -> None:
        """Stop everything and delete what `open` created (best effort: the emulators
        go away with the session anyway)."""
        await asyncio.gather(*(c.close() for c in self.consumers), self.endpoint.close())
        with contextlib.suppress(GoogleAPICallError):
            await self._tasks.delete_queue(name=self.queue_path)
        for name in self._handlers:
            with contextlib.suppress(GoogleAPICallError):
                await self._subscriber.delete_subscription(subscription=self._subscription(name))
        for topic in (names.TOPIC_NODE_READY, names.TOPIC_NODE_FINISHED):
            with contextlib.suppress(GoogleAPICallError):
                await self._publisher.delete_topic(topic=self._topic(topic))
        for client in (self._publisher, self._subscriber, self._tasks):
            await client.transport.close()

    def _topic(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def _subscription(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"
