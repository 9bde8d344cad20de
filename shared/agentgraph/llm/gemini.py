"""Gemini behind the `LlmProvider` port, on google-genai's async client.

What the engine can rely on:
- One `generate` is one model call, plus at most one JSON repair call. The SDK's own
  retries are switched off (`HttpRetryOptions(attempts=1)`, on the client and on every
  request), so every retry is the engine's, visible and counted.
- Every failure leaves as an `LlmError`, classified once here: retryable for 408, 429,
  5xx, timeouts and connection errors (with `retry_after_s` from google.rpc.RetryInfo);
  permanent for other 4xx, safety blocks and JSON that stays invalid after one repair.
- Configuration comes from the environment only (`GeminiProvider.from_env`).

(Over 500 lines: the request, the response, the failures and the JSON repair of one call
are read together; the function-calling conversions and the worker processes live in
gemini_functions.py and gemini_workers.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from google import genai
from google.genai import errors, types

from agentgraph.core.errors import LlmError
from agentgraph.core.llm_port import FunctionCall, LlmRequest, LlmResponse, OnPartial
from agentgraph.core.names import ENV_GEMINI_API_KEY, ENV_GEMINI_BASE_URL, ENV_PROJECT
from agentgraph.core.records import Usage
from agentgraph.core.schemas import errors as schema_errors
from agentgraph.core.schemas import schema_problems
from agentgraph.llm import gemini_functions as functions
from agentgraph.llm import gemini_workers as workers
from agentgraph.llm.pricing import canonical_model, cost_usd
from agentgraph.llm.sdk_loop import SdkLoop
from agentgraph.llm.sdk_pool import PoolUnavailable, SdkPool, can_fork
from agentgraph.observability import tracing

ENV_GOOGLE_API_KEY = "GOOGLE_API_KEY"
ENV_USE_VERTEX = "GOOGLE_GENAI_USE_VERTEXAI"
ENV_LOCATION = "GOOGLE_CLOUD_LOCATION"
ENV_VERTEX_BASE_URL = "GOOGLE_VERTEX_BASE_URL"

_STUB_API_KEY = "stub-api-key"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
_NO_SDK_RETRIES = types.HttpRetryOptions(attempts=1)
_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_SAFETY_FINISH = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})
_HAS_JSON_SCHEMA_FIELD = "response_json_schema" in types.GenerateContentConfig.model_fields
_QUOTE_CHARS = 200
_Content = types.Content | types.ContentDict  # a turn as the SDK takes it
_HINTS = {
    400: "the request was rejected as invalid; check the node's parameters and schema",
    401: f"check {ENV_GEMINI_API_KEY} (or Vertex credentials)",
    403: f"check that {ENV_GEMINI_API_KEY} or the service account may call this model",
    404: "check the model name (e.g. gemini-2.5-flash)",
}


class GeminiConfigError(ValueError):
    """The environment does not say how to reach Gemini."""


class _CallbackError(Exception):
    """Carries an exception of the caller's on_partial past our classification."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def _optional_classes(*specs: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """Exception classes of optional transports (httpx2, aiohttp) that may be missing."""
    found: list[type[BaseException]] = []
    for module_name, attr in specs:
        try:
            found.append(getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    *_optional_classes(("httpx", "TimeoutException"), ("httpx2", "TimeoutException")),
)
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    *_optional_classes(
        ("httpx", "TransportError"),
        ("httpx2", "TransportError"),
        ("aiohttp", "ClientError"),
        ("google.auth.exceptions", "TransportError"),
    ),
)
_CREDENTIAL_ERRORS = _optional_classes(("google.auth.exceptions", "DefaultCredentialsError"))


