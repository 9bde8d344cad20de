"""What the engine reports of a node attempt and a model call: span attributes (GenAI
semantic conventions) and metrics. Kept out of engine.py, which only calls these three."""

from __future__ import annotations

import time
from typing import Any

from agentgraph.core.graph import Node
from agentgraph.core.llm_port import LlmRequest
from agentgraph.core.records import Usage
from agentgraph.observability import metrics, tracing


def llm_attributes(request: LlmRequest) -> dict[str, Any]:
    """GenAI semantic conventions for a model call; the prompt only when asked for."""
    attributes: dict[str, Any] = {
        tracing.GENAI_OPERATION: "chat",
        tracing.GENAI_PROVIDER: "gcp.gemini" if request.model.startswith("gemini") else "other",
        tracing.GENAI_REQUEST_MODEL: request.model,
        "gen_ai.request.temperature": request.temperature,
        "gen_ai.request.max_tokens": request.max_output_tokens,
    }
    if tracing.capture_content():
        attributes["gen_ai.prompt"] = request.prompt
    return attributes


def record_llm(model: str, usage: Usage, text: str) -> None:
    """Tokens and cost on the current (model call) span and in the metrics."""
    instruments = metrics.instruments()
    instruments.tokens.add(usage.input_tokens, {"gen_ai.request.model": model, "type": "input"})
    instruments.tokens.add(usage.output_tokens, {"gen_ai.request.model": model, "type": "output"})
    instruments.cost.add(usage.cost_usd, {"gen_ai.request.model": model})
    if not tracing.enabled():
        return
    attributes: dict[str, Any] = {
        tracing.GENAI_RESPONSE_MODEL: model,
        tracing.GENAI_INPUT_TOKENS: usage.input_tokens,
        tracing.GENAI_OUTPUT_TOKENS: usage.output_tokens,
        "agentgraph.llm.cost_usd": usage.cost_usd,
    }
    if tracing.capture_content():
        attributes["gen_ai.completion"] = text
    tracing.set_attributes(attributes)


def record_attempt(node: Node, status: str, model: str | None, began: float) -> None:
    labels = {"status": status, "kind": node.kind, "model": model or ""}
    instruments = metrics.instruments()
    instruments.node_attempts.add(1, labels)
    instruments.node_duration.record(time.monotonic() - began, labels)
    tracing.annotate(agentgraph__node__status=status, agentgraph__node__kind=node.kind)
