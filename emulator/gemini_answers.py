"""The stub's answers: a pure function of the request (and of the faults asked for).

Tests can therefore assert them exactly:

- The *answer* is `f"[{base_model}] {last_user_text}"`, where base_model is the model
  name without its `~...` fault suffix and last_user_text is the text parts of the last
  `user` turn joined with "" (a repair turn therefore changes the answer), followed,
  when that turn carries files (inline_data or file_data parts), by
  ` [N attached: mime/type (B bytes), mime/type (gs://...)]`.
- Text mode: the text is the answer. JSON mode (`responseMimeType: application/json`):
  the text is `json.dumps(value)` where value satisfies `responseSchema` (Gemini's
  OpenAPI subset, types like "OBJECT") or `responseJsonSchema` (JSON Schema): every
  listed and required property, `const` or the first `enum` value when given, the
  first non-null branch of anyOf/oneOf, `$ref` into `$defs`/`definitions`, integers and
  numbers 1 (moved into [minimum, maximum]), booleans true, arrays of max(1, minItems)
  items, strings the answer (cut to maxLength). Without a schema: `{"text": answer}`.
- Then `stopSequences` cut the text before the first occurrence of any of them, and
  `maxOutputTokens` keeps that many words (finishReason MAX_TOKENS instead of STOP).
- Tokens are whitespace-separated words. promptTokenCount counts the system
  instruction and every text part of every turn; candidatesTokenCount the returned
  text; thoughtsTokenCount and cachedContentTokenCount are 0 unless a fault asks;
  totalTokenCount = prompt + candidates + thoughts. modelVersion is base_model.
- The system instruction changes the answer only through promptTokenCount.
- Function calling, scripted by the prompt: when the request declares tools, a line
  `@call TURN NAME {json args}` of the first user turn makes model turn TURN (1-based:
  one more than the `model` turns in `contents`; `*` for every turn) answer with a
  `functionCall` part calling NAME with those args, and no text; several lines of one
  turn are parallel calls, in line order; a line `@say TURN text` gives that turn text
  beside its calls. Each call carries a `thoughtSignature`. A turn
  without a line answers as above. The text of a user turn of `functionResponse` parts
  (hence the answer after tool results) is `NAME: {response as sorted JSON}` per part,
  joined by "; ". A call's tokens are its name and args as words.

Also here: the bodies Gemini answers with, as JSON objects (one `GenerateContentResponse`,
or the chunks of a stream, two words per chunk; the last carries finishReason and
usageMetadata), and its error bodies (`google.rpc.Status` with QuotaFailure / RetryInfo
details), so the HTTP server only moves bytes.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from emulator.gemini_faults import BadRequest, Faults

_WORDS_PER_CHUNK = 2
_DEFAULT_429_DELAY_S = 1.0
_SAFETY_REASONS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"})
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _words(text: str) -> int:
    return len(text.split())


def turn_text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    responses = [
        p["functionResponse"]
        for p in parts
        if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)
    ]
    if responses:
        return "; ".join(
            f"{r.get('name')}: {json.dumps(r.get('response'), sort_keys=True)}" for r in responses
        )
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


_SAY_LINE = re.compile(r"^\s*@say\s+(?P<turn>\d+|\*)\s+(?P<text>.*?)\s*$")
_CALL_LINE = re.compile(r"^\s*@call\s+(?P<turn>\d+|\*)\s+(?P<name>[\w.-]+)\s*(?P<args>\{.*\})?\s*$")


def model_turns(body: dict[str, Any]) -> int:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    return sum(1 for c in contents if isinstance(c, dict) and c.get("role") == "model")


def scripted_calls(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The function calls the first user turn's `@call` lines script for this turn (none
    unless the request declares tools), and the text its `@say` lines give beside them."""
    if not body.get("tools"):
        return [], ""
    turns = user_turns(body)
    turn = str(model_turns(body) + 1)
    calls = []
    said = []
    for line in (turns[0] if turns else "").splitlines():
        say = _SAY_LINE.match(line)
        if say and say["turn"] in ("*", turn):
            said.append(say["text"])
        match = _CALL_LINE.match(line)
        if match and match["turn"] in ("*", turn):
            try:
                args = json.loads(match["args"]) if match["args"] else {}
            except json.JSONDecodeError as exc:
                raise BadRequest(f"@call line {line.strip()!r}: args are not JSON: {exc}") from exc
            calls.append({"name": match["name"], "args": args})
    return calls, " ".join(said)


