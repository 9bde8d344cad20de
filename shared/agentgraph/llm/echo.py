"""`model: echo` — the built-in offline model: answers with the rendered prompt.

Deterministic and free, so graphs run and tests pass with no network and no key. In
JSON mode it answers the prompt parsed as JSON when it is JSON, else {"text": prompt}.
"""

from __future__ import annotations

import json

from agentgraph.core.ports import LlmRequest, LlmResponse, OnPartial, Usage

ECHO_MODEL = "echo"


class EchoProvider:
    def supports(self, model: str) -> bool:
        return model == ECHO_MODEL

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        text = request.prompt
        if on_partial is not None:
            words = text.split(" ")
            for i in range(1, len(words) + 1):
                await on_partial(" ".join(words[:i]))
        usage = Usage(
            input_tokens=len(request.prompt.split()), output_tokens=len(text.split()), calls=1
        )
        data = None
        if request.output == "json":
            try:
                data = json.loads(text)
            except ValueError:
                data = {"text": text}
        return LlmResponse(text=text, model=ECHO_MODEL, usage=usage, data=data)
