"""Contract: agent profiles with tools, agents as tools (`delegates`), and `memory: run`.
Same tests, every backend; the model is the Gemini stub scripted by `@call` lines
(emulator/gemini_answers.py), which counts and logs the calls it answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentgraph.core.status import NodeStatus, RunStatus
from emulator.gemini_stub import GeminiStub

from .conftest import Harness
from .test_agent_tools import MODEL, call


@pytest.fixture(scope="module")
def stub() -> Iterator[GeminiStub]:
    with GeminiStub() as server:
        yield server


@pytest.fixture(autouse=True)
def on_stub(stub: GeminiStub, monkeypatch: pytest.MonkeyPatch) -> GeminiStub:
    """This process's Gemini client talks to the (reset) stub."""
    stub.reset()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", stub.url)
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    return stub


def profiled(prompt: list[str], agents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    node = {"id": "lead", "model": MODEL, "prompt": "\n".join(prompt), **extra}
    return {"name": "delegates", "agents": agents, "nodes": [node]}


async def test_a_node_using_a_profile_gets_the_profiles_tools(
    harness: Harness, stub: GeminiStub
) -> None:
    prompt = ["Count.", call(1, "const", value=7, key="c")]
    document = profiled(prompt, {"counter": {"model": MODEL, "tools": ["const"], "max_turns": 2}})
    document["nodes"][0]["agent"] = "counter"
    run = await harness.run(document)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"lead": f'[{MODEL}] const: {{"result": 7}}'}
    assert harness.calls["c"] == 1
    recorded = await harness.store.list_steps(run.run_id, "lead")
    assert [(s.kind, s.name) for s in recorded] == [
        ("model", MODEL),
        ("tool", "const"),
        ("model", MODEL),
    ]
    node = (await harness.nodes(run.run_id))["lead"]
    assert node.status == NodeStatus.SUCCEEDED
