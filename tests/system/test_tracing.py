"""One run is one trace, across every function process it crosses.

The functions run as in `python -m emulator.stack` (each in its own process), with
`AGENTGRAPH_TRACE=otlp` pointed at a collector this module starts on loopback
(emulator/otlp_collector.py). The trace context travels in the Pub/Sub messages'
attributes and the Cloud Tasks' headers; the test reads back what every process exported
and checks the shape: api request → node attempt → model call, a retry through Cloud
Tasks inside the same trace, and metrics exported beside the spans.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulator import harness
from emulator.otlp_collector import CollectedSpan, OtlpCollector
from emulator.stack import Stack
from tests.system.test_functions_e2e import start, wait_run

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PROJECT = "trace-agentgraph"
TOOLS = Path(__file__).with_name("e2e_tools.py")
SERVER, CONSUMER = 2, 5  # OTLP span kinds


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    emulator_stack: harness.EmulatorStack,
    collector: OtlpCollector,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    env = {
        "AGENTGRAPH_TRACE": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans reach the collector promptly
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    with Stack(
        emulators=emulator_stack,
        project=PROJECT,
        tools=[str(TOOLS)],
        log_dir=tmp_path_factory.mktemp("trace-logs"),
        env=env,
        sweep_every_s=None,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as client:
        yield client


def ancestors(span: CollectedSpan, by_id: dict[str, CollectedSpan]) -> list[CollectedSpan]:
    """The span's parents up to the root, nearest first (all must have been received)."""
    chain = []
    while span.parent_id is not None:
        assert span.parent_id in by_id, f"the parent of {span.name} was not received"
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def test_a_run_is_one_trace_from_the_api_through_nodes_model_calls_and_a_cloud_tasks_retry(
    api: httpx.Client, collector: OtlpCollector, stack: Stack, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex
    graph = {
        "name": "traced",
        "nodes": [
            {
                "id": "fetch",
                "tool": "e2e_value",
                "args": {"value": nonce, "marker": str(tmp_path / "m"), "key": "fetch"},
            },
            {
                "id": "ask",
                "after": ["fetch"],
                # The stub answers 503 to the first call of this conversation: one retry.
                "model": "gemini-2.5-flash~fail=1x503",
                "prompt": "hello {{ nodes.fetch.output }}",
                "retry": {"max_attempts": 2, "initial_delay_s": 1, "jitter": False},
            },
        ],
    }
    run = wait_run(api, start(api, graph)["run_id"])
    assert run["status"] == "succeeded", run
    run_id = run["run_id"]

    def complete(spans: list[CollectedSpan]) -> bool:
        ours = [s for s in spans if s.attributes.get("agentgraph.run_id") == run_id]
        names = {(s.name, s.attributes.get("agentgraph.attempt")) for s in ours}
        chats = [s for s in spans if s.name == "chat gemini-2.5-flash~fail=1x503"]
        return {("node fetch", 1), ("node ask", 1), ("node ask", 2)} <= names and len(chats) >= 2

    spans = collector.wait_for(complete, 60, f"the spans of run {run_id} were not all received")
    api_span = next(
        s
        for s in spans
        if s.name.startswith("api POST") and s.attributes.get("agentgraph.run_id") == run_id
    )
    trace = [s for s in spans if s.trace_id == api_span.trace_id]
    by_id = {s.span_id: s for s in trace}

    # Every span of the run is in the api request's trace.
    assert {s.trace_id for s in spans if s.attributes.get("agentgraph.run_id") == run_id} == {
        api_span.trace_id
    }
    assert api_span.parent_id is None and api_span.kind == SERVER

    # api → node attempt → model call, for the attempt that succeeded after the retry.
    second = next(
        s for s in trace if s.name == "node ask" and s.attributes["agentgraph.attempt"] == 2
    )
    chat = next(s for s in trace if s.name.startswith("chat ") and s.parent_id == second.span_id)
    chain = ancestors(chat, by_id)
    assert chain[0] is second and chain[-1] is api_span
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gemini-2.5-flash~fail=1x503"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert "gen_ai.prompt" not in chat.attributes  # no prompt text unless asked

    # The retry came through Cloud Tasks, inside the same trace, below the failed attempt.
    retry = next(s for s in chain if s.name == "retry")
    assert retry.kind == SERVER
    first = next(
        s for s in trace if s.name == "node ask" and s.attributes["agentgraph.attempt"] == 1
    )
    assert first in ancestors(retry, by_id)
    assert first.attributes.get("error.type"), first.attributes  # the 503, as classified
    assert any(s.name == "retry.schedule" and s.parent_id == first.span_id for s in trace)

    # The tool call nests in its node; the fan-in decision that made `ask` ready is there.
    fetch = next(s for s in trace if s.name == "node fetch")
    assert any(s.name == "execute_tool e2e_value" and s.parent_id == fetch.span_id for s in trace)
    fanin = next(s for s in trace if s.name == "fanin ask")
    assert fanin.attributes["agentgraph.fanin.verdict"] == "ready"
    assert fetch in ancestors(fanin, by_id)

    # exec did the fan-in of the node it finished, in the same span (no complete hop).
    assert fetch.pid == fanin.pid
    assert not any(s.name == "complete" and s.kind == CONSUMER for s in trace)

    # Across processes: the api, exec and retry functions each added spans.
    consumers = {s.name for s in trace if s.kind == CONSUMER}
    assert "exec_node" in consumers
    assert len({s.pid for s in trace}) >= 3, {s.pid for s in trace}

    # The executor's log lines about the run are JSON, with its node and its trace.
    log_path = stack.servers["exec-default"].log_path
    assert log_path is not None
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if run_id in line]
    ours = [line for line in lines if line.get("run_id") == run_id]
    assert ours and {line["node_id"] for line in ours} <= {"fetch", "ask"}
    assert {line["logging.googleapis.com/trace"] for line in ours} == {
        f"projects/{PROJECT}/traces/{api_span.trace_id}"
    }


