"""The RetryScheduler port on Cloud Tasks: one task per retry, due at the backoff time.

Each task is an HTTP POST of `{run_id, node_id, attempt}` (JSON) to the retry function
(AGENTGRAPH_RETRY_URL), which makes the node ready again and re-publishes node-ready.
The task name is derived from (run, node, attempt), so scheduling the same retry twice (a
redelivered node-ready whose first delivery already scheduled it) is AlreadyExists in
production, which means "done". The name starts with a hash, as Cloud Tasks advises for
throughput (sequential names make hot key ranges).

In production the task carries an OIDC token of AGENTGRAPH_TASKS_SERVICE_ACCOUNT (the
retry function admits only that caller); on the emulator (CLOUD_TASKS_EMULATOR_HOST) the
client talks over an insecure gRPC channel and sends no token, which the emulator could
not mint anyway.

The task's headers carry the trace context of the attempt that scheduled it
(`traceparent`), so the retry, delivered seconds or hours later, joins the run's trace.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from typing import Any

from agentgraph.core import names
from agentgraph.core.errors import Misconfigured
from agentgraph.core.messages import NodeReady
from agentgraph.observability import tracing

DEFAULT_LOCATION = "us-central1"
CREATE_TIMEOUT_S = 30.0


def task_id(run_id: str, node_id: str, attempt: int, at: float | None = None, tag: str = "") -> str:
    """Deterministic per (run, node, attempt, due time, tag); hash first, readable suffix
    for people. One (run, node, attempt) may be delivered for more than one reason: a retry
    of attempt N, then the approval timeout of attempt N, attempt N again after a redrive,
    or a node delayed by its model's gate (tagged). Cloud Tasks refuses a name used in the
    last hour or more, which would drop the later one. A repeated scheduling of one delivery
    passes the stored due time again (next_attempt_at), so it still finds its task."""
    key = f"{run_id}\0{node_id}\0{attempt}" + ("" if at is None else f"\0{at!r}")
    key += f"\0{tag}" if tag else ""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    suffix = f"-{re.sub(r'[^A-Za-z0-9-]', '-', tag)[:40]}" if tag else ""
    return f"{digest}-{node_id.replace('_', '-')[:40]}-a{attempt}{suffix}"


class CloudTasksRetries:
    """Satisfies agentgraph.core.ports.RetryScheduler."""

    def __init__(
        self,
        project: str,
        location: str,
        url: str,
        *,
        queue: str = names.RETRY_QUEUE,
        service_account: str | None = None,
        emulator_host: str | None = None,
    ) -> None:
        self.queue_path = f"projects/{project}/locations/{location}/queues/{queue}"
        self.url = url
        self.service_account = service_account
        self.emulator_host = emulator_host
        self._client: Any = None

    @classmethod
    def from_env(cls) -> CloudTasksRetries:
        """GOOGLE_CLOUD_PROJECT, AGENTGRAPH_REGION, AGENTGRAPH_RETRY_URL, and in production
        AGENTGRAPH_TASKS_SERVICE_ACCOUNT; CLOUD_TASKS_EMULATOR_HOST selects the emulator."""
        env = os.environ
        project = env.get(names.ENV_PROJECT)
        url = env.get(names.ENV_RETRY_URL)
        missing = [
            n for n, v in ((names.ENV_PROJECT, project), (names.ENV_RETRY_URL, url)) if not v
        ]
        if missing:
            raise Misconfigured(
                f"Cloud Tasks retries need {' and '.join(missing)} (where the retry function "
                "listens); set it in the function's environment"
            )
        assert project is not None and url is not None
        emulator = env.get(names.ENV_TASKS_EMULATOR) or None
        return cls(
            project,
            env.get(names.ENV_REGION) or DEFAULT_LOCATION,
            url,
            service_account=None if emulator else env.get(names.ENV_TASKS_SERVICE_ACCOUNT),
            emulator_host=emulator,
        )

    def _tasks_client(self) -> Any:
        """Created on the event loop of the first call (its aio channel belongs to it)."""
        if self._client is None:
            from google.cloud import tasks_v2

            if self.emulator_host:
                import grpc
                from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                    CloudTasksGrpcAsyncIOTransport,
                )

                channel = grpc.aio.insecure_channel(self.emulator_host)
                self._client = tasks_v2.CloudTasksAsyncClient(
                    transport=CloudTasksGrpcAsyncIOTransport(channel=channel)
                )
            else:
                self._client = tasks_v2.CloudTasksAsyncClient()
        return self._client

    def task(
        self, run_id: str, node_id: str, attempt: int, at: float, tag: str = ""
    ) -> dict[str, Any]:
        """The task as the API takes it (public for tests and for reading)."""
        from google.protobuf import timestamp_pb2

        schedule_time = timestamp_pb2.Timestamp()
        schedule_time.FromDatetime(datetime.fromtimestamp(at, UTC))
        http_request: dict[str, Any] = {
            "http_method": "POST",
            "url": self.url,
            # The emulator adds no Content-Type of its own; production keeps ours.
            "headers": tracing.inject({"Content-Type": "application/json"}),
            "body": NodeReady(run_id=run_id, node_id=node_id, attempt=attempt).to_bytes(),
        }
        if self.service_account:
            http_request["oidc_token"] = {
                "service_account_email": self.service_account,
                "audience": self.url,
            }
        return {
            "name": f"{self.queue_path}/tasks/{task_id(run_id, node_id, attempt, at, tag)}",
            "schedule_time": schedule_time,
            "http_request": http_request,
        }

    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None:
        """Create the task; an existing task of that name means this retry is scheduled."""
        from google.api_core.exceptions import AlreadyExists

        try:
            await self._tasks_client().create_task(
                parent=self.queue_path,
                task=self.task(run_id, node_id, attempt, at, tag),
                timeout=CREATE_TIMEOUT_S,
            )
        except AlreadyExists:
            return
