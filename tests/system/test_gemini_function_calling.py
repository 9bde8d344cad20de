"""Function calling through the real google-genai SDK against the Gemini stub: the
provider declares the node's tools, keeps the SDK from calling anything itself, returns
the model's calls, and sends the results (and the calls' thought signatures) back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agentgraph.core.llm_port import (
    FunctionCall,
    FunctionResult,
    FunctionSpec,
    LlmRequest,
    LlmResponse,
    Turn,
)
from agentgraph.llm import gemini, gemini_functions
from agentgraph.llm.gemini import GeminiProvider
from emulator.gemini_stub import GeminiStub

FLASH = "gemini-2.5-flash"
COUNT = FunctionSpec(
    "word_count",
    "Count the words of a text.",
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)
PROMPT = 'How many words?\n@call 1 word_count {"text": "a b c"}\n@call 1 word_count {"text": "d"}'


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiStub]:
    with GeminiStub() as stub:
        yield stub


@pytest.fixture
def stub(server: GeminiStub) -> GeminiStub:
    server.reset()
    return server


def generate(stub: GeminiStub, **fields: Any) -> LlmResponse:
    provider = GeminiProvider.from_env({"GOOGLE_GEMINI_BASE_URL": stub.url})
    request = LlmRequest(**{"model": FLASH, "prompt": PROMPT, "functions": (COUNT,), **fields})
    return asyncio.run(provider.generate(request))


@pytest.mark.parametrize("stream", [False, True])
def test_the_models_calls_come_back_in_order_with_their_signatures(
    stub: GeminiStub, stream: bool
) -> None:
    response = generate(stub, stream=stream)
    assert [(c.name, c.args) for c in response.calls] == [
        ("word_count", {"text": "a b c"}),
        ("word_count", {"text": "d"}),
    ]
    assert all(c.signature for c in response.calls)
    assert response.text == "" and response.usage.calls == 1
    (entry,) = stub.calls()["log"]
    assert entry["tools"] == ["word_count"] and entry["model_turns"] == 0


def test_results_go_back_as_function_responses_with_the_calls_signatures(
    stub: GeminiStub,
) -> None:
    calls = generate(stub).calls
    turns = (
        Turn("model", calls=calls),
        Turn(
            "user",
            results=(
                FunctionResult("word_count", {"result": 3}),
                FunctionResult("word_count", {"error": "ValueError: no"}),
            ),
        ),
    )
    answer = generate(stub, turns=turns)
    assert answer.calls == ()
    assert answer.text == (
        f'[{FLASH}] word_count: {{"result": 3}}; word_count: {{"error": "ValueError: no"}}'
    )
    last = stub.calls()["log"][-1]
    assert last["model_turns"] == 1
    assert last["signatures"] == [calls[0].signature, calls[1].signature]


def test_without_tools_the_prompts_call_lines_are_just_text(stub: GeminiStub) -> None:
    response = generate(stub, functions=())
    assert response.calls == () and response.text == f"[{FLASH}] {PROMPT}"


def test_the_sdks_automatic_function_calling_is_off() -> None:
    config = gemini._config(LlmRequest(model=FLASH, prompt="p", functions=(COUNT,)))
    assert config is not None and config.automatic_function_calling is not None
    assert config.automatic_function_calling.disable is True
    assert config.tools is not None
    (declaration,) = config.tools[0].function_declarations or []
    assert declaration.name == "word_count"
    assert declaration.parameters_json_schema == COUNT.parameters


def test_a_call_without_a_signature_is_sent_back_without_one() -> None:
    content = gemini_functions.content(Turn("model", "thinking", (FunctionCall("f", {"x": 1}),)))
    assert content.role == "model" and content.parts is not None
    assert content.parts[0].text == "thinking"
    assert content.parts[1].function_call is not None
    assert content.parts[1].thought_signature is None
