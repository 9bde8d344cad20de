"""What each event-driven function does with its message: decode, call the engine, decide
between ack and redelivery. No framework here; `functions/main.py` only unwraps requests.

The rule for every Pub/Sub handler: return (= ack) only after the engine call returned,
which itself returns only after the next message was published, so a function that dies
at any line gets its message again instead of losing a step. A message that no
redelivery can fix (not JSON, missing ids, an unknown graph) raises MalformedMessage, and
the function logs it with its message id and acks it: a poison message must not be
redelivered forever. Anything else (Firestore unavailable, a publish that timed out)
propagates, the function answers 5xx, and Pub/Sub redelivers with backoff (then dead-letters).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

from agentgraph.backends.gcp.pubsub_envelope import PubSubMessage
from agentgraph.core import names
from agentgraph.core.errors import (
    GraphInvalid,
    GraphNotFound,
    InputInvalid,
    LlmNotConfigured,
    MalformedMessage,
)
from agentgraph.core.messages import EventRunRequest, NodeFinished, NodeReady, decode
from agentgraph.core.ports import GraphStore
from agentgraph.core.records import RunRecord
from agentgraph.engine import Engine
from agentgraph.engine_grow import resolve_stored_subgraphs
from agentgraph.observability import metrics

log = logging.getLogger("agentgraph.functions")

# Owner of runs started from run-requests messages that name none: no user's uid, so
# only admins see them (the topic is writable only by trusted publishers).
EVENT_OWNER = "event:run-requests"


async def execute(engine: Engine, message: PubSubMessage) -> None:
    """node-ready → one attempt of one node. Messages of another pool are acked unrun:
    the emulator does not apply subscription filters, so exec-<pool> sees every pool."""
    pool = os.environ.get(names.ENV_POOL)
    their_pool = message.attributes.get(names.POOL_ATTRIBUTE)
    if pool and their_pool and their_pool != pool:
        log.debug(
            "message %s is for pool %s, not %s: ignored", message.message_id, their_pool, pool
        )
        return
    ready = decode(NodeReady, message.data, f"node-ready message {message.message_id}")
    if message.publish_time is not None:  # ready → delivered to an executor
        delay = max(0.0, time.time() - message.publish_time)
        metrics.instruments().queue_delay.record(delay, {"pool": their_pool or "default"})
    await engine.execute(ready.run_id, ready.node_id, ready.attempt)


async def complete(engine: Engine, message: PubSubMessage) -> None:
    """node-finished → the fan-in for the node's children (once per edge)."""
    finished = decode(NodeFinished, message.data, f"node-finished message {message.message_id}")
    await engine.complete(finished.run_id, finished.node_id, finished.status)


async def retry(engine: Engine, body: bytes) -> NodeReady:
    """A Cloud Task came due → the node is ready for its next attempt, node-ready sent."""
    due = decode(NodeReady, body, "retry task body")
    await engine.retry(due.run_id, due.node_id, due.attempt)
    return due


async def start_from_event(engine: Engine, graphs: GraphStore, message: PubSubMessage) -> RunRecord:
    """run-requests → a run. The message id is the idempotency key, so a redelivered
    request finds its run instead of starting a second one."""
    request = decode(EventRunRequest, message.data, f"run-requests message {message.message_id}")
    document = request.graph
    if document is None:
        assert request.graph_id is not None
        stored = await graphs.get(request.owner or EVENT_OWNER, request.graph_id, request.version)
        if stored is None:
            raise MalformedMessage(str(GraphNotFound(request.graph_id, request.version)))
        document = stored.definition
    document = await resolve_stored_subgraphs(dict(document), request.owner or EVENT_OWNER, graphs)
    try:
        return await engine.start_run(
            document,
            request.input,
            owner=request.owner or EVENT_OWNER,
            idempotency_key=f"pubsub:{message.message_id}",
            request_hash=hashlib.sha256(message.data).hexdigest(),
        )
    except (GraphInvalid, InputInvalid, LlmNotConfigured) as exc:
        raise MalformedMessage(f"run-requests message {message.message_id}: {exc}") from exc
