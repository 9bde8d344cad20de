"""Traces, metrics and log lines, in one process: the shapes the functions rely on.

The cross-process half (the context travelling through Pub/Sub and Cloud Tasks between
function processes) is tests/system/test_tracing.py.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentgraph.backends.gcp.cloud_tasks_retries import CloudTasksRetries
from agentgraph.backends.gcp.pubsub_dispatcher import PubSubDispatcher
from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.errors import RetryableToolError
from agentgraph.llm import default_router
from agentgraph.observability import logs, metrics, tracing, waterfall
from agentgraph.observability.otlp_file import OtlpJsonFileExporter
from agentgraph.tools import Registry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    return next(s for s in finished if s.name == name)


# ---- tracing off ---------------------------------------------------------------------------


def test_with_tracing_off_a_span_is_the_shared_no_op_and_nothing_is_injected() -> None:
    assert not tracing.enabled()
    assert tracing.span("a") is tracing.span("b")
    assert tracing.inject({"pool": "default"}) == {"pool": "default"}
    with tracing.continued({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, "x") as s:
        assert s is None


# ---- propagation -------------------------------------------------------------------------


def test_a_context_injected_into_a_carrier_is_continued_by_its_receiver(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("sender"):
        carrier = tracing.inject({})
    assert set(carrier) >= {"traceparent"}
    with tracing.continued({k.upper(): v for k, v in carrier.items()}, "receiver"):
        pass
    sender, receiver = (
        by_name(spans.get_finished_spans(), "sender"),
        by_name(spans.get_finished_spans(), "receiver"),
    )
    assert receiver.context.trace_id == sender.context.trace_id
    assert receiver.parent is not None and receiver.parent.span_id == sender.context.span_id


def test_a_cloud_task_carries_the_trace_of_the_attempt_that_scheduled_it(
    spans: InMemorySpanExporter,
) -> None:
    retries = CloudTasksRetries("p", "us-central1", "https://retry.example")
    with tracing.span("attempt"):
        headers = retries.task("run", "node", 2, 0.0)["http_request"]["headers"]
    attempt = spans.get_finished_spans()[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["traceparent"].split("-")[1] == format(attempt.context.trace_id, "032x")


async def test_a_pubsub_message_carries_traceparent_beside_its_attributes(
    spans: InMemorySpanExporter,
) -> None:
    class Recorder:  # a publisher that keeps what it was asked to publish
        def __init__(self) -> None:
            self.attributes: dict[str, str] = {}

        def publish(self, topic: str, data: bytes, **attributes: str) -> object:
            import concurrent.futures

            self.attributes = attributes
            future: concurrent.futures.Future[str] = concurrent.futures.Future()
            future.set_result("1")
            return future

    recorder = Recorder()
    with tracing.span("attempt"):
        await PubSubDispatcher("p", publisher=recorder).node_ready("r", "n", 1, "default")
    publish = by_name(spans.get_finished_spans(), "publish agentgraph-node-ready")
    assert recorder.attributes["pool"] == "default"
    assert recorder.attributes["traceparent"].split("-")[2] == format(
        publish.context.span_id, "016x"
    )


# ---- the engine's spans -------------------------------------------------------------------


async def test_a_local_run_is_one_trace_with_node_tool_model_and_fanin_spans(
    spans: InMemorySpanExporter,
) -> None:
    tools = Registry()
    tools.tool(lambda: 3, name="count")
    graph = {
        "name": "traced",
        "nodes": [
            {"id": "count", "tool": "count", "args": {}},
            {
                "id": "ask",
                "after": ["count"],
                "model": "echo",
                "prompt": "n={{ nodes.count.output }}",
            },
        ],
    }
    store = SqliteStore(":memory:")
    try:
        async with LocalRuntime(store, default_router(), tools) as runtime:
            run = await runtime.wait((await runtime.start(graph)).run_id, timeout=30)
    finally:
        store.close()
    finished = spans.get_finished_spans()

    assert {s.context.trace_id for s in finished} == {finished[0].context.trace_id}
    ask = by_name(finished, "node ask")
    chat = by_name(finished, "chat echo")
    assert chat.parent is not None and chat.parent.span_id == ask.context.span_id
    assert ask.attributes is not None and ask.attributes["agentgraph.run_id"] == run.run_id
    assert ask.attributes["agentgraph.node.status"] == "succeeded"
    assert chat.attributes is not None and chat.attributes["gen_ai.request.model"] == "echo"
    assert "gen_ai.prompt" not in chat.attributes
    tool = by_name(finished, "execute_tool count")
    assert tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "count"
    fanin = by_name(finished, "fanin ask")
    assert fanin.attributes is not None and fanin.attributes["agentgraph.fanin.verdict"] == "ready"
    assert ask.parent is not None and ask.parent.span_id == fanin.context.span_id


# ---- the OTLP file and the waterfall ---------------------------------------------------------


def test_spans_written_to_an_otlp_file_come_back_as_the_runs_waterfall(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with (
        tracing.span("api POST /runs", {tracing.RUN_ID: "r1"}),
        tracing.span("node a"),
        tracing.span("chat echo"),
    ):
        pass
    with tracing.span("another run", {tracing.RUN_ID: "r2"}):
        pass
    path = tmp_path / "traces.jsonl"
    OtlpJsonFileExporter(path).export(spans.get_finished_spans())

    lines = waterfall.render(waterfall.run_spans(waterfall.read_spans(path), "r1"))

    assert [line.split()[0] for line in lines[1:]] == ["api", "node", "chat"]
    assert lines[2].startswith("  node a") and lines[3].startswith("    chat echo")
    assert not any("another run" in line for line in lines)


# ---- log lines -------------------------------------------------------------------------------


def log_line(formatter: logging.Formatter, **kw: object) -> str:
    record = logging.LogRecord(
        "agentgraph.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    for key, value in kw.items():
        setattr(record, key, value)
    return formatter.format(record)


def test_a_json_log_line_has_cloud_loggings_fields_and_the_node_it_is_about(
    spans: InMemorySpanExporter,
) -> None:
    formatter = logs.JsonFormatter("proj")
    with logs.log_fields(run_id="r1", node_id="a", attempt=2), tracing.span("node a"):
        line = json.loads(log_line(formatter))
    span = spans.get_finished_spans()[0]
    trace_id = format(span.context.trace_id, "032x")

    assert line["severity"] == "WARNING" and line["message"] == "hello you"
    assert (line["run_id"], line["node_id"], line["attempt"]) == ("r1", "a", 2)
    assert line["logging.googleapis.com/trace"] == f"projects/proj/traces/{trace_id}"
    assert line["logging.googleapis.com/spanId"] == format(span.context.span_id, "016x")


def test_a_terminal_gets_human_lines_and_anything_else_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(logs.ENV_LOG_FORMAT, raising=False)
    assert isinstance(logs.formatter_for(Terminal()), logs.HumanFormatter)
    assert isinstance(logs.formatter_for(io.StringIO()), logs.JsonFormatter)
    monkeypatch.setenv(logs.ENV_LOG_FORMAT, "json")
    assert isinstance(logs.formatter_for(Terminal()), logs.JsonFormatter)
    with logs.log_fields(run_id="r1", node_id="a", attempt=1):
        assert log_line(logs.HumanFormatter()).endswith("hello you [r1/a#1]")


# ---- metrics -----------------------------------------------------------------------------------


async def test_metrics_count_attempts_by_status_retries_by_error_class_and_tokens_by_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = InMemoryMetricReader()
    instruments = metrics.Instruments(MeterProvider(metric_readers=[reader]).get_meter("t"))
    monkeypatch.setattr(metrics, "instruments", lambda: instruments)
    calls = 0

    def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryableToolError("try again")
        return calls

    tools = Registry()
    tools.tool(flaky, name="flaky")
    graph = {
        "name": "metered",
        "nodes": [
            {
                "id": "f",
                "tool": "flaky",
                "args": {},
                "retry": {"max_attempts": 2, "initial_delay_s": 0},
            },
            {"id": "ask", "after": ["f"], "model": "echo", "prompt": "{{ nodes.f.output }}"},
        ],
    }
    store = SqliteStore(":memory:")
    try:
        async with LocalRuntime(store, default_router(), tools) as runtime:
            run = await runtime.wait((await runtime.start(graph)).run_id, timeout=30)
    finally:
        store.close()
    assert run.status.value == "succeeded"

    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)

    def total(name: str, **attributes: str) -> float:
        return sum(
            p.value
            for p in points[name]
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    assert total("agentgraph.runs.started") == 1
    assert total("agentgraph.runs.finished", status="succeeded") == 1
    assert total("agentgraph.node.attempts", status="retrying", kind="tool") == 1
    assert total("agentgraph.node.attempts", status="succeeded") == 2
    assert total("agentgraph.node.attempts", status="succeeded", model="echo") == 1
    assert total("agentgraph.node.retries", **{"error.type": "RetryableToolError"}) == 1
    assert sum(p.count for p in points["agentgraph.node.duration"]) == 3
    assert total("gen_ai.client.token.usage.total", **{"gen_ai.request.model": "echo"}) > 0
