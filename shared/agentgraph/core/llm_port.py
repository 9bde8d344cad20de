"""The LLM port: what the engine asks a model provider for, and what it gets back.

A request carries everything one call needs (model, prompt, history, the turns of a tool
loop, function declarations, attachments, output mode); a provider (`llm/echo.py`,
`llm/gemini.py`) turns it into its service's call and classifies failures as `LlmError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agentgraph.core.records import Usage


@dataclass(frozen=True)
class FunctionCall:
    """A model's request to call one of the node's tools. `signature` is the provider's
    opaque token for the call (Gemini's thought signature, base64), sent back with it."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args, "id": self.id, "signature": self.signature}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunctionCall:
        return cls(
            str(data["name"]), dict(data.get("args") or {}), data.get("id"), data.get("signature")
        )


@dataclass(frozen=True)
class FunctionResult:
    """What a function call returned, as sent back to the model: `{"result": value}` or
    `{"error": message}`."""

    name: str
    response: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Turn:
    """A turn of the conversation after the prompt: the model's (text and calls) or the
    user side's function results."""

    role: Literal["model", "user"]
    text: str = ""
    calls: tuple[FunctionCall, ...] = ()
    results: tuple[FunctionResult, ...] = ()


@dataclass(frozen=True)
class FunctionSpec:
    """A tool as the model sees it: name, description and a JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Attachment:
    """A file sent to the model with the prompt: inline bytes, or a URI the model's
    service reads itself (gs://...). Built by llm/attachments.py from a node's `attach`."""

    mime_type: str
    data: bytes | None = None
    uri: str | None = None


@dataclass(frozen=True)
class LlmRequest:
    model: str
    prompt: str
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    safety_settings: tuple[dict[str, Any], ...] = ()
    output: Literal["text", "json"] = "text"
    output_schema: dict[str, Any] | None = None
    timeout_s: float = 120.0
    stream: bool = False
    # Function calling: the tools the model may call, and the turns after the prompt.
    functions: tuple[FunctionSpec, ...] = ()
    turns: tuple[Turn, ...] = ()
    # Turns BEFORE the prompt: an agent profile's earlier conversations (`memory: run`).
    history: tuple[Turn, ...] = ()
    attachments: tuple[Attachment, ...] = ()  # parts after the prompt, in order


@dataclass
class LlmResponse:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    data: Any = None  # the parsed value when output == "json"
    calls: tuple[FunctionCall, ...] = ()  # the functions the model asks to call, in order


OnPartial = Callable[[str], Awaitable[None]]


@runtime_checkable
class LlmProvider(Protocol):
    def supports(self, model: str) -> bool:
        """Whether this provider answers for a model name (used by validation too)."""
        ...

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        """One call. Raises LlmError. With request.stream, calls on_partial with the text
        so far as it grows."""
        ...