class GeminiProvider:
    """Answers for `gemini-*` models (a `~...` stub fault suffix is allowed)."""

    def __init__(self, client: genai.Client, *, own_loop: bool = False, processes: int = 0) -> None:
        """With `own_loop`, every call of the SDK (its request building, HTTP and parsing)
        runs on a thread and event loop of the provider's own (`sdk_loop.py`: about 2 ms
        of CPU per call kept out of the engine's turns); the client is then used only
        there. With `processes`, calls that neither stream nor are traced run in that
        many worker processes, forked by `start_workers` or on the first call
        (`sdk_pool.py`: the SDK's CPU on other cores); the rest, and every call once a
        worker died, run in-process."""
        self._client = client
        self._sdk_loop = SdkLoop("agentgraph-gemini") if own_loop else None
        self._pool = (
            SdkPool(processes, self._worker_call, workers.warm_sdk)
            if processes and can_fork()
            else None
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, processes: int = 0) -> GeminiProvider:
        """Gemini Developer API with GEMINI_API_KEY (or GOOGLE_API_KEY); Vertex AI with
        GOOGLE_GENAI_USE_VERTEXAI=true plus GOOGLE_CLOUD_PROJECT and
        GOOGLE_CLOUD_LOCATION (or an API key, Vertex express mode). GOOGLE_GEMINI_BASE_URL
        (GOOGLE_VERTEX_BASE_URL) redirects calls; when it points at a local stub no key
        is needed. Worker processes: AGENTGRAPH_GEMINI_PROCESSES, else `processes`."""
        env = os.environ if env is None else env
        try:
            processes = workers.processes(env, processes)
        except ValueError as exc:
            raise GeminiConfigError(str(exc)) from exc
        vertex = env.get(ENV_USE_VERTEX, "").strip().lower() in ("1", "true")
        api_key = env.get(ENV_GOOGLE_API_KEY) or env.get(ENV_GEMINI_API_KEY) or None
        base_url = env.get(ENV_VERTEX_BASE_URL if vertex else ENV_GEMINI_BASE_URL) or None
        http_options = types.HttpOptions(base_url=base_url, retry_options=_NO_SDK_RETRIES)
        stub = base_url is not None and _is_stub(base_url)
        if api_key is None and stub:
            api_key = _STUB_API_KEY
        if vertex:
            project, location = env.get(ENV_PROJECT), env.get(ENV_LOCATION)
            if project and location and not stub:  # a stub takes no Google credentials
                client = genai.Client(
                    vertexai=True, project=project, location=location, http_options=http_options
                )
            elif api_key:
                client = genai.Client(vertexai=True, api_key=api_key, http_options=http_options)
            else:
                raise GeminiConfigError(
                    f"{ENV_USE_VERTEX}=true needs {ENV_PROJECT} and {ENV_LOCATION} (found "
                    f"{ENV_PROJECT}={project!r}, {ENV_LOCATION}={location!r}), or an API key "
                    f"in {ENV_GEMINI_API_KEY} for Vertex express mode."
                )
            return cls(client, own_loop=True, processes=processes)
        if api_key is None:
            raise GeminiConfigError(
                f"No Gemini API key: set {ENV_GEMINI_API_KEY} (or {ENV_GOOGLE_API_KEY}) for the "
                f"Gemini Developer API, or {ENV_USE_VERTEX}=true with {ENV_PROJECT} and "
                f"{ENV_LOCATION} for Vertex AI, or point {ENV_GEMINI_BASE_URL} at a local "
                "stub (python -m emulator.gemini_stub). None of them is set."
            )
        client = genai.Client(api_key=api_key, http_options=http_options)
        return cls(client, own_loop=True, processes=processes)

    def supports(self, model: str) -> bool:
        return canonical_model(model).startswith("gemini-")

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes started so far (none before `start_workers` or the
        first pooled call)."""
        return [] if self._pool is None else self._pool.pids

    def start_workers(self) -> None:
        """Fork the worker processes now, if the provider has them: when a run with
        Gemini agents starts, so that its first calls do not wait for the forks (about
        40 ms, with the SDK warmed for them). If none can be forked, calls stay here."""
        if self._pool is not None:
            with contextlib.suppress(PoolUnavailable):
                self._pool.start()

    def _worker_call(self) -> Any:
        """In a forked worker: the call of a provider of its own on the same client (the
        SDK keeps one connection pool per event loop, so the worker's loop gets its own)."""
        return GeminiProvider(self._client)._call

    async def aclose(self) -> None:
        """Release the SDK's connection pools (and stop the provider's loop and workers)."""
        if self._pool is not None:
            await self._pool.aclose()
        if self._sdk_loop is None:
            await self._client.aio.aclose()
        elif self._sdk_loop.started:
            await self._sdk_loop.call(self._client.aio.aclose)
            self._sdk_loop.close()

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        """One call; with output=json one more, to repair an answer that does not parse or
        match output_schema. `timeout_s` bounds each of the two calls."""
        json_mode = request.output == "json"
        if json_mode and request.output_schema is not None:
            _check_schema(request.output_schema, request.model)
        contents = [
            *(functions.content(t) for t in request.history),
            _first_turn(request),
            *(functions.content(t) for t in request.turns),
        ]
        text, model, usage, calls = await self._call(request, contents, on_partial)
        if calls:
            return LlmResponse(text=text, model=model, usage=usage, calls=calls)
        if not json_mode:
            return LlmResponse(text=text, model=model, usage=usage)
        data, problem = _parse_json(text, request.output_schema)
        if problem is None:
            return LlmResponse(text=text, model=model, usage=usage, data=data)
        repair = [
            *contents,
            _turn("model", text or "(empty answer)"),
            _turn("user", _repair_instruction(problem, request.output_schema)),
        ]
        text, model, more, _ = await self._call(request, repair, on_partial)
        data, problem = _parse_json(text, request.output_schema)
        if problem is not None:
            raise LlmError(
                f"Gemini {request.model} answered JSON that {problem}, again after one "
                f"repair attempt. The answer began: {text[:_QUOTE_CHARS]!r}",
                type="InvalidJson",
                retryable=False,
            )
        return LlmResponse(text=text, model=model, usage=usage + more, data=data)

    async def _call(
        self, request: LlmRequest, contents: list[_Content], on_partial: OnPartial | None
    ) -> tuple[str, str, Usage, tuple[FunctionCall, ...]]:
        """(text, answering model, usage, function calls) of one call, or a classified
        LlmError."""
        try:
            if self._pool is not None and self._pooled(request, on_partial):
                try:
                    result: tuple[str, str, Usage, tuple[FunctionCall, ...]]
                    result = await self._pool.call(request, contents, None)
                    return result
                except PoolUnavailable:
                    pass
            config = _config(request)
            if self._sdk_loop is None:
                return await self._send_within(request, contents, config, on_partial)
            partial = None if on_partial is None else self._sdk_loop.to_caller(on_partial)
            return await self._sdk_loop.call(
                lambda: self._send_within(request, contents, config, partial)
            )
        except LlmError:
            raise
        except _CallbackError as exc:
            raise exc.original from None
        except errors.APIError as exc:
            raise _from_api_error(exc, request.model) from exc
        except _TIMEOUT_ERRORS as exc:
            raise LlmError(
                f"Gemini {request.model} did not answer within {request.timeout_s:g}s "
                f"({type(exc).__name__})",
                type="Timeout",
                retryable=True,
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise LlmError(
                f"Could not reach Gemini for {request.model}: {type(exc).__name__}: {exc}",
                type="ConnectionError",
                retryable=True,
            ) from exc
        except _CREDENTIAL_ERRORS as exc:
            raise LlmError(
                f"No Google credentials for Vertex AI: {exc}. Run `gcloud auth "
                f"application-default login` or set {ENV_GEMINI_API_KEY}.",
                type="Unauthenticated",
                retryable=False,
            ) from exc
        except errors.UnknownApiResponseError as exc:
            raise LlmError(
                f"Gemini {request.model} sent a response that is not JSON: {exc}",
                type="BadResponse",
                retryable=True,
            ) from exc
        except (ValueError, TypeError) as exc:  # the SDK or pydantic refused our arguments
            raise LlmError(
                f"Gemini request for {request.model} is invalid: {exc}",
                type="InvalidRequest",
                retryable=False,
            ) from exc

    def _pooled(self, request: LlmRequest, on_partial: OnPartial | None) -> bool:
        """Streamed calls stay here (their partials go to the caller's store as they come);
        so do traced ones (the SDK's span attributes are set on this process's spans)."""
        assert self._pool is not None
        return not (
            request.stream or on_partial is not None or self._pool.broken or tracing.enabled()
        )

    async def _send_within(
        self,
        request: LlmRequest,
        contents: list[_Content],
        config: types.GenerateContentConfig | None,
        on_partial: OnPartial | None,
    ) -> tuple[str, str, Usage, tuple[FunctionCall, ...]]:
        async with asyncio.timeout(request.timeout_s):
            return await self._send(request, contents, config, on_partial)

    async def _send(
        self,
        request: LlmRequest,
        contents: list[_Content],
        config: types.GenerateContentConfig | None,
        on_partial: OnPartial | None,
    ) -> tuple[str, str, Usage, tuple[FunctionCall, ...]]:
        models = self._client.aio.models
        if not request.stream:
            response = await models.generate_content(
                model=request.model, contents=contents, config=config
            )
            _raise_if_blocked(response, request.model)
            return _finish(request.model, [response])
        chunks: list[types.GenerateContentResponse] = []
        text = ""
        stream = await models.generate_content_stream(
            model=request.model, contents=contents, config=config
        )
        async for chunk in stream:
            _raise_if_blocked(chunk, request.model)
            chunks.append(chunk)
            piece = _text_of(chunk)
            if piece:
                text += piece
                if on_partial is not None:
                    try:
                        await on_partial(text)
                    except Exception as exc:
                        raise _CallbackError(exc) from exc
        return _finish(request.model, chunks)


# ---- request --------------------------------------------------------------------------


def _is_stub(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost") or "stub" in host


def _turn(role: str, text: str) -> types.Content:
    return types.Content(role=role, parts=[types.Part(text=text)])


def _first_turn(request: LlmRequest) -> types.Content | types.ContentDict:
    """The prompt, then the node's attachments as parts in their order: inline bytes as
    inline_data, gs:// files as file_data (the service reads them itself).

    A prompt alone is a plain dict: the SDK sends the very same request for it, but a
    `types.Content` costs about 0.3 ms of CPU more a call (pydantic validating it, then
    the SDK walking the model), a sixth of the SDK's own cost per call; with ten agents
    answering at once that CPU is on the critical path of the layer."""
    if not request.attachments:
        return {"role": "user", "parts": [{"text": request.prompt}]}
    parts = [types.Part(text=request.prompt)]
    for attachment in request.attachments:
        if attachment.data is not None:
            parts.append(
                types.Part.from_bytes(data=attachment.data, mime_type=attachment.mime_type)
            )
        elif attachment.uri is not None:
            parts.append(
                types.Part.from_uri(file_uri=attachment.uri, mime_type=attachment.mime_type)
            )
    return types.Content(role="user", parts=parts)


def _config(request: LlmRequest) -> types.GenerateContentConfig | None:
    """Only the options the node sets; None when it sets none, since the SDK converts a
    config field by field (about 1 ms a call, measured) even when every field is empty.

    No per-request http_options either: with them the SDK prepares each request the slow
    way; the client already has no retries, and `_call` bounds the call by timeout_s."""
    json_mode = request.output == "json"
    options: dict[str, Any] = {
        "system_instruction": request.system or None,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_output_tokens": request.max_output_tokens,
        "stop_sequences": list(request.stop_sequences) or None,
        "safety_settings": [types.SafetySetting.model_validate(s) for s in request.safety_settings]
        or None,
        "response_mime_type": "application/json" if json_mode else None,
    }
    if json_mode and request.output_schema:
        schema_field = "response_json_schema" if _HAS_JSON_SCHEMA_FIELD else "response_schema"
        options[schema_field] = request.output_schema
    options.update(functions.tool_options(request))
    options = {name: value for name, value in options.items() if value is not None}
    return types.GenerateContentConfig(**options) if options else None


# ---- response -------------------------------------------------------------------------


def _text_of(response: types.GenerateContentResponse) -> str:
    """The answer's text parts; thought summaries are not part of the answer."""
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    if content is None or not content.parts:
        return ""
    return "".join(p.text for p in content.parts if p.text and not p.thought)


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def _raise_if_blocked(response: types.GenerateContentResponse, model: str) -> None:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        reason = _enum_name(feedback.block_reason)
        detail = f" ({feedback.block_reason_message})" if feedback.block_reason_message else ""
        raise LlmError(
            f"Gemini {model} refused the prompt: blocked for {reason}{detail}. Rephrase the "
            "prompt or relax the node's safety_settings.",
            type="SafetyBlock",
            retryable=False,
        )
    candidates = response.candidates or []
    finish = _enum_name(candidates[0].finish_reason) if candidates else ""
    if finish:
        tracing.annotate(gen_ai__response__finish_reasons=[finish.lower()])
    if finish in _SAFETY_FINISH:
        raise LlmError(
            f"Gemini {model} stopped its answer for {finish}. Rephrase the prompt or relax "
            "the node's safety_settings.",
            type="SafetyBlock",
            retryable=False,
        )
    if finish == "RECITATION":
        raise LlmError(
            f"Gemini {model} stopped its answer for RECITATION (it would quote training "
            "data verbatim). Ask for a summary instead of a copy.",
            type="Recitation",
            retryable=False,
        )


def _finish(
    model: str, chunks: list[types.GenerateContentResponse]
) -> tuple[str, str, Usage, tuple[FunctionCall, ...]]:
    if not any(c.candidates for c in chunks):
        raise LlmError(
            f"Gemini {model} answered without any candidate and without a block reason",
            type="EmptyResponse",
            retryable=True,
        )
    text = "".join(_text_of(c) for c in chunks)
    answered_by = next((c.model_version for c in reversed(chunks) if c.model_version), None)
    metadata = next((c.usage_metadata for c in reversed(chunks) if c.usage_metadata), None)
    usage = Usage(calls=1)
    if metadata is not None:
        usage = Usage(
            input_tokens=metadata.prompt_token_count or 0,
            output_tokens=metadata.candidates_token_count or 0,
            cached_tokens=metadata.cached_content_token_count or 0,
            thinking_tokens=metadata.thoughts_token_count or 0,
            calls=1,
        )
    name = answered_by or canonical_model(model)
    calls = tuple(call for c in chunks for call in functions.calls_of(c))
    return text, name, replace(usage, cost_usd=cost_usd(name, usage)), calls


# ---- errors ---------------------------------------------------------------------------


def _from_api_error(exc: errors.APIError, model: str) -> LlmError:
    code = int(exc.code) if exc.code else None
    status = exc.status or (f"HTTP_{code}" if code else "HttpError")
    hint = _HINTS.get(code or 0)
    message = f"Gemini {model} answered {code} {status}: {exc.message or exc}"
    return LlmError(
        f"{message} ({hint})" if hint else message,
        type=str(status),
        retryable=code in _RETRYABLE_HTTP,
        http_status=code,
        retry_after_s=_retry_after_s(exc),
    )


def _retry_after_s(exc: errors.APIError) -> float | None:
    """google.rpc.RetryInfo.retryDelay ("2s", "1.5s" or {seconds, nanos}), else a
    Retry-After header in seconds."""
    body: dict[str, Any] = exc.details if isinstance(exc.details, dict) else {}
    nested = body.get("error")
    error: dict[str, Any] = nested if isinstance(nested, dict) else body
    for detail in error.get("details") or []:
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith(
            "google.rpc.RetryInfo"
        ):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", delay)
            if match:
                return float(match.group(1))
        elif isinstance(delay, dict):
            return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    headers = getattr(exc.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# ---- JSON -----------------------------------------------------------------------------


def _check_schema(schema: dict[str, Any], model: str) -> None:
    problems = schema_problems("output_schema", schema)
    if problems:
        raise LlmError(
            f"output_schema for {model} is not a valid JSON Schema: {problems[0]}",
            type="InvalidSchema",
            retryable=False,
        )


def _parse_json(text: str, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """(value, None), or (None, what is wrong) for the repair prompt and the error."""
    body = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if schema is not None:
        error = jsonschema.exceptions.best_match(schema_errors(schema, data))
        if error is not None:
            return None, f"does not match output_schema ({error.message} at {error.json_path})"
    return data, None


def _repair_instruction(problem: str, schema: dict[str, Any] | None) -> str:
    target = (
        f" matching this JSON Schema: {json.dumps(schema, separators=(',', ':'))}" if schema else ""
    )
    return (
        f"Your previous answer {problem}. Answer again with only the corrected JSON "
        f"value{target}. No prose, no code fences."
    )
