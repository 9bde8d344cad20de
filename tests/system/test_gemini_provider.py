"""GeminiProvider on the real google-genai SDK, against the local Gemini stub.

Faults are asked for through the stub's model suffix (`gemini-2.5-flash~fail=2x429`);
see emulator/gemini_stub.py for the grammar and the deterministic answers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from google import genai

from agentgraph.core.errors import LlmError
from agentgraph.core.llm_port import LlmProvider, LlmRequest, LlmResponse
from agentgraph.core.records import Usage
from agentgraph.llm.gemini import GeminiConfigError, GeminiProvider
from agentgraph.llm.pricing import cost_usd
from emulator.gemini_stub import GeminiStub
from emulator.processes import free_port

FLASH = "gemini-2.5-flash"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiStub]:
    with GeminiStub() as stub:
        yield stub


@pytest.fixture
def stub(server: GeminiStub) -> GeminiStub:
    server.reset()
    return server


@pytest.fixture(params=[0, 2], ids=["in-process", "worker-processes"])
def provider(stub: GeminiStub, request: pytest.FixtureRequest) -> Iterator[GeminiProvider]:
    """Every answer and failure is the same whether the SDK runs in this process or in
    forked workers (llm/sdk_pool.py; streamed calls stay here either way)."""
    env = {"GOOGLE_GEMINI_BASE_URL": stub.url, "AGENTGRAPH_GEMINI_PROCESSES": str(request.param)}
    made = GeminiProvider.from_env(env)
    yield made
    run(made.aclose())


def generate(provider: GeminiProvider, **fields: Any) -> LlmResponse:
    fields.setdefault("model", FLASH)
    fields.setdefault("prompt", "hello there")
    return run(provider.generate(LlmRequest(**fields)))


def failure(provider: GeminiProvider, **fields: Any) -> LlmError:
    with pytest.raises(LlmError) as caught:
        generate(provider, **fields)
    return caught.value


# ---- answers --------------------------------------------------------------------------


def test_provider_satisfies_the_llm_port_and_supports_gemini_names_only(
    provider: GeminiProvider,
) -> None:
    assert isinstance(provider, LlmProvider)
    assert provider.supports("gemini-2.5-flash")
    assert provider.supports("gemini-2.5-pro~fail=2x429")
    assert provider.supports("models/gemini-2.0-flash")
    assert not provider.supports("echo")
    assert not provider.supports("gpt-4o")


def test_plain_text_answer_with_usage_and_cost(provider: GeminiProvider) -> None:
    response = generate(provider, prompt="say hi")
    assert response.text == "[gemini-2.5-flash] say hi"
    assert response.model == FLASH
    assert response.data is None
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.calls) == (2, 3, 1)
    assert (usage.cached_tokens, usage.thinking_tokens) == (0, 0)
    assert usage.cost_usd == pytest.approx((2 * 0.30 + 3 * 2.50) / 1_000_000)


def test_thinking_tokens_are_billed_as_output_and_cached_tokens_at_the_cached_rate(
    provider: GeminiProvider,
) -> None:
    response = generate(provider, model="gemini-2.5-pro~thoughts=10~cached=2", prompt="a b c d")
    usage = response.usage
    assert (usage.input_tokens, usage.cached_tokens) == (4, 2)
    assert (usage.output_tokens, usage.thinking_tokens) == (5, 10)
    expected = (2 * 1.25 + 2 * 0.125 + (5 + 10) * 10.0) / 1_000_000
    assert usage.cost_usd == pytest.approx(expected)
    assert response.model == "gemini-2.5-pro"


def test_system_instruction_is_sent_and_stop_sequences_cut_the_answer(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    response = generate(
        provider,
        prompt="first part END second",
        system="Answer in French.",
        stop_sequences=("END",),
    )
    assert response.text == "[gemini-2.5-flash] first part "
    call = stub.calls()["log"][0]
    assert call["system"] == "Answer in French."
    assert call["generation_config"]["stopSequences"] == ["END"]


def test_sampling_limits_and_safety_settings_reach_the_api(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    safety = {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
    response = generate(
        provider,
        prompt="one two three four",
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=3,
        safety_settings=(safety,),
    )
    assert response.text == "[gemini-2.5-flash] one two"  # MAX_TOKENS is an answer, not an error
    call = stub.calls()["log"][0]
    assert call["generation_config"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 3}
    assert call["safety_settings"] == [safety]


def test_streaming_reports_growing_partials_and_the_final_text_is_the_last_partial(
    provider: GeminiProvider,
) -> None:
    partials: list[str] = []

    async def on_partial(text: str) -> None:
        partials.append(text)

    request = LlmRequest(model=f"{FLASH}~chunkdelay=5ms", prompt="a b c d e f g", stream=True)
    response = run(provider.generate(request, on_partial))
    assert response.text == "[gemini-2.5-flash] a b c d e f g"
    assert len(partials) == 4
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(partials))
    assert partials[-1] == response.text
    assert response.usage.output_tokens == 8


def test_errors_raised_by_on_partial_reach_the_caller_unchanged(provider: GeminiProvider) -> None:
    async def on_partial(text: str) -> None:
        raise KeyError("store is gone")

    request = LlmRequest(model=FLASH, prompt="x y", stream=True)
    with pytest.raises(KeyError, match="store is gone"):
        run(provider.generate(request, on_partial))


# ---- JSON -----------------------------------------------------------------------------


def test_json_output_with_schema_is_parsed_into_data(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    schema = {
        "type": "object",
        "properties": {"verdict": {"enum": ["ok", "bad"]}, "issues": {"type": "integer"}},
        "required": ["verdict", "issues"],
    }
    response = generate(provider, prompt="review", output="json", output_schema=schema)
    assert response.data == {"verdict": "ok", "issues": 1}
    config = stub.calls()["log"][0]["generation_config"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == schema


def test_json_output_without_schema_is_any_json_value(provider: GeminiProvider) -> None:
    response = generate(provider, prompt="anything", output="json")
    assert response.data == {"text": "[gemini-2.5-flash] anything"}


def test_bad_json_is_repaired_once_with_the_bad_answer_and_the_problem_in_context(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    response = generate(provider, model=f"{FLASH}~badjson=1", prompt="facts", output="json")
    assert response.data["text"].startswith("[gemini-2.5-flash] Your previous answer is not valid")
    assert response.usage.calls == 2
    log = stub.calls()["log"]
    assert [c["prompt"] for c in log] == ["facts", "facts"]
    assert "is not valid JSON" in log[1]["last_user_text"]


def test_json_that_parses_but_breaks_output_schema_gets_one_repair_then_fails(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    # The stub ignores `pattern`, so its answer parses but never validates.
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "required": ["code"],
    }
    error = failure(provider, prompt="code", output="json", output_schema=schema)
    assert (error.type, error.retryable) == ("InvalidJson", False)
    assert "does not match output_schema" in error.message
    assert "does not match '^[A-Z]{3}$'" in error.message
    assert "does not match output_schema" in stub.calls()["log"][1]["last_user_text"]


def test_bad_json_twice_is_a_permanent_invalid_json_error_quoting_the_answer(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    error = failure(provider, model=f"{FLASH}~badjson=2", prompt="facts", output="json")
    assert error.type == "InvalidJson"
    assert error.retryable is False
    assert "after one repair attempt" in error.message
    assert 'The answer began: \'{"text": "[gemini-2.5-flash] Your' in error.message
    assert stub.count() == 2


def test_invalid_output_schema_is_permanent_before_any_call(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    error = failure(provider, output="json", output_schema={"type": "banana"})
    assert (error.type, error.retryable) == ("InvalidSchema", False)
    assert stub.count() == 0


# ---- errors ---------------------------------------------------------------------------


def test_429_is_retryable_with_retry_after_and_the_next_call_succeeds(
    stub: GeminiStub, provider: GeminiProvider
) -> None:
    model = f"{FLASH}~fail=1x429~retrydelay=2s"
    error = failure(provider, model=model, prompt="busy")
    assert (error.type, error.retryable, error.http_status) == ("RESOURCE_EXHAUSTED", True, 429)
    assert error.retry_after_s == 2.0
    assert generate(provider, model=model, prompt="busy").text == "[gemini-2.5-flash] busy"


def test_the_sdk_does_not_retry_on_its_own(stub: GeminiStub, provider: GeminiProvider) -> None:
    failure(provider, model=f"{FLASH}~fail=3x503", prompt="once")
    assert stub.count() == 1


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_server_errors_are_retryable(provider: GeminiProvider, code: int) -> None:
    error = failure(provider, model=f"{FLASH}~status={code}")
    assert (error.retryable, error.http_status) == (True, code)


def test_503_while_streaming_is_retryable(provider: GeminiProvider) -> None:
    error = failure(provider, model=f"{FLASH}~status=503", stream=True)
    assert (error.type, error.retryable, error.http_status) == ("UNAVAILABLE", True, 503)
    assert error.retry_after_s is None


@pytest.mark.parametrize(
    ("code", "type_", "hint"),
    [
        (400, "INVALID_ARGUMENT", "invalid"),
        (401, "UNAUTHENTICATED", "GEMINI_API_KEY"),
        (403, "PERMISSION_DENIED", "GEMINI_API_KEY"),
        (404, "NOT_FOUND", "check the model name"),
    ],
)
def test_client_errors_are_permanent_and_say_what_to_check(
    provider: GeminiProvider, code: int, type_: str, hint: str
) -> None:
    error = failure(provider, model=f"{FLASH}~status={code}")
    assert (error.type, error.retryable, error.http_status) == (type_, False, code)
    assert hint in error.message


def test_blocked_prompt_is_a_permanent_safety_block(provider: GeminiProvider) -> None:
    error = failure(provider, model=f"{FLASH}~block")
    assert (error.type, error.retryable) == ("SafetyBlock", False)
    assert "blocked for SAFETY" in error.message


@pytest.mark.parametrize("stream", [False, True])
def test_answer_stopped_for_safety_is_a_permanent_safety_block(
    provider: GeminiProvider, stream: bool
) -> None:
    error = failure(provider, model=f"{FLASH}~finish=SAFETY", stream=stream)
    assert (error.type, error.retryable) == ("SafetyBlock", False)


def test_answer_slower_than_timeout_is_a_retryable_timeout(provider: GeminiProvider) -> None:
    error = failure(provider, model=f"{FLASH}~latency=2s", timeout_s=0.3)
    assert (error.type, error.retryable) == ("Timeout", True)
    assert "0.3s" in error.message


def test_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    port = free_port()  # free a moment ago, and handed to no server of this session
    provider = GeminiProvider.from_env({"GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{port}"})
    error = failure(provider)
    assert (error.type, error.retryable) == ("ConnectionError", True)


# ---- configuration --------------------------------------------------------------------


def test_missing_api_key_names_the_variables_to_set() -> None:
    with pytest.raises(GeminiConfigError) as caught:
        GeminiProvider.from_env({})
    message = str(caught.value)
    for variable in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        assert variable in message


def test_vertex_without_project_and_location_names_them() -> None:
    with pytest.raises(GeminiConfigError, match="GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION"):
        GeminiProvider.from_env({"GOOGLE_GENAI_USE_VERTEXAI": "true"})


def test_remote_base_url_still_needs_a_key() -> None:
    with pytest.raises(GeminiConfigError, match="GEMINI_API_KEY"):
        GeminiProvider.from_env({"GOOGLE_GEMINI_BASE_URL": "https://gemini.example.com"})


def test_api_key_from_the_environment_is_enough(stub: GeminiStub) -> None:
    env = {"GEMINI_API_KEY": "k", "GOOGLE_GEMINI_BASE_URL": stub.url}
    provider = GeminiProvider.from_env(env)
    assert generate(provider, prompt="keyed").text == "[gemini-2.5-flash] keyed"


def test_vertex_express_mode_reaches_the_stub_on_the_publisher_path(stub: GeminiStub) -> None:
    env = {
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "GOOGLE_CLOUD_PROJECT": "demo-project",
        "GOOGLE_CLOUD_LOCATION": "us-central1",
        "GOOGLE_VERTEX_BASE_URL": stub.url,
    }
    provider = GeminiProvider.from_env(env)
    assert generate(provider, prompt="vertex").text == "[gemini-2.5-flash] vertex"
    assert stub.calls()["log"][0]["api_version"] == "v1beta1"


def test_sdk_itself_honours_google_gemini_base_url(
    stub: GeminiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", stub.url)
    client = genai.Client(api_key="k")
    response = client.models.generate_content(model=FLASH, contents="plain sdk")
    assert response.text == "[gemini-2.5-flash] plain sdk"


def test_from_env_reads_the_process_environment(
    stub: GeminiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", stub.url)
    provider = GeminiProvider.from_env()
    assert generate(provider, prompt="env").usage == Usage(
        input_tokens=1,
        output_tokens=2,
        calls=1,
        cost_usd=cost_usd(FLASH, Usage(input_tokens=1, output_tokens=2)),
    )


# ---- worker processes -----------------------------------------------------------------


def test_worker_processes_start_on_the_first_plain_call_not_for_streamed_ones(
    stub: GeminiStub,
) -> None:
    provider = GeminiProvider.from_env(
        {"GOOGLE_GEMINI_BASE_URL": stub.url, "AGENTGRAPH_GEMINI_PROCESSES": "2"}
    )

    async def calls() -> None:
        partials: list[str] = []

        async def on_partial(text: str) -> None:
            partials.append(text)

        streamed = await provider.generate(
            LlmRequest(model=FLASH, prompt="stream me", stream=True), on_partial
        )
        assert streamed.text == partials[-1]
        assert provider.worker_pids == []  # the stream stayed here
        answers = await asyncio.gather(
            *(provider.generate(LlmRequest(model=FLASH, prompt=f"call {n}")) for n in range(6))
        )
        assert [a.text for a in answers] == [f"[{FLASH}] call {n}" for n in range(6)]
        assert len(provider.worker_pids) == 2
        assert os.getpid() not in provider.worker_pids
        await provider.aclose()

    run(calls())


def test_a_bad_number_of_worker_processes_is_a_configuration_error(stub: GeminiStub) -> None:
    with pytest.raises(GeminiConfigError, match="AGENTGRAPH_GEMINI_PROCESSES"):
        GeminiProvider.from_env(
            {"GOOGLE_GEMINI_BASE_URL": stub.url, "AGENTGRAPH_GEMINI_PROCESSES": "two"}
        )