def test_metrics_of_node_attempts_and_tokens_are_exported_beside_the_spans(
    api: httpx.Client, collector: OtlpCollector
) -> None:
    graph = {"name": "metered", "nodes": [{"id": "say", "model": "echo", "prompt": "hi"}]}
    assert wait_run(api, start(api, graph)["run_id"])["status"] == "succeeded"

    def exported(_: list[CollectedSpan]) -> bool:
        return {
            "agentgraph.runs.started",
            "agentgraph.node.attempts",
            "agentgraph.node.duration",
            "agentgraph.node.queue_delay",
            "agentgraph.runs.finished",
        } <= collector.metric_names

    collector.wait_for(exported, 30, f"metrics were not exported: {collector.metric_names}")


def test_a_local_run_traced_to_a_file_is_drawn_as_a_waterfall_by_trace_view(
    tmp_path: Path,
) -> None:
    graph = {
        "name": "viewed",
        "nodes": [
            {"id": "first", "model": "echo", "prompt": "one"},
            {"id": "second", "after": ["first"], "model": "echo", "prompt": "two"},
        ],
    }
    (tmp_path / "g.yaml").write_text(json.dumps(graph))
    env = {
        **os.environ,
        "AGENTGRAPH_TRACE": "file",
        "AGENTGRAPH_TRACE_FILE": str(tmp_path / "traces.jsonl"),
        "NO_COLOR": "1",
    }

    def agentgraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentgraph", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    ran = agentgraph("run", str(tmp_path / "g.yaml"), "--db", str(tmp_path / "db"), "--json")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    viewed = agentgraph("trace-view", run_id)

    assert viewed.returncode == 0, viewed.stderr
    rows = [
        re.match(r"\s*(.+?)\s+[\d.]+\s+[\d.]+\s+\|", line) for line in viewed.stdout.splitlines()
    ]
    labels = [row[1] for row in rows[1:] if row]
    assert labels[0] == "run viewed"
    assert labels.index("node first") < labels.index("chat echo") < labels.index("node second")
    assert agentgraph("trace-view", "no-such-run").returncode == 1
