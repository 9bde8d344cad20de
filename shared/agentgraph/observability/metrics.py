"""Metrics of runs, node attempts, model use, retries and the sweeper.

The instruments come from the OpenTelemetry metrics API: until `configure` sets a meter
provider (AGENTGRAPH_TRACE other than off), every record is the API's no-op. When
deployed (`gcp`) they are exported to Cloud Monitoring (the service account needs
roles/monitoring.metricWriter; Terraform grants it), with `otlp` to the OTLP endpoint,
with `console` to stderr, with `file` nowhere (the file holds spans).

Attributes are few and bounded (status, model, error class, node kind): never run or
node ids, which would make one time series per run.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import Any

from opentelemetry import metrics

METER_NAME = "agentgraph"
EXPORT_INTERVAL_MS = 60_000


class Instruments:
    def __init__(self, meter: Any) -> None:
        self.runs_started = meter.create_counter("agentgraph.runs.started", unit="{run}")
        self.runs_finished = meter.create_counter(
            "agentgraph.runs.finished", unit="{run}", description="by status"
        )
        self.node_attempts = meter.create_counter(
            "agentgraph.node.attempts", unit="{attempt}", description="by status and model"
        )
        self.node_duration = meter.create_histogram(
            "agentgraph.node.duration", unit="s", description="claim to finish of an attempt"
        )
        self.queue_delay = meter.create_histogram(
            "agentgraph.node.queue_delay", unit="s", description="node-ready published → delivered"
        )
        self.tokens = meter.create_counter(
            "gen_ai.client.token.usage.total", unit="{token}", description="by model and type"
        )
        self.cost = meter.create_counter("agentgraph.llm.cost", unit="USD", description="by model")
        self.retries = meter.create_counter(
            "agentgraph.node.retries", unit="{retry}", description="by error class"
        )
        self.sweep_recoveries = meter.create_counter(
            "agentgraph.sweep.recoveries", unit="{message}"
        )


@cache
def instruments() -> Instruments:
    """Created once per process, after `configure` (or on the no-op meter)."""
    return Instruments(metrics.get_meter(METER_NAME))


def configure(mode: str, resource: Any = None) -> Any | None:
    """Set the process's meter provider for a tracing mode; None when nothing exports."""
    if mode in ("off", "file"):
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter: Any
    if mode == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        exporter = ConsoleMetricExporter(out=sys.stderr)
    elif mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    else:
        from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter

        # Every instance writes its own time series (a unique label), or concurrent writers
        # of one series would have their points rejected.
        exporter = CloudMonitoringMetricsExporter(
            project_id=os.environ.get("GOOGLE_CLOUD_PROJECT"), add_unique_identifier=True
        )
    interval = int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or EXPORT_INTERVAL_MS)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    metrics.set_meter_provider(provider)
    instruments.cache_clear()
    return provider
