"""Structured logs: JSON lines Cloud Logging understands, or a human line on a terminal.

Cloud Run (and so Cloud Functions) parses a JSON line on stdout/stderr into a structured
entry: `severity`, `message`, and the special fields `logging.googleapis.com/trace`,
`.../spanId`, `.../trace_sampled` that tie the line to its trace in Cloud Trace. Each line
also carries the run, node and attempt it is about (`log_fields`, set by the engine around
a node attempt), so one query finds every line of a run across all instances.

`AGENTGRAPH_LOG_FORMAT=json|text` chooses; by default a terminal gets text and anything
else (a function's output, a file) gets JSON. Log calls in this code base never format
prompts, answers or secrets into messages; the formatter adds only the fields above.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from agentgraph.observability import tracing

ENV_LOG_FORMAT = "AGENTGRAPH_LOG_FORMAT"
ENV_LOG_LEVEL = "AGENTGRAPH_LOG_LEVEL"
FIELDS = ("run_id", "node_id", "attempt")
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"

# (run_id, node_id, attempt) of the attempt being worked, as FIELDS; the dict a log line
# carries is built when a line is written, not on every attempt.
_fields: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar(
    "agentgraph_log_fields", default=None
)
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO"}


class log_fields:
    """Every log line inside the block carries the run, node and attempt it is about. A
    class, not a generator, holding a tuple, not a dict: the engine enters one per node
    attempt, tracing on or off, and most attempts log nothing (0.4 µs instead of 0.85)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, run_id: str, node_id: str | None = None, attempt: int | None = None):
        self._fields = (run_id, node_id, attempt)

    def __enter__(self) -> None:
        self._token = _fields.set(self._fields)

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        _fields.reset(self._token)


def current_fields(record: logging.LogRecord | None = None) -> dict[str, Any]:
    values = _fields.get()
    fields = (
        {name: value for name, value in zip(FIELDS, values, strict=True) if value is not None}
        if values
        else {}
    )
    if record is not None:
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                fields[name] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line, in Cloud Logging's structured-logging shape."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEBUG"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            **current_fields(record),
        }
        ids = tracing.current_ids()
        if ids is not None:
            trace_id, span_id, sampled = ids
            entry[TRACE_FIELD] = (
                f"projects/{self.project}/traces/{trace_id}" if self.project else trace_id
            )
            entry[SPAN_FIELD] = span_id
            entry[SAMPLED_FIELD] = sampled
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """`LEVEL logger: message [run/node#attempt]` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = current_fields(record)
        if "run_id" in fields:
            where = str(fields["run_id"])
            if "node_id" in fields:
                where += f"/{fields['node_id']}"
            if "attempt" in fields:
                where += f"#{fields['attempt']}"
            line = f"{line} [{where}]"
        return line


def formatter_for(stream: TextIO, project: str | None = None) -> logging.Formatter:
    chosen = (os.environ.get(ENV_LOG_FORMAT) or "").strip().lower()
    if chosen not in ("json", "text"):
        chosen = "text" if _isatty(stream) else "json"
    return JsonFormatter(project) if chosen == "json" else HumanFormatter()


def configure(stream: TextIO | None = None, level: int | str | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one structured handler (idempotent)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(stream, os.environ.get("GOOGLE_CLOUD_PROJECT")))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_agentgraph", False):
            root.removeHandler(old)
    handler._agentgraph = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level or os.environ.get(ENV_LOG_LEVEL) or logging.INFO)
    return handler


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
