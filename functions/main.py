"""Cloud Functions entry points (names are agentgraph.core.names.ENTRY_*; Terraform uses them).

Each is one line: the decoding, the engine call and the ack/status mapping live in
agentgraph.backends.gcp.functions and agentgraph.backends.gcp.handlers, where they are tested.

- api (HTTP): the public REST API (OpenAPI document in openapi.yaml, at /openapi.json).
- exec_node (Pub/Sub node-ready): runs one attempt of one node; acks only after the
  node-finished publish (or the retry task) is done, so a crash means redelivery.
- complete (Pub/Sub node-finished): the fan-in; enqueues children whose parents are done.
- retry (HTTP, Cloud Tasks): a delayed retry came due; re-publishes node-ready.
- start_from_event (Pub/Sub run-requests): starts a run; the message id is its
  idempotency key.
- sweep (HTTP, Cloud Scheduler): re-dispatches what dead functions left behind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import functions_framework

from agentgraph.backends.gcp import functions as glue

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

OPENAPI = Path(__file__).with_name("openapi.yaml")


@functions_framework.http
def api(request: Any) -> Any:
    return glue.http_api(request, OPENAPI)


@functions_framework.cloud_event
def exec_node(event: Any) -> None:
    glue.exec_event(event)


@functions_framework.cloud_event
def complete(event: Any) -> None:
    glue.complete_event(event)


@functions_framework.http
def retry(request: Any) -> Any:
    return glue.http_retry(request)


@functions_framework.cloud_event
def start_from_event(event: Any) -> None:
    glue.start_event(event)


@functions_framework.http
def sweep(request: Any) -> Any:
    return glue.http_sweep(request)
