"""The Dispatcher port on Pub/Sub: node-ready and node-finished messages.

One PublisherClient per process (`PubSubDispatcher.from_env`), created on first use in the
process that publishes: its gRPC channel and batch thread are expensive to build and do not
survive a fork. Batching waits at most `max_latency` for more messages; the engine awaits
every publish before it acks, so the default 10 ms would be added to every edge of a run.

`node_ready` and `node_finished` return only when Pub/Sub has accepted the message (the
publish future resolved), so a caller that acks its own message afterwards never loses the
next step. They await the future without blocking the event loop.

Every message carries the current trace context as attributes (`traceparent`, W3C), so
the function that receives it continues the run's trace (agentgraph.observability).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from agentgraph.core import names
from agentgraph.core.errors import Misconfigured
from agentgraph.core.messages import NodeFinished, NodeReady
from agentgraph.core.status import NodeStatus
from agentgraph.observability import tracing

# Short batching window: messages are published one at a time on the critical path of a
# run, and each waits for its batch to be sent.
LOW_LATENCY_BATCH_S = 0.001
PUBLISH_TIMEOUT_S = 60.0


class PubSubDispatcher:
    """Satisfies agentgraph.core.ports.Dispatcher. Messages carry ids only."""

    def __init__(self, project: str, *, publisher: Any | None = None) -> None:
        self.project = project
        self._publisher = publisher
        self._lock = threading.Lock()
        self.node_ready_topic = f"projects/{project}/topics/{names.TOPIC_NODE_READY}"
        self.node_finished_topic = f"projects/{project}/topics/{names.TOPIC_NODE_FINISHED}"
        self.run_requests_topic = f"projects/{project}/topics/{names.TOPIC_RUN_REQUESTS}"

    @classmethod
    def from_env(cls) -> PubSubDispatcher:
        """Project from GOOGLE_CLOUD_PROJECT; PUBSUB_EMULATOR_HOST, when set, is honoured
        by the client itself (insecure channel, anonymous credentials)."""
        project = os.environ.get(names.ENV_PROJECT)
        if not project:
            raise Misconfigured(
                f"{names.ENV_PROJECT} is not set: the Pub/Sub dispatcher needs the project id"
            )
        return cls(project)

    @property
    def publisher(self) -> Any:
        with self._lock:
            if self._publisher is None:
                from google.cloud.pubsub_v1 import PublisherClient, types

                self._publisher = PublisherClient(
                    batch_settings=types.BatchSettings(
                        max_latency=LOW_LATENCY_BATCH_S, max_messages=100
                    )
                )
            return self._publisher

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None:
        message = NodeReady(run_id=run_id, node_id=node_id, attempt=attempt)
        await self._publish(
            self.node_ready_topic,
            message.to_bytes(),
            run_id=run_id,
            node_id=node_id,
            attempt=str(attempt),
            **{names.POOL_ATTRIBUTE: pool},
        )

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        message = NodeFinished(run_id=run_id, node_id=node_id, status=NodeStatus(status))
        await self._publish(
            self.node_finished_topic,
            message.to_bytes(),
            run_id=run_id,
            node_id=node_id,
            status=NodeStatus(status).value,
        )

    async def publish_raw(self, topic: str, data: bytes, **attributes: str) -> str:
        """Publish anything to one of our topics (tests, the run-requests door)."""
        return await self._publish(f"projects/{self.project}/topics/{topic}", data, **attributes)

    async def _publish(self, topic: str, data: bytes, **attributes: str) -> str:
        name = topic.rsplit("/", 1)[-1]
        with tracing.span(
            f"publish {name}",
            {"messaging.system": "gcp_pubsub", "messaging.destination.name": name},
            tracing.SpanKind.PRODUCER,
        ):
            future = self.publisher.publish(topic, data, **tracing.inject(attributes))
            return str(await asyncio.wait_for(asyncio.wrap_future(future), PUBLISH_TIMEOUT_S))

    def close(self) -> None:
        """Send what is batched and stop the client (for tests and clean shutdowns)."""
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop()
