"""`agentgraph trace-view RUN`: a run's spans as a waterfall, from an OTLP JSON file.

The file is what `AGENTGRAPH_TRACE=file` writes (otlp_file.py) or what an OpenTelemetry
Collector's file exporter writes: one ExportTraceServiceRequest per line, OTLP/JSON. The
run's traces are those of any span whose `agentgraph.run_id` is the run; every span of
those traces is shown, nested under its parent, with a bar placed on the run's timeline,
so a reader sees where the time went without Cloud Trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BAR_WIDTH = 40


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    service: str


def _value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


def read_spans(path: Path | str) -> Iterator[Span]:
    """Every span in an OTLP JSON lines file (lines that do not parse are skipped)."""
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            try:
                document = json.loads(line)
            except ValueError:
                continue
            for resource_spans in document.get("resourceSpans", []):
                resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
                service = str(resource.get("service.name", "?"))
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        yield Span(
                            span["traceId"],
                            span["spanId"],
                            span.get("parentSpanId") or None,
                            span.get("name", "?"),
                            int(span.get("startTimeUnixNano", 0)),
                            int(span.get("endTimeUnixNano", 0)),
                            _attributes(span.get("attributes", [])),
                            service,
                        )


def run_spans(spans: Iterable[Span], run_id: str) -> list[Span]:
    """The spans of every trace that has a span of `run_id`."""
    spans = list(spans)
    traces = {s.trace_id for s in spans if s.attributes.get("agentgraph.run_id") == run_id}
    return [s for s in spans if s.trace_id in traces]


def render(spans: list[Span], width: int = BAR_WIDTH) -> list[str]:
    """The waterfall: one line per span, children under parents, ordered by start."""
    if not spans:
        return []
    begin = min(s.start_ns for s in spans)
    total = max(max(s.end_ns for s in spans) - begin, 1)
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    label_width = min(60, max(len(s.name) for s in spans) + 2 * _max_depth(children, None, 0) + 2)
    lines = [f"{'span':<{label_width}} {'start':>9} {'ms':>9}  timeline ({total / 1e6:.1f} ms)"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            label = ("  " * depth + span.name)[:label_width]
            offset = (span.start_ns - begin) / 1e6
            duration = (span.end_ns - span.start_ns) / 1e6
            left = round((span.start_ns - begin) / total * width)
            length = max(1, round((span.end_ns - span.start_ns) / total * width))
            bar = " " * left + "█" * min(length, width - left if left < width else 1)
            lines.append(f"{label:<{label_width}} {offset:9.1f} {duration:9.1f}  |{bar:<{width}}|")
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return lines


def _max_depth(children: dict[str | None, list[Span]], parent: str | None, depth: int) -> int:
    below = [_max_depth(children, s.span_id, depth + 1) for s in children.get(parent, [])]
    return max(below, default=depth)
