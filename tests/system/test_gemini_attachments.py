"""Multimodal input: an agent's `attach` reaches Gemini as parts, through the real
google-genai SDK and real HTTP, and the local stub says what arrived."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentgraph.backends.local import LocalRuntime, SqliteStore
from agentgraph.core.llm_port import Attachment, LlmRequest
from agentgraph.core.status import RunStatus
from agentgraph.llm import default_router
from agentgraph.llm.gemini import GeminiProvider
from agentgraph.tools import default_registry
from emulator.gemini_stub import GeminiStub

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


@pytest.fixture(scope="module")
def stub() -> Iterator[GeminiStub]:
    with GeminiStub() as server:
        yield server


@pytest.fixture
def on_stub(stub: GeminiStub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> GeminiStub:
    stub.reset()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", stub.url)
    monkeypatch.setenv("AGENTGRAPH_ATTACH_ROOT", str(tmp_path))
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    return stub


@pytest.fixture
async def runtime(on_stub: GeminiStub) -> AsyncIterator[LocalRuntime]:
    store = SqliteStore(":memory:")
    async with LocalRuntime(store, default_router({}), default_registry, workers=2) as rt:
        yield rt
    store.close()


async def test_a_local_file_a_gs_uri_and_inline_base64_arrive_as_three_parts(
    runtime: LocalRuntime, on_stub: GeminiStub, tmp_path: Path
) -> None:
    (tmp_path / "cat.png").write_bytes(PNG)
    run = await runtime.run(
        {
            "name": "look",
            "nodes": [
                {
                    "id": "look",
                    "model": "gemini-2.5-flash",
                    "prompt": "Compare these.",
                    "attach": ["{{ input.image }}", "{{ input.video }}", "{{ input.inline }}"],
                }
            ],
        },
        {
            "image": "cat.png",
            "video": "gs://bucket/clips/dog.mp4",
            "inline": {"mime_type": "application/pdf", "data": base64.b64encode(b"%PDF").decode()},
        },
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs == {
        "look": "[gemini-2.5-flash] Compare these. [3 attached: image/png (48 bytes), "
        "video/mp4 (gs://bucket/clips/dog.mp4), application/pdf (4 bytes)]"
    }
    (call,) = on_stub.calls()["log"]
    assert call["attachments"] == [
        {"mime_type": "image/png", "bytes": len(PNG)},
        {"mime_type": "video/mp4", "uri": "gs://bucket/clips/dog.mp4"},
        {"mime_type": "application/pdf", "bytes": 4},
    ]
    assert call["prompt"] == "Compare these."


async def test_a_missing_file_fails_the_node_naming_the_entry_without_calling_the_model(
    runtime: LocalRuntime, on_stub: GeminiStub
) -> None:
    run = await runtime.run(
        {
            "name": "look",
            "nodes": [
                {
                    "id": "look",
                    "model": "gemini-2.5-flash",
                    "prompt": "What is this?",
                    "attach": ["{{ input.image }}"],
                }
            ],
        },
        {"image": "nowhere.png"},
    )
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error["type"] == "AttachmentInvalid"
    assert run.error["message"] == "attach[0]: no such file 'nowhere.png'"
    assert on_stub.calls()["total"] == 0


async def test_the_provider_sends_attachments_after_the_prompt_when_streaming(
    on_stub: GeminiStub,
) -> None:
    provider = GeminiProvider.from_env()
    try:
        response = await provider.generate(
            LlmRequest(
                model="gemini-2.5-flash",
                prompt="Describe.",
                stream=True,
                attachments=(Attachment("image/png", data=PNG),),
            )
        )
    finally:
        await provider.aclose()
    assert response.text == "[gemini-2.5-flash] Describe. [1 attached: image/png (48 bytes)]"
    assert on_stub.calls()["log"][0]["stream"] is True
