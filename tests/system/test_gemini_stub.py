"""The Gemini stub speaks the REST API that google-genai uses, deterministically.

Driven through the real SDK where the SDK can say it, and through plain HTTP where the
wire format itself is the point (SSE framing, Vertex paths, the inspection routes).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from google import genai
from google.genai import errors, types

from emulator.gemini_stub import GeminiStub

MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiStub]:
    with GeminiStub() as stub:
        yield stub


@pytest.fixture
def stub(server: GeminiStub) -> GeminiStub:
    server.reset()
    return server


@pytest.fixture
def client(stub: GeminiStub) -> genai.Client:
    options = types.HttpOptions(base_url=stub.url, retry_options=types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key="test-key", http_options=options)


def _generate(
    client: genai.Client, model: str, contents: Any, **config: Any
) -> types.GenerateContentResponse:
    return client.models.generate_content(
        model=model, contents=contents, config=types.GenerateContentConfig(**config)
    )


def _post(stub: GeminiStub, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{stub.url}{path}", json=body, timeout=10, **kw)


def _connection(stub: GeminiStub) -> http.client.HTTPConnection:
    """A connection of our own to the stub, to see what becomes of it between calls."""
    url = urlsplit(stub.url)
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


# ---- answers --------------------------------------------------------------------------


def test_answer_is_the_base_model_in_brackets_then_the_last_user_text(
    client: genai.Client,
) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text="first question")]),
        types.Content(role="model", parts=[types.Part(text="an answer")]),
        types.Content(role="user", parts=[types.Part(text="second question")]),
    ]
    response = _generate(client, MODEL, contents)
    assert response.text == "[gemini-2.5-flash] second question"
    assert response.model_version == MODEL
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


def test_usage_counts_words_of_system_instruction_and_every_turn(client: genai.Client) -> None:
    response = _generate(client, MODEL, "one two three", system_instruction="be very brief")
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == 6  # 3 system words + 3 prompt words
    assert usage.candidates_token_count == 4  # "[gemini-2.5-flash] one two three"
    assert usage.thoughts_token_count == 0
    assert usage.cached_content_token_count == 0
    assert usage.total_token_count == 10


def test_system_instruction_is_recorded_not_echoed(stub: GeminiStub, client: genai.Client) -> None:
    response = _generate(client, MODEL, "hi", system_instruction="You are terse.")
    assert response.text == "[gemini-2.5-flash] hi"
    assert stub.calls()["log"][0]["system"] == "You are terse."


def test_stop_sequence_cuts_the_answer_before_its_first_occurrence(client: genai.Client) -> None:
    response = _generate(client, MODEL, "alpha STOP beta", stop_sequences=["STOP", "beta"])
    assert response.text == "[gemini-2.5-flash] alpha "


def test_max_output_tokens_keeps_that_many_words_and_reports_max_tokens(
    client: genai.Client,
) -> None:
    response = _generate(client, MODEL, "a b c d e f", max_output_tokens=3)
    assert response.text == "[gemini-2.5-flash] a b"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 3


def test_thoughts_and_cached_faults_report_those_token_counts(client: genai.Client) -> None:
    response = _generate(client, f"{MODEL}~thoughts=7~cached=2", "w1 w2 w3")
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.thoughts_token_count, usage.cached_content_token_count) == (7, 2)
    assert usage.total_token_count == 3 + 4 + 7
    assert response.model_version == MODEL


# ---- JSON mode ------------------------------------------------------------------------


def test_json_mode_fills_a_gemini_openapi_schema_with_uppercase_types(stub: GeminiStub) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "title": {"type": "STRING"},
            "score": {"type": "INTEGER"},
            "ratio": {"type": "NUMBER"},
            "ok": {"type": "BOOLEAN"},
            "level": {"type": "STRING", "enum": ["low", "high"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        },
        "required": ["title"],
        "propertyOrdering": ["score", "title"],
    }
    body = {
        "contents": [_user("rate this")],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    answer = _post(stub, f"/v1beta/models/{MODEL}:generateContent", body).json()
    text = answer["candidates"][0]["content"]["parts"][0]["text"]
    value = json.loads(text)
    assert value == {
        "score": 1,
        "title": "[gemini-2.5-flash] rate this",
        "ratio": 1,
        "ok": True,
        "level": "low",
        "tags": ["[gemini-2.5-flash] rate this"],
    }
    assert list(value)[:2] == ["score", "title"]  # propertyOrdering is honoured


def test_json_mode_fills_a_json_schema_with_refs_anyof_const_bounds_and_min_items(
    client: genai.Client,
) -> None:
    schema = {
        "type": "object",
        "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2},
            "kind": {"const": "review"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
            "count": {"type": "integer", "minimum": 3},
            "maybe": {"type": ["null", "boolean"]},
        },
        "required": ["items", "extra"],
    }
    response = _generate(
        client,
        MODEL,
        "list",
        response_mime_type="application/json",
        response_json_schema=schema,
    )
    assert json.loads(response.text or "") == {
        "items": [{"id": 1}, {"id": 1}],
        "kind": "review",
        "note": "[gemi",
        "count": 3,
        "maybe": True,
        "extra": "[gemini-2.5-flash] list",
    }


def test_json_mode_without_a_schema_answers_an_object_with_the_text(client: genai.Client) -> None:
    response = _generate(client, MODEL, "free form", response_mime_type="application/json")
    assert json.loads(response.text or "") == {"text": "[gemini-2.5-flash] free form"}


def test_badjson_truncates_only_the_first_answered_json_call(client: genai.Client) -> None:
    model = f"{MODEL}~badjson=1"
    first = _generate(client, model, "data", response_mime_type="application/json")
    second = _generate(client, model, "data", response_mime_type="application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first.text or "")
    assert json.loads(second.text or "") == {"text": "[gemini-2.5-flash] data"}


# ---- streaming ------------------------------------------------------------------------


def test_stream_arrives_as_sse_chunks_and_only_the_last_has_finish_and_usage(
    stub: GeminiStub,
) -> None:
    body = {"contents": [_user("one two three four five")]}
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    response = _post(stub, path, body)
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\r\n\r\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames]
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert "".join(texts) == "[gemini-2.5-flash] one two three four five"
    assert len(chunks) == 3
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 6


def test_sdk_stream_concatenates_to_the_whole_answer(client: genai.Client) -> None:
    async def collect() -> list[str]:
        stream = await client.aio.models.generate_content_stream(
            model=f"{MODEL}~chunkdelay=5ms", contents="a b c d e f g"
        )
        return [chunk.text or "" async for chunk in stream]

    pieces = asyncio.run(collect())
    assert len(pieces) == 4
    assert "".join(pieces) == "[gemini-2.5-flash] a b c d e f g"


# ---- connections ----------------------------------------------------------------------


def test_answers_keep_the_connection_open_for_the_next_call(stub: GeminiStub) -> None:
    """As Gemini's front ends do: a client's pooled connection carries call after call
    (a connection per call would add a connect to every call the benchmarks time)."""
    body = json.dumps({"contents": [_user("again")]})
    path = f"/v1beta/models/{MODEL}:generateContent"
    connection = _connection(stub)
    try:
        sockets = []
        for _ in range(3):
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["candidates"]
            assert not response.will_close
            sockets.append(connection.sock)
        assert sockets[0] is not None and sockets == [sockets[0]] * 3
    finally:
        connection.close()


def test_a_stream_ends_with_its_connection(stub: GeminiStub) -> None:
    """An event stream has no length: its end is the connection's close."""
    connection = _connection(stub)
    try:
        connection.request(
            "POST",
            f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            json.dumps({"contents": [_user("a b c")]}),
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.will_close
        assert response.read().startswith(b"data: ")
    finally:
        connection.close()


# ---- faults ---------------------------------------------------------------------------


def test_fail_2x429_answers_resource_exhausted_twice_with_retry_info_then_succeeds(
    client: genai.Client,
) -> None:
    model = f"{MODEL}~fail=2x429"
    for _ in range(2):
        with pytest.raises(errors.ClientError) as caught:
            _generate(client, model, "quota")
        assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
        details = caught.value.details["error"]["details"]
        retry_info = [d for d in details if d["@type"].endswith("google.rpc.RetryInfo")]
        assert retry_info == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        ]
    assert _generate(client, model, "quota").text == "[gemini-2.5-flash] quota"


