"""The `gcp` backend: Firestore state, Pub/Sub delivery, Cloud Tasks retries.

`open_engine()` wires the engine once per process and returns the same one afterwards:
a Cloud Function instance serves many requests, and clients built per call (new gRPC
channels, new TLS handshakes, new auth token fetches) are the slowest thing a function can
do. Everything reads its configuration from the environment (`agentgraph.core.names.ENV_*`),
and with the emulator variables set the same code talks to the local emulators.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from agentgraph.core import names
from agentgraph.core.errors import Misconfigured

if TYPE_CHECKING:
    from agentgraph.engine import Engine

__all__ = ["TRANSIENT_ERRORS", "open_engine", "open_store", "reset"]

_lock = threading.Lock()
_engine: Engine | None = None
_pid: int | None = None


def open_store() -> Any:
    """The Firestore store, configured from the environment (FirestoreStore.from_env)."""
    from agentgraph.backends.gcp.firestore_store import FirestoreStore

    return FirestoreStore.from_env()


def open_engine() -> Engine:
    """The process's engine: FirestoreStore + PubSubDispatcher + CloudTasksRetries, the
    default LLM router and tool registry (plus the modules named in AGENTGRAPH_TOOLS).

    Built on first call and reused; rebuilt only in a forked child (gRPC channels do not
    survive a fork). Building is cheap: the clients connect on first use.
    """
    global _engine, _pid
    with _lock:
        if _engine is None or _pid != os.getpid():
            _engine, _pid = _build_engine(), os.getpid()
        return _engine


def reset() -> None:
    """Forget the process's engine (tests that change the environment)."""
    global _engine, _pid
    with _lock:
        _engine, _pid = None, None


def _build_engine() -> Engine:
    from agentgraph.backends.gcp.cloud_tasks_retries import CloudTasksRetries
    from agentgraph.backends.gcp.firestore_model_gate import FirestoreModelGate
    from agentgraph.backends.gcp.firestore_owner_activity import FirestoreOwnerActivity
    from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher
    from agentgraph.backends.gcp.scratch import GcsScratch
    from agentgraph.core.limits import OwnerLimits
    from agentgraph.core.model_gate import config_from_env
    from agentgraph.core.timeouts import TimeoutBound
    from agentgraph.engine import Engine
    from agentgraph.llm import default_router
    from agentgraph.tools import default_registry, load_modules

    load_modules(m.strip() for m in os.environ.get(names.ENV_TOOLS, "").split(","))
    store = open_store()
    return Engine(
        store,
        PubSubDispatcher.from_env(),
        _retries_from_env(CloudTasksRetries),
        default_router(),
        default_registry,
        # The api function validates graphs but never calls a model, and has no Gemini key
        # (only exec-<pool> functions get the secret): checking keys there would refuse
        # every Gemini graph.
        check_llm_config=False,
        # Per-owner limits (AGENTGRAPH_LIMIT_*), counted from the runs on the same client.
        owner_activity=FirestoreOwnerActivity(store.client),
        owner_limits=OwnerLimits.from_env(os.environ),
        # The runs' files (read_run_file/write_run_file), if AGENTGRAPH_RUN_FILES_BUCKET.
        scratch=GcsScratch.from_env(),
        # Per-model limits and circuit breakers shared by every instance (one document per
        # model): AGENTGRAPH_MODEL_CONCURRENCY / _RATE, AGENTGRAPH_BREAKER_*.
        model_gate=FirestoreModelGate(store.client, config_from_env(os.environ)),
        # Each pool's function timeout (AGENTGRAPH_POOL_TIMEOUTS, set by infra/) bounds the
        # timeout_s a graph may ask for; unset, infra's default pool timeout.
        timeout_bound=TimeoutBound.from_env(os.environ, names.ENV_POOL_TIMEOUTS),
        # exec does the fan-in of the nodes it finishes: one Pub/Sub hop per edge, and a
        # wide fan-in's arrivals made by the parents' own instances (docs/design.md).
        fanin_inline=True,
    )


def _retries_from_env(cls: Any) -> Any:
    """Functions that never schedule retries (api, complete) need no AGENTGRAPH_RETRY_URL:
    they get a scheduler that says what is missing if it is ever used."""
    if os.environ.get(names.ENV_RETRY_URL):
        return cls.from_env()
    return _NoRetryUrl()


class _NoRetryUrl:
    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None:
        raise Misconfigured(
            f"{names.ENV_RETRY_URL} is not set in this function, so it cannot schedule the "
            f"retry of {run_id}/{node_id} attempt {attempt}; only exec-<pool> functions "
            "schedule retries"
        )


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Failures of the infrastructure that a retry (redelivery) can fix."""
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.TooManyRequests,
        gexc.Aborted,
        gexc.RetryError,
        TimeoutError,
        ConnectionError,
    )


TRANSIENT_ERRORS = _transient_errors()
