"""Clients and resources on the emulators: always pointed at an emulator, never at Google Cloud.

Every helper takes `host=` or reads the matching `*_EMULATOR_HOST` variable, and refuses
to run without one; clients use insecure channels, which only an emulator accepts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agentgraph.core import names
from emulator.processes import DEFAULT_LOCATION, EmulatorError
from emulator.tasks_emulator import queue_path

if TYPE_CHECKING:
    from google.cloud import tasks_v2
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

TOPICS: tuple[str, ...] = (
    names.TOPIC_NODE_READY,
    names.TOPIC_NODE_FINISHED,
    names.TOPIC_RUN_REQUESTS,
    names.TOPIC_DEAD_LETTER,
)


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
    dead_letter_topic: str | None = None,
    max_delivery_attempts: int = 5,
) -> str:
    """Create a push subscription (optionally filtered) and return its path.

    `filter` is a Pub/Sub filter such as `names.pool_filter("default")`. With
    `exist_ok=True` an existing subscription of that name is kept as it is. With
    `dead_letter_topic` (a topic name of the same project), a message nacked
    `max_delivery_attempts` times goes there, as infra/'s dead_letter_policy does (the
    emulator honours it for push: tests/system/test_functions_e2e.py).
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
        if dead_letter_topic is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": f"projects/{project}/topics/{dead_letter_topic}",
                "max_delivery_attempts": max_delivery_attempts,
            }
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
