"""`model: echo` — the built-in offline model: answers with the rendered prompt.

Deterministic and free, so graphs run and tests pass with no network and no key. In
JSON mode it answers the prompt parsed as JSON when it is JSON, else {"text": prompt}.

Function calling, scripted by the prompt (the same grammar as the Gemini stub's,
`emulator/gemini_answers.py`): a line `@call TURN NAME {json args}` makes the model's
turn TURN (1-based; `*` for every turn) call the tool NAME with those arguments; several
lines of one turn are parallel calls, in line order; `@say TURN text` gives the turn
text beside its calls. A turn with no `@call` line answers:
the prompt on the first turn, else the last function results, one `NAME: {response}`
per call joined by "; " (so a test sees what reached the model).
"""

from __future__ import annotations

import json
import re

from agentgraph.core.llm_port import FunctionCall, LlmRequest, LlmResponse, OnPartial
from agentgraph.core.records import Usage

ECHO_MODEL = "echo"
_SAY_LINE = re.compile(r"^\s*@say\s+(?P<turn>\d+|\*)\s+(?P<text>.*?)\s*$")
_CALL_LINE = re.compile(r"^\s*@call\s+(?P<turn>\d+|\*)\s+(?P<name>[\w.-]+)\s*(?P<args>\{.*\})?\s*$")


def scripted_calls(prompt: str, turn: int) -> tuple[tuple[FunctionCall, ...], str]:
    """The calls the prompt's `@call` lines script for this model turn, and the text its
    `@say` lines give beside them."""
    calls = []
    said = []
    for line in prompt.splitlines():
        say = _SAY_LINE.match(line)
        if say and say["turn"] in ("*", str(turn)):
            said.append(say["text"])
        match = _CALL_LINE.match(line)
        if match and match["turn"] in ("*", str(turn)):
            args = json.loads(match["args"]) if match["args"] else {}
            calls.append(FunctionCall(match["name"], args if isinstance(args, dict) else {}))
    return tuple(calls), " ".join(said)


class EchoProvider:
    def supports(self, model: str) -> bool:
        return model == ECHO_MODEL

    async def generate(
        self, request: LlmRequest, on_partial: OnPartial | None = None
    ) -> LlmResponse:
        text = request.prompt
        calls: tuple[FunctionCall, ...] = ()
        if request.functions:
            turn = 1 + sum(1 for t in request.turns if t.role == "model")
            calls, said = scripted_calls(request.prompt, turn)
            last = request.turns[-1] if request.turns else None
            if calls:
                text = said
            elif last is not None and last.role == "user":
                text = "; ".join(
                    f"{r.name}: {json.dumps(r.response, sort_keys=True)}" for r in last.results
                )
        if on_partial is not None and text:
            words = text.split(" ")
            for i in range(1, len(words) + 1):
                await on_partial(" ".join(words[:i]))
        usage = Usage(
            input_tokens=len(request.prompt.split()), output_tokens=len(text.split()), calls=1
        )
        data = None
        if request.output == "json" and not calls:
            try:
                data = json.loads(text)
            except ValueError:
                data = {"text": text}
        return LlmResponse(text=text, model=ECHO_MODEL, usage=usage, data=data, calls=calls)
