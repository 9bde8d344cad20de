"""The built-in tools in whole runs: `http_get` as a tool node, in process and through
the `agentgraph` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.llm import default_router
from agentgraph.tools import default_registry
from agentgraph.tools.context import tool_context
from agentgraph.tools.web import HttpPolicy, configure
from tests.web_server import _Server, web_server

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    with web_server() as running:
        yield running


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    store = SqliteStore(str(tmp_path / "runs.db"))
    async with LocalRuntime(store, default_router({}), default_registry, workers=4) as rt:
        yield rt
    store.close()


@pytest.fixture
def loopback_allowed() -> Iterator[None]:
    configure(HttpPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_loopback=True))
    yield
    configure(None)


def fetch_node(url: str, **extra: Any) -> dict[str, Any]:
    return {"id": "fetch", "tool": "http_get", "args": {"url": url, **extra}}


async def test_a_tool_node_fetches_a_page_and_a_child_reads_it(
    runtime: LocalRuntime, server: _Server, loopback_allowed: None
) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/text"
    run = await runtime.run(
        {
            "name": "fetch",
            "nodes": [
                fetch_node("{{ input.url }}"),
                {
                    "id": "status",
                    "tool": "http_get",
                    "after": ["fetch"],
                    "args": {"url": "{{ input.url }}", "max_bytes": 5},
                },
            ],
        },
        {"url": url},
    )
    nodes = {n.node_id: n for n in await runtime.store.list_nodes(run.run_id)}
    assert run.status == RunStatus.SUCCEEDED
    assert nodes["fetch"].output["text"].startswith("hello from 127.0.0.1")
    assert nodes["status"].output["text"] == "hello"
    assert nodes["status"].output["truncated"] is True


async def test_a_refused_url_fails_the_node_at_once_without_retries(
    runtime: LocalRuntime, server: _Server
) -> None:
    configure(HttpPolicy(allowed_hosts=frozenset({"127.0.0.1"})))  # loopback not allowed
    try:
        run = await runtime.run(
            {
                "name": "fetch",
                "nodes": [fetch_node(f"http://127.0.0.1:{server.server_address[1]}/text")],
            }
        )
    finally:
        configure(None)
    (node,) = await runtime.store.list_nodes(run.run_id)
    assert run.status == RunStatus.FAILED and node.status == NodeStatus.FAILED
    assert node.error is not None and node.error.type == "ToolRefused"
    assert "loopback" in node.error.message and node.attempt == 1


def test_the_command_refuses_a_host_off_the_allowlist_from_its_environment(
    tmp_path: Path,
) -> None:
    graph, db = tmp_path / "g.yaml", str(tmp_path / "db")
    graph.write_text(
        yaml.safe_dump({"name": "fetch", "nodes": [fetch_node("https://example.com/")]})
    )
    result = subprocess.run(
        [sys.executable, "-m", "agentgraph", "run", str(graph), "--json", "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "AGENTGRAPH_HTTP_ALLOWED_HOSTS": "docs.python.org", "NO_COLOR": "1"},
    )
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ToolRefused"
    assert error["message"] == (
        "http_get: host 'example.com' is not allowed (allowed: docs.python.org)"
    )


async def test_a_node_writes_a_run_file_and_a_later_node_reads_it(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    run = await runtime.run(
        {
            "name": "files",
            "nodes": [
                {
                    "id": "write",
                    "tool": "write_run_file",
                    "args": {"path": "drafts/report.md", "content": "{{ input.text }}"},
                },
                {
                    "id": "read",
                    "tool": "read_run_file",
                    "after": ["write"],
                    "args": {"path": "{{ nodes.write.output.path }}"},
                },
            ],
        },
        {"text": "# Findings\nAll good."},
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs == {
        "read": {"path": "drafts/report.md", "bytes": 20, "text": "# Findings\nAll good."}
    }
    on_disk = tmp_path / "runs.db.files" / run.run_id / "drafts" / "report.md"
    assert on_disk.read_text() == "# Findings\nAll good."


async def test_a_path_climbing_out_of_the_space_fails_the_node_naming_it(
    runtime: LocalRuntime,
) -> None:
    run = await runtime.run(
        {
            "name": "files",
            "nodes": [
                {"id": "w", "tool": "write_run_file", "args": {"path": "../x", "content": "x"}}
            ],
        }
    )
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error["type"] == "ToolRefused"
    assert "climbs out with '..'" in run.error["message"]


async def test_a_sync_tool_learns_its_run_node_and_attempt_from_the_context(
    tmp_path: Path,
) -> None:
    """The documented way for a tool to know its run (tools/context.py): the engine sets
    it around the attempt; a sync tool on its worker thread sees a copy."""
    registry = default_registry.child()

    @registry.tool
    def whoami() -> dict[str, Any]:
        context = tool_context()
        return {"run": context.run_id, "node": context.node_id, "attempt": context.attempt}

    store = SqliteStore(str(tmp_path / "ctx.db"))
    async with LocalRuntime(store, default_router({}), registry, workers=2) as rt:
        run = await rt.run({"name": "ctx", "nodes": [{"id": "me", "tool": "whoami"}]})
    store.close()
    assert run.outputs == {"me": {"run": run.run_id, "node": "me", "attempt": 1}}
