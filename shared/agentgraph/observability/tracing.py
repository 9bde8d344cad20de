"""Tracing: one trace per run, joined across every process a run crosses.

A run's messages carry the W3C trace context (`traceparent`, `tracestate`): Pub/Sub
messages as attributes (`backends/gcp/pubsub_dispatcher.py`), Cloud Tasks as HTTP headers
(`backends/gcp/cloud_tasks_retries.py`). Each function continues the trace of the message
it handles (`continued`), so the api request, every node attempt, every fan-in decision
and every retry of one run are spans of one trace, whichever instance ran them.

Where spans go is `AGENTGRAPH_TRACE` (read once per process by `configure`):
- unset / `off`: nowhere. `span` then returns one shared no-op context manager, so the
  hot path pays a global read and a call (tens of nanoseconds; bench/tracing_bench.py).
- `console`: JSON spans on stderr; `otlp`: OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT`
  (the SDK's own variables apply: headers, `OTEL_BSP_SCHEDULE_DELAY`, ...);
- `file`: OTLP JSON lines appended to `AGENTGRAPH_TRACE_FILE` (default
  `agentgraph-traces.jsonl`), what `agentgraph trace-view` reads;
- `gcp`: Cloud Trace, with the official exporter (the functions' service account needs
  roles/cloudtrace.agent; Terraform grants it and sets this variable).

Prompt and answer text are never put on spans unless `AGENTGRAPH_TRACE_CONTENT=1`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentgraph.core import names

ENV_TRACE = names.ENV_TRACE
ENV_TRACE_FILE = "AGENTGRAPH_TRACE_FILE"
ENV_TRACE_CONTENT = "AGENTGRAPH_TRACE_CONTENT"
DEFAULT_TRACE_FILE = "agentgraph-traces.jsonl"
MODES = ("off", "console", "otlp", "file", "gcp")
TRACER_NAME = "agentgraph"

# Attribute names: the run's own, and the GenAI semantic conventions for model calls.
RUN_ID = "agentgraph.run_id"
NODE_ID = "agentgraph.node_id"
ATTEMPT = "agentgraph.attempt"
NODE_KIND = "agentgraph.node.kind"
NODE_STATUS = "agentgraph.node.status"
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_PROVIDER = "gen_ai.provider.name"
GENAI_REQUEST_MODEL = "gen_ai.request.model"
GENAI_RESPONSE_MODEL = "gen_ai.response.model"
GENAI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GENAI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GENAI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GENAI_TOOL_NAME = "gen_ai.tool.name"


class _Noop:
    """What every span hook returns with tracing off: entered as None, lets exceptions
    through. (`contextlib.nullcontext` does the same a little slower: a node passes
    through eight of these.)"""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        return None


_NOOP = _Noop()
_tracer: trace.Tracer | None = None  # None: tracing off
_capture_content = False


def enabled() -> bool:
    return _tracer is not None


def capture_content() -> bool:
    """Whether prompts and answers may go on spans (asked for, never by default)."""
    return _capture_content


def use(provider: Any | None) -> None:
    """Send this process's spans to `provider` (a TracerProvider), or nowhere (None).
    `configure` calls it; tests call it with a provider of their own."""
    global _tracer, _capture_content
    _tracer = None if provider is None else provider.get_tracer(TRACER_NAME)
    _capture_content = os.environ.get(ENV_TRACE_CONTENT, "") == "1"


def mode() -> str:
    value = (os.environ.get(ENV_TRACE) or "off").strip().lower()
    return value if value in MODES else "off"


def configure(service: str, resource: Any = None) -> Any | None:
    """Set this process's tracer provider from AGENTGRAPH_TRACE; returns it (None when
    off). Idempotent per process: the first call decides."""
    if _tracer is not None:
        return trace.get_tracer_provider()
    chosen = mode()
    if chosen == "off":
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=resource)
    if chosen == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # stderr: stdout is the CLI's answer (`--json`).
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif chosen == "file":
        from agentgraph.observability.otlp_file import OtlpJsonFileExporter

        path = os.environ.get(ENV_TRACE_FILE) or DEFAULT_TRACE_FILE
        provider.add_span_processor(BatchSpanProcessor(OtlpJsonFileExporter(path)))
    else:  # gcp
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        provider.add_span_processor(BatchSpanProcessor(CloudTraceSpanExporter()))
    trace.set_tracer_provider(provider)
    use(provider)
    return provider


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it; the shared no-op when tracing is off.
    An exception leaving the block marks the span as an error (and is re-raised)."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(
        name, kind=kind, attributes=_clean(attributes) if attributes else None
    )


def continued(
    carrier: Mapping[str, str] | None,
    name: str,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
) -> contextlib.AbstractContextManager[Any]:
    """A span that continues the trace whose context `carrier` holds (message attributes,
    request headers): the function side of propagation. A carrier without one starts a
    new trace. The shared no-op (entered as None) when tracing is off."""
    if _tracer is None:
        return _NOOP
    return _continued(carrier, name, attributes, kind)


@contextlib.contextmanager
def _continued(
    carrier: Mapping[str, str] | None,
    name: str,
    attributes: Mapping[str, Any] | None,
    kind: SpanKind,
) -> Iterator[Any]:
    assert _tracer is not None
    parent = propagate.extract(_lower(carrier)) if carrier else None
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with _tracer.start_as_current_span(
            name, kind=kind, attributes=_clean(attributes) if attributes else None
        ) as current:
            yield current
    finally:
        if token is not None:
            otel_context.detach(token)


def current_context() -> Any:
    """The current trace context, to carry through an in-process queue (None when off)."""
    return otel_context.get_current() if _tracer is not None else None


@contextlib.contextmanager
def attached(context: Any) -> Iterator[None]:
    """Make a context from `current_context` current inside the block."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def inject(carrier: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to `carrier` (message attributes, task headers);
    adds nothing when tracing is off or no span is current."""
    if _tracer is not None:
        propagate.inject(carrier)
    return carrier


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span (nothing when tracing is off). Names use `__`
    for dots: annotate(gen_ai__response__model="x")."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(key.replace("__", "."), _attribute(value))


def set_attributes(attributes: Mapping[str, Any]) -> None:
    if _tracer is None:
        return
    trace.get_current_span().set_attributes(_clean(attributes))


def mark_error(error_type: str, message: str = "") -> None:
    """The current span failed (a node error, not an exception leaving the span)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    current.set_attribute("error.type", error_type)
    current.set_status(Status(StatusCode.ERROR, message[:200]))


def current_ids() -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of the current span in hex, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        bool(context.trace_flags & 1),
    )


def shutdown() -> None:
    """Flush and stop the provider (end of a CLI run; function instances use atexit)."""
    provider = trace.get_tracer_provider()
    closer = getattr(provider, "shutdown", None)
    if _tracer is not None and closer is not None:
        closer()


def _lower(carrier: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers arrive in any case; the propagator looks up lower-case names."""
    return {str(k).lower(): str(v) for k, v in carrier.items()}


def _attribute(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _attribute(v) for k, v in attributes.items() if v is not None}


__all__ = [
    "SpanKind",
    "annotate",
    "configure",
    "continued",
    "current_ids",
    "enabled",
    "inject",
    "mark_error",
    "span",
    "use",
]
