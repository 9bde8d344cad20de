"""The Gemini stub (emulator/gemini_stub.py) for tests that call Gemini through the SDK:
`stub`, one server per test module, and `on_stub`, which points this process's Gemini
client at it, reset, with no real key or Vertex setting that could send a call elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.gemini_stub import GeminiStub

# Settings of the developer's environment a test must not inherit.
_CLEARED = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "AGENTGRAPH_GEMINI_PROCESSES",
    "AGENTGRAPH_TRACE",
)


@pytest.fixture(scope="module")
def stub() -> Iterator[GeminiStub]:
    with GeminiStub() as server:
        yield server


@pytest.fixture
def on_stub(stub: GeminiStub, monkeypatch: pytest.MonkeyPatch) -> GeminiStub:
    stub.reset()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", stub.url)
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    return stub
