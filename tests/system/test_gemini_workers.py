"""Gemini agents run by the CLI's runtime, whose SDK calls go to forked worker processes
(llm/sdk_pool.py), against the local Gemini stub: the run is the same run, and no worker
outlives the command."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgraph import cli
from agentgraph.core.errors import LlmNotConfigured
from agentgraph.core.llm_port import LlmRequest
from agentgraph.core.status import RunStatus
from agentgraph.llm import default_router, sdk_pool
from emulator.gemini_stub import GeminiStub

ROOT = Path(__file__).parents[2]
FLASH = "gemini-2.5-flash"

pytestmark = pytest.mark.skipif(not sdk_pool.can_fork(), reason="the workers are forked")


def _graph() -> dict[str, Any]:
    """Two plain agents, one streamed, one answering JSON, and one after all of them."""
    return {
        "name": "workers",
        "nodes": [
            {"id": "a", "model": FLASH, "prompt": "first"},
            {"id": "b", "model": FLASH, "prompt": "second"},
            {"id": "s", "model": FLASH, "prompt": "streamed", "stream": True},
            {"id": "j", "model": FLASH, "prompt": "as json", "output": "json"},
            {"id": "z", "model": FLASH, "prompt": "last", "after": ["a", "b", "s", "j"]},
        ],
    }


async def test_the_cli_runtime_answers_agents_in_workers_and_ends_them(
    on_stub: GeminiStub, tmp_path: Path
) -> None:
    runtime = cli._open_local(str(tmp_path / "runs.db"), gemini_processes=2)
    async with cli._running(runtime):
        run = await runtime.run(_graph())
        gemini = runtime.engine.llm.providers[1].get()
        pids = gemini.worker_pids
        nodes = {n.node_id: n for n in await runtime.store.list_nodes(run.run_id)}
    assert run.status == RunStatus.SUCCEEDED
    assert len(pids) == 2 and os.getpid() not in pids
    assert nodes["a"].output == f"[{FLASH}] first"
    assert nodes["j"].output == {"text": f"[{FLASH}] as json"}
    assert sorted(entry["prompt"] for entry in on_stub.calls()["log"]) == sorted(
        ["first", "second", "streamed", "as json", "last"]
    )
    for pid in pids:  # ended and reaped when the command's runtime closed
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


async def test_a_run_with_agents_has_its_workers_before_its_first_call(on_stub: GeminiStub) -> None:
    """The router readies the providers a run needs when it starts (`check_models`): the
    workers are forked then, so the first layer's calls do not queue behind the forks."""
    router = default_router({}, gemini_processes=2)
    try:
        router.check_models(["echo", FLASH])
        gemini = router.providers[1].get()
        assert len(gemini.worker_pids) == 2
        assert on_stub.calls()["log"] == []
        pids = gemini.worker_pids
        await router.generate(LlmRequest(model=FLASH, prompt="first"))
        assert gemini.worker_pids == pids  # the call went to them; none forked again
    finally:
        await router.aclose()


async def test_the_gemini_provider_is_made_once_inside_the_callers_loading_context(
    on_stub: GeminiStub,
) -> None:
    """The CLI loads google-genai with the collector off (`cli_loading.py`): the router
    creates the Gemini provider, once, inside the context it was given."""
    entered: list[str] = []

    @contextlib.contextmanager
    def loading() -> Iterator[None]:
        entered.append("in")
        yield
        entered.append("out")

    router = default_router({}, gemini_processes=2, loading=loading)
    try:
        router.check_models(["echo"])
        assert entered == []  # a run without Gemini loads nothing
        router.check_models([FLASH])
        router.check_models([FLASH])
        assert entered == ["in", "out"]
        assert len(router.providers[1].get().worker_pids) == 2
    finally:
        await router.aclose()


async def test_a_run_without_agents_starts_no_worker(
    on_stub: GeminiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemini is not even configured here: readying it (and its workers) would fail."""
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL")
    router = default_router({}, gemini_processes=2)
    router.check_models(["echo"])
    with pytest.raises(LlmNotConfigured):
        router.check_models([FLASH])


def test_agentgraph_run_with_its_default_workers_succeeds_and_prints_the_record(
    on_stub: GeminiStub, tmp_path: Path
) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(yaml.safe_dump(_graph(), sort_keys=False))
    db = str(tmp_path / "runs.db")
    done = subprocess.run(
        [sys.executable, "-m", "agentgraph", "run", str(graph), "--json", "--db", db],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded"
    assert {n["id"]: n["executions"] for n in record["nodes"]} == dict.fromkeys("absjz", 1)
