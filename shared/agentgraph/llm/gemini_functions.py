"""Gemini function calling: the node's tools as function declarations (with the SDK's
automatic function calling off, since the engine runs every tool itself as a durable
step), the model's function calls read from a response, and the turns after the prompt
(calls with their thought signatures, function responses) as `Content`."""

from __future__ import annotations

import base64
from typing import Any

from google.genai import types

from agentgraph.core.llm_port import FunctionCall, LlmRequest, Turn


def content(turn: Turn) -> types.Content:
    """A turn after the prompt: the model's text and function calls (with the thought
    signatures Gemini asks to get back), or the function responses."""
    parts: list[types.Part] = []
    if turn.text:
        parts.append(types.Part(text=turn.text))
    for call in turn.calls:
        parts.append(
            types.Part(
                function_call=types.FunctionCall(id=call.id, name=call.name, args=call.args),
                thought_signature=base64.b64decode(call.signature) if call.signature else None,
            )
        )
    for result in turn.results:
        parts.append(
            types.Part(
                function_response=types.FunctionResponse(
                    id=result.id, name=result.name, response=result.response
                )
            )
        )
    return types.Content(role=turn.role, parts=parts)


def tool_options(request: LlmRequest) -> dict[str, Any]:
    """Function declarations, with the SDK's automatic function calling off: the engine
    runs the tools itself, each call a durable step."""
    if not request.functions:
        return {}
    declarations = [
        types.FunctionDeclaration(
            name=f.name, description=f.description, parameters_json_schema=f.parameters
        )
        for f in request.functions
    ]
    return {
        "tools": [types.Tool(function_declarations=declarations)],
        "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True),
    }


def calls_of(response: types.GenerateContentResponse) -> list[FunctionCall]:
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    calls = []
    for part in (content.parts or []) if content is not None else []:
        call = part.function_call
        if call is None or not call.name:
            continue
        signature = (
            base64.b64encode(part.thought_signature).decode() if part.thought_signature else None
        )
        calls.append(FunctionCall(call.name, dict(call.args or {}), call.id, signature))
    return calls