def returned_signatures(body: dict[str, Any]) -> list[str]:
    """The thoughtSignature of every functionCall part the request sends back."""
    contents = body.get("contents") or []
    return [
        str(p.get("thoughtSignature"))
        for c in (contents if isinstance(contents, list) else [contents])
        if isinstance(c, dict)
        for p in c.get("parts") or []
        if isinstance(p, dict) and "functionCall" in p and p.get("thoughtSignature")
    ]


def declared_tools(body: dict[str, Any]) -> list[str]:
    return [
        str(d.get("name"))
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
        for d in tool.get("functionDeclarations") or []
        if isinstance(d, dict)
    ]


def attachments_of(content: Any) -> list[dict[str, Any]]:
    """The file parts of one turn: {"mime_type", "bytes"} for inline data (decoded
    size), {"mime_type", "uri"} for file references."""
    parts = content.get("parts") if isinstance(content, dict) else None
    found: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        inline = part.get("inlineData") or part.get("inline_data")
        file = part.get("fileData") or part.get("file_data")
        if isinstance(inline, dict):
            data = str(inline.get("data", ""))
            try:
                size = len(base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_"))
            except ValueError:
                size = -1
            mime = inline.get("mimeType") or inline.get("mime_type")
            found.append({"mime_type": mime, "bytes": size})
        elif isinstance(file, dict):
            mime = file.get("mimeType") or file.get("mime_type")
            found.append({"mime_type": mime, "uri": file.get("fileUri") or file.get("file_uri")})
    return found


def last_user_content(body: dict[str, Any]) -> Any:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    users = [c for c in contents if isinstance(c, dict) and c.get("role", "user") == "user"]
    return users[-1] if users else {}


def _attached_note(files: list[dict[str, Any]]) -> str:
    if not files:
        return ""
    described = ", ".join(
        f"{f['mime_type']} ({f['bytes']} bytes)"
        if "bytes" in f
        else f"{f['mime_type']} ({f['uri']})"
        for f in files
    )
    return f" [{len(files)} attached: {described}]"


def user_turns(body: dict[str, Any]) -> list[str]:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    return [
        turn_text(c) for c in contents if isinstance(c, dict) and c.get("role", "user") == "user"
    ]


def _prompt_tokens(body: dict[str, Any]) -> int:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    return _words(turn_text(body.get("systemInstruction") or {})) + sum(
        _words(turn_text(c)) for c in contents
    )


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for key in ref.removeprefix("#/").split("/"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise BadRequest(f"schema $ref {ref!r} does not resolve inside the schema")
    return node


def _value_for(schema: Any, answer: str, root: dict[str, Any], depth: int = 0) -> Any:
    """The simplest value satisfying `schema` (rules in the module docstring)."""
    if not isinstance(schema, dict) or depth > 32:
        return answer
    if "$ref" in schema:
        return _value_for(_resolve_ref(str(schema["$ref"]), root), answer, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if _type_of(o) != "null"]
        if options:
            return _value_for(options[0], answer, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        ordering = schema.get("propertyOrdering") or schema.get("property_ordering") or []
        order = [*ordering, *props]
        names = list(dict.fromkeys([*order, *(schema.get("required") or [])]))
        return {n: _value_for(props.get(n, {}), answer, root, depth + 1) for n in names}
    if kind == "array":
        count = max(1, int(schema.get("minItems") or 0))
        return [_value_for(schema.get("items", {}), answer, root, depth + 1)] * count
    if kind in ("integer", "number"):
        value = 1
        if schema.get("minimum") is not None:
            value = max(value, schema["minimum"])
        if schema.get("maximum") is not None:
            value = min(value, schema["maximum"])
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    max_length = schema.get("maxLength")
    return answer[: int(max_length)] if max_length is not None else answer


def _type_of(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "string"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _cut_words(text: str, limit: int) -> str:
    """The text up to the end of its `limit`-th word."""
    if limit <= 0:
        return ""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text if len(ends) <= limit else text[: ends[limit - 1]]


@dataclass
class Answer:
    text: str
    finish_reason: str
    usage: dict[str, int]
    blocked: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)


def answer_for(body: dict[str, Any], base_model: str, faults: Faults, answered: int) -> Answer:
    """What the model says for this request; `answered` counts earlier successful calls
    of the same conversation (for badjson)."""
    config = body.get("generationConfig") or {}
    calls, said = scripted_calls(body)
    if calls:
        prompt = _prompt_tokens(body)
        spoken = _words(said) + sum(_words(f"{c['name']} {json.dumps(c['args'])}") for c in calls)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": spoken,
            "totalTokenCount": prompt + spoken,
            "thoughtsTokenCount": 0,
            "cachedContentTokenCount": 0,
        }
        return Answer(text=said, finish_reason="STOP", usage=usage, calls=calls)
    turns = user_turns(body)
    answer = f"[{base_model}] {turns[-1] if turns else ''}"
    answer += _attached_note(attachments_of(last_user_content(body)))
    finish = "STOP"
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        value = _value_for(schema, answer, schema) if schema else {"text": answer}
        text = json.dumps(value)
        if answered < faults.badjson:
            text = text[: max(1, len(text) // 2)]
    else:
        text = answer
    for stop in config.get("stopSequences") or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    limit = config.get("maxOutputTokens")
    if limit is not None and _words(text) > int(limit):
        text = _cut_words(text, int(limit))
        finish = "MAX_TOKENS"
    if faults.finish:
        finish = faults.finish
        if finish in _SAFETY_REASONS:
            text = ""
    prompt = _prompt_tokens(body)
    candidates = 0 if faults.block else _words(text)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + faults.thoughts,
        "thoughtsTokenCount": faults.thoughts,
        "cachedContentTokenCount": min(faults.cached, prompt),
    }
    return Answer(text=text, finish_reason=finish, usage=usage, blocked=faults.block)


def response_chunks(answer: Answer, base_model: str, stream: bool) -> Iterator[dict[str, Any]]:
    """The JSON objects of one answer: one for generateContent, several for streaming."""
    common = {"modelVersion": base_model, "responseId": f"stub-{time.monotonic_ns()}"}
    if answer.blocked:
        yield {
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                ],
            },
            "usageMetadata": answer.usage,
            **common,
        }
        return
    if answer.calls:
        signature = base64.b64encode(b"stub-signature").decode()
        parts: list[dict[str, Any]] = [{"text": answer.text}] if answer.text else []
        parts.extend({"functionCall": c, "thoughtSignature": signature} for c in answer.calls)
        called = {
            "index": 0,
            "content": {"role": "model", "parts": parts},
            "finishReason": answer.finish_reason,
        }
        yield {"candidates": [called], "usageMetadata": answer.usage, **common}
        return
    pieces = re.split(r"(?<=\s)(?=\S)", answer.text) if answer.text else []
    if stream:
        groups = [
            "".join(pieces[i : i + _WORDS_PER_CHUNK])
            for i in range(0, len(pieces), _WORDS_PER_CHUNK)
        ] or [""]
    else:
        groups = [answer.text]
    for i, group in enumerate(groups):
        candidate: dict[str, Any] = {"index": 0}
        if group:
            candidate["content"] = {"role": "model", "parts": [{"text": group}]}
        chunk: dict[str, Any] = {"candidates": [candidate], **common}
        if i == len(groups) - 1:
            candidate["finishReason"] = answer.finish_reason
            chunk["usageMetadata"] = answer.usage
        yield chunk


def error_body(code: int, message: str, retry_delay_s: float | None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if code == 429:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "stub/generate_content_requests"}],
            }
        )
    if retry_delay_s is None and code == 429:
        retry_delay_s = _DEFAULT_429_DELAY_S
    if retry_delay_s is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{retry_delay_s:g}s",
            }
        )
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": _STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def error_message(code: int, model: str, version: str, method: str) -> str:
    if code == 404:
        return (
            f"models/{model} is not found for API version {version}, or is not supported "
            f"for {method}. (gemini stub: injected fault)"
        )
    if code == 429:
        return "Resource has been exhausted (e.g. check quota). (gemini stub: injected fault)"
    if code == 400:
        return "Request contains an invalid argument. (gemini stub: injected fault)"
    return f"The service answered {code}. (gemini stub: injected fault)"