def test_fail_counters_are_per_prompt_so_other_prompts_are_unaffected(
    client: genai.Client,
) -> None:
    model = f"{MODEL}~fail=1x503"
    with pytest.raises(errors.ServerError):
        _generate(client, model, "p1")
    with pytest.raises(errors.ServerError):
        _generate(client, model, "p2")
    assert _generate(client, model, "p1").text == "[gemini-2.5-flash] p1"


def test_fail_items_apply_in_order_and_retrydelay_sets_the_delay(client: genai.Client) -> None:
    model = f"{MODEL}~fail=1x429~fail=1x503~retrydelay=2.5s"
    codes = []
    for _ in range(2):
        with pytest.raises(errors.APIError) as caught:
            _generate(client, model, "seq")
        codes.append((caught.value.code, caught.value.status))
        retry = caught.value.details["error"]["details"][-1]
        assert retry["retryDelay"] == "2.5s"
    assert codes == [(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")]
    assert _generate(client, model, "seq").text == "[gemini-2.5-flash] seq"


@pytest.mark.parametrize(
    ("code", "status"), [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"), (404, "NOT_FOUND")]
)
def test_status_fault_fails_every_call_with_googles_error_body(
    client: genai.Client, code: int, status: str
) -> None:
    for _ in range(2):
        with pytest.raises(errors.ClientError) as caught:
            _generate(client, f"{MODEL}~status={code}", "x")
        assert (caught.value.code, caught.value.status) == (code, status)
        assert "injected fault" in (caught.value.message or "")


def test_block_answers_prompt_feedback_safety_without_candidates(client: genai.Client) -> None:
    response = _generate(client, f"{MODEL}~block", "something bad")
    assert response.candidates is None
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_finish_safety_answers_a_candidate_without_text(client: genai.Client) -> None:
    response = _generate(client, f"{MODEL}~finish=SAFETY", "x")
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert response.text is None


def test_latency_fault_and_server_latency_delay_the_answer(client: genai.Client) -> None:
    started = time.monotonic()
    _generate(client, f"{MODEL}~latency=150ms", "slow")
    assert time.monotonic() - started >= 0.15
    with GeminiStub(latency_s=0.1) as slow:
        started = time.monotonic()
        response = _post(slow, f"/v1beta/models/{MODEL}:generateContent", {"contents": []})
        assert response.status_code == 200
        assert time.monotonic() - started >= 0.1


def test_faults_in_the_x_stub_faults_header_apply_like_a_suffix(stub: GeminiStub) -> None:
    path = f"/v1beta/models/{MODEL}:generateContent"
    body = {"contents": [_user("hdr")]}
    headers = {"x-stub-faults": "fail=1x500"}
    first = _post(stub, path, body, headers=headers)
    second = _post(stub, path, body, headers=headers)
    assert first.status_code == 500
    assert first.json()["error"]["status"] == "INTERNAL"
    assert second.status_code == 200


def test_unknown_fault_answers_400_listing_the_grammar(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        _generate(client, f"{MODEL}~explode=1", "x")
    assert caught.value.code == 400
    assert "unknown stub fault 'explode=1'" in (caught.value.message or "")
    assert "fail=NxCODE" in (caught.value.message or "")


# ---- routes and inspection ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/{m}:generateContent",
        "/v1beta/models/{m}:generateContent",
        "/v1beta1/projects/p/locations/us-central1/publishers/google/models/{m}:generateContent",
        "/v1beta1/publishers/google/models/{m}:generateContent",
    ],
)
def test_gemini_and_vertex_paths_are_answered(stub: GeminiStub, path: str) -> None:
    response = _post(stub, path.format(m=MODEL), {"contents": [_user("route")]})
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == (
        "[gemini-2.5-flash] route"
    )


def test_unknown_route_answers_404_naming_the_expected_routes(stub: GeminiStub) -> None:
    response = _post(stub, "/v1beta/models/x:embedContent", {})
    assert response.status_code == 404
    assert ":generateContent" in response.json()["error"]["message"]


def test_calls_are_counted_per_model_and_prompt_and_reset_over_http(
    stub: GeminiStub, client: genai.Client
) -> None:
    _generate(client, MODEL, "count me")
    _generate(client, MODEL, "count me")
    _generate(client, "gemini-2.5-pro", "count me")
    calls = httpx.get(f"{stub.url}/stub/calls").json()
    assert calls["total"] == 3
    assert {(c["model"], c["prompt"], c["count"]) for c in calls["counts"]} == {
        (MODEL, "count me", 2),
        ("gemini-2.5-pro", "count me", 1),
    }
    assert stub.count(model=MODEL, prompt="count me") == 2
    assert httpx.post(f"{stub.url}/stub/reset").json() == {"reset": True}
    assert stub.calls()["total"] == 0


def test_module_runs_as_a_foreground_server() -> None:
    command = [sys.executable, "-m", "emulator.gemini_stub", "--port", "0", "--latency-ms", "1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(f"{url}/stub/calls").json()["total"] == 0
        finally:
            process.terminate()
            process.wait(timeout=10)
