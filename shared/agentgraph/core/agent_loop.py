"""The decisions of an agent's tool loop, as a pure function of its recorded steps.

An agent node with `tools` loops: a model turn, then every function call of that turn,
then the next turn, until the model answers without a call or `max_turns` is reached.
Every completed turn and call is a `Step` in the store before the next begins, so the
loop's state IS its steps: `replay` rebuilds the conversation from them and `decide`
says what comes next. A retried, crashed or taken-over attempt therefore resumes exactly
after its last completed step, and never repeats a completed model or tool call.

Step indexes are fixed by the steps before them: a model turn at index i that asks for k
calls puts its calls at i+1 … i+k (in the order the model gave them, whatever order they
finish in) and the next turn at i+k+1. Two workers racing on one node (a takeover of a
worker that was only slow) therefore write the same index for the same step, and the
store keeps the first (`Store.append_step` is create-if-absent).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from agentgraph.core.errors import MaxTurnsExceeded
from agentgraph.core.llm_port import FunctionCall, FunctionResult, Turn
from agentgraph.core.records import Step, Usage


@dataclass(frozen=True)
class Replay:
    """What the recorded steps say about the conversation so far."""

    turns: tuple[Turn, ...]  # after the prompt: model turns and their function results
    model_turns: int
    next_index: int  # where the next model turn goes (when nothing is pending)
    pending: tuple[tuple[int, FunctionCall], ...]  # calls of the last turn still to make
    answer: Step | None  # the last model turn, when it called nothing: the node's answer
    last_text: str  # the most recent non-empty text of a model turn
    last_calls: tuple[FunctionCall, ...]  # the calls of the last model turn


@dataclass(frozen=True)
class CallModel:
    turn: int
    index: int


@dataclass(frozen=True)
class RunTools:
    turn: int
    calls: tuple[tuple[int, FunctionCall], ...]


@dataclass(frozen=True)
class Answer:
    text: str
    data: Any
    model: str


@dataclass(frozen=True)
class Exhausted:
    """max_turns model turns were made and the last still called tools."""

    last_text: str
    message: str


Action = CallModel | RunTools | Answer | Exhausted


def model_result(text: str, calls: Sequence[FunctionCall], data: Any = None) -> dict[str, Any]:
    """A model step's `result`: its text, its calls, and the parsed JSON answer if any."""
    return {"text": text, "calls": [c.to_dict() for c in calls], "data": data}


def calls_of(step: Step) -> tuple[FunctionCall, ...]:
    result = step.result if isinstance(step.result, dict) else {}
    return tuple(FunctionCall.from_dict(c) for c in result.get("calls") or ())


def text_of(step: Step) -> str:
    result = step.result if isinstance(step.result, dict) else {}
    return str(result.get("text") or "")


def function_result(step: Step) -> FunctionResult:
    """A tool step as the model receives it: `{"result": value}` or `{"error": text}`."""
    if step.error is not None:
        message = f"{step.error.get('type', 'Error')}: {step.error.get('message', '')}"
        return FunctionResult(step.name, {"error": message}, step.call_id)
    return FunctionResult(step.name, {"result": step.result}, step.call_id)


def replay(steps: Sequence[Step]) -> Replay:
    """Rebuild the loop's state from its steps (in any order; extra steps beyond a gap,
    which no worker writes, are ignored)."""
    by_index = {s.index: s for s in steps}
    turns: list[Turn] = []
    index = 0
    model_turns = 0
    last_text = ""
    last_calls: tuple[FunctionCall, ...] = ()
    while True:
        step = by_index.get(index)
        if step is None or step.kind != "model":
            return Replay(tuple(turns), model_turns, index, (), None, last_text, last_calls)
        model_turns += 1
        text, calls = text_of(step), calls_of(step)
        last_text, last_calls = text or last_text, calls
        turns.append(Turn("model", text, calls))
        if not calls:
            return Replay(tuple(turns), model_turns, index + 1, (), step, last_text, calls)
        answered = [by_index.get(index + 1 + k) for k in range(len(calls))]
        pending = tuple(
            (index + 1 + k, call)
            for k, (call, done) in enumerate(zip(calls, answered, strict=True))
            if done is None
        )
        if pending:
            return Replay(
                tuple(turns), model_turns, index + 1 + len(calls), pending, None, last_text, calls
            )
        turns.append(Turn("user", results=tuple(function_result(s) for s in answered if s)))
        index += 1 + len(calls)


def decide(state: Replay, max_turns: int) -> Action:
    """What the loop does next. At max_turns, the calls of the last turn are not made:
    no further turn would read their results."""
    if state.answer is not None:
        result = state.answer.result if isinstance(state.answer.result, dict) else {}
        return Answer(text_of(state.answer), result.get("data"), state.answer.name)
    if state.model_turns >= max_turns:
        names = ", ".join(dict.fromkeys(c.name for c in state.last_calls)) or "none"
        return Exhausted(
            state.last_text,
            f"the model still called tools ({names}) after max_turns={max_turns} turns; "
            "raise max_turns (at most 100), or set on_max_turns: return_last to answer "
            "with the last text instead",
        )
    if state.pending:
        return RunTools(state.model_turns, state.pending)
    return CallModel(state.model_turns + 1, state.next_index)


def exhausted_error(action: Exhausted) -> MaxTurnsExceeded:
    return MaxTurnsExceeded(action.message)


def total_usage(steps: Sequence[Step]) -> Usage:
    total = Usage()
    for step in steps:
        total = total + step.usage
    return total


def unrecorded(total: Usage, recorded: Usage) -> Usage:
    """What of `total` (all steps) the node has not been charged yet (`recorded`: its usage
    when the attempt was claimed). Node usage thus sums its steps, including those of an
    attempt that died before it could report them."""
    values = {
        f.name: max(getattr(total, f.name) - getattr(recorded, f.name), 0) for f in fields(Usage)
    }
    values["cost_usd"] = round(values["cost_usd"], 9)
    return Usage(**values)


def jsonable(value: Any) -> Any:
    """A tool's return value as stored and sent to the model: itself when it is JSON,
    else its str()."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
