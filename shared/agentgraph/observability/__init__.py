"""Traces, metrics and structured logs (OpenTelemetry), outside the pure core.

`setup(service)` is called once per process by whatever hosts the engine (the functions'
`functions/main.py`, the CLI): it configures logging (`logs`), the tracer provider
(`tracing`, from AGENTGRAPH_TRACE) and the meter provider (`metrics`). The engine and the
gcp glue only call `tracing.span`/`continued`/`inject` and the `metrics` instruments,
which cost nothing measurable while nothing is configured.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TextIO

from agentgraph.observability import logs, metrics, tracing

_done = False
log = logging.getLogger("agentgraph.observability")


def resource(service: str) -> Any:
    """The process's resource: service name, the Cloud Run service (K_SERVICE) when
    deployed, and the process id (several instances of one function are told apart)."""
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, Any] = {
        "service.name": service,
        "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
        "process.pid": os.getpid(),
    }
    if os.environ.get("K_SERVICE"):
        attributes["faas.name"] = os.environ["K_SERVICE"]
    resource = Resource.create(attributes)
    if tracing.mode() == "gcp":  # the monitored resource Cloud Monitoring files metrics under
        try:
            from opentelemetry.resourcedetector.gcp_resource_detector import (
                GoogleCloudResourceDetector,
            )

            resource = GoogleCloudResourceDetector(raise_on_error=False).detect().merge(resource)
        except Exception:  # detection is best effort: spans and logs do not need it
            log.warning("the Google Cloud resource could not be detected", exc_info=True)
    return resource


def setup(service: str, *, log_stream: TextIO | None = None, configure_logs: bool = True) -> None:
    """Logs, traces and metrics for this process, from the environment. Idempotent."""
    if configure_logs:
        logs.configure(log_stream)
    setup_telemetry(service)


def setup_telemetry(service: str) -> None:
    """Traces and metrics from AGENTGRAPH_TRACE, once per process; later calls return at
    once. The functions call it on each request rather than at import: gunicorn forks the
    worker after importing `functions/main.py`, and an exporter's gRPC channel or thread
    must be made in the process that uses it."""
    global _done
    if _done:
        return
    _done = True
    mode = tracing.mode()
    if mode == "off":
        return
    try:
        res = resource(service)
        tracing.configure(service, res)
        metrics.configure(mode, res)
    except Exception:  # telemetry must never keep a function from serving
        log.exception("%s=%s could not be set up: tracing stays off", tracing.ENV_TRACE, mode)
        tracing.use(None)


__all__ = ["logs", "metrics", "setup", "setup_telemetry", "tracing"]
