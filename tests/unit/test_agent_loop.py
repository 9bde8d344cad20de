"""The tool loop's decisions are a pure function of its recorded steps (core/agent_loop)."""

from __future__ import annotations

from typing import Any

from agentgraph.core import agent_loop
from agentgraph.core.agent_loop import Answer, CallModel, Exhausted, RunTools
from agentgraph.core.llm_port import FunctionCall
from agentgraph.core.records import Step, Usage


def model(index: int, turn: int, text: str = "", *calls: FunctionCall, **extra: Any) -> Step:
    return Step(
        index,
        "model",
        "gemini-2.5-flash",
        1,
        turn,
        0.0,
        result=agent_loop.model_result(text, calls),
        usage=Usage(input_tokens=10, output_tokens=2, cost_usd=0.001, calls=1),
        **extra,
    )


def tool(index: int, turn: int, name: str, result: Any = None, **extra: Any) -> Step:
    return Step(index, "tool", name, 1, turn, 0.0, arguments={}, result=result, **extra)


WC = FunctionCall("word_count", {"text": "a b"})
LOOKUP = FunctionCall("lookup", {"q": "x"})


def test_with_no_steps_the_loop_calls_the_model_for_turn_one_at_index_zero() -> None:
    assert agent_loop.decide(agent_loop.replay([]), 10) == CallModel(turn=1, index=0)


def test_calls_of_a_turn_take_the_indexes_after_it_in_the_order_the_model_gave() -> None:
    state = agent_loop.replay([model(0, 1, "", WC, LOOKUP)])
    assert agent_loop.decide(state, 10) == RunTools(turn=1, calls=((1, WC), (2, LOOKUP)))


def test_only_the_calls_without_a_recorded_step_are_made_again() -> None:
    state = agent_loop.replay([model(0, 1, "", WC, LOOKUP), tool(2, 1, "lookup", "found")])
    assert agent_loop.decide(state, 10) == RunTools(turn=1, calls=((1, WC),))


def test_after_every_result_of_a_turn_the_next_turn_follows_them() -> None:
    steps = [
        model(0, 1, "", WC, LOOKUP),
        tool(2, 1, "lookup", "found"),
        tool(1, 1, "word_count", 2),
    ]
    state = agent_loop.replay(steps)
    assert agent_loop.decide(state, 10) == CallModel(turn=2, index=3)
    assert [t.role for t in state.turns] == ["model", "user"]
    assert [(r.name, r.response) for r in state.turns[1].results] == [
        ("word_count", {"result": 2}),
        ("lookup", {"result": "found"}),
    ]


def test_a_tool_error_reaches_the_model_as_the_calls_error_response() -> None:
    failed = tool(1, 1, "word_count", error={"type": "ValueError", "message": "no text"})
    state = agent_loop.replay([model(0, 1, "", WC), failed])
    assert state.turns[1].results[0].response == {"error": "ValueError: no text"}


def test_a_turn_without_calls_is_the_answer_and_nothing_more_is_called() -> None:
    steps = [model(0, 1, "", WC), tool(1, 1, "word_count", 2), model(2, 2, "two words")]
    assert agent_loop.decide(agent_loop.replay(steps), 10) == Answer(
        "two words", None, "gemini-2.5-flash"
    )


def test_at_max_turns_the_last_turns_calls_are_not_made_and_the_loop_is_exhausted() -> None:
    steps = [model(0, 1, "thinking", WC), tool(1, 1, "word_count", 2), model(2, 2, "", LOOKUP)]
    action = agent_loop.decide(agent_loop.replay(steps), 2)
    assert isinstance(action, Exhausted)
    assert action.last_text == "thinking"
    assert "max_turns=2" in action.message and "lookup" in action.message
    assert "on_max_turns: return_last" in action.message


def test_node_usage_is_what_its_steps_cost_minus_what_was_already_charged() -> None:
    steps = [model(0, 1, "", WC), tool(1, 1, "word_count", 2), model(2, 2, "done")]
    total = agent_loop.total_usage(steps)
    assert total == Usage(input_tokens=20, output_tokens=4, cost_usd=0.002, calls=2)
    charged = Usage(input_tokens=10, output_tokens=2, cost_usd=0.001, calls=1)
    assert agent_loop.unrecorded(total, charged) == Usage(10, 2, 0, 0, 0.001, 1)
    assert agent_loop.unrecorded(charged, total) == Usage()


def test_a_step_survives_its_json_round_trip() -> None:
    step = tool(3, 2, "lookup", {"rows": [1, 2]}, call_id="c-1", duration_ms=12)
    assert Step.from_dict(step.to_dict()) == step


def test_tool_results_that_are_not_json_are_kept_as_text() -> None:
    assert agent_loop.jsonable({"a": [1]}) == {"a": [1]}
    assert agent_loop.jsonable({1, 2}) in ("{1, 2}", "{2, 1}")


def test_the_echo_model_follows_the_prompts_call_lines_then_echoes_the_results() -> None:
    import asyncio

    from agentgraph.core.llm_port import FunctionResult, FunctionSpec, LlmRequest, Turn
    from agentgraph.llm.echo import EchoProvider

    prompt = 'Go.\n@call 1 lookup {"q": "x"}\n@say 1 looking\n@call 1 word_count {"text": "a"}'
    spec = FunctionSpec("lookup", "Look up.", {"type": "object"})
    first = asyncio.run(EchoProvider().generate(LlmRequest("echo", prompt, functions=(spec,))))
    assert first.text == "looking"
    assert first.calls == (
        FunctionCall("lookup", {"q": "x"}),
        FunctionCall("word_count", {"text": "a"}),
    )
    turns = (
        Turn("model", first.text, first.calls),
        Turn(
            "user",
            results=(
                FunctionResult("lookup", {"result": 1}),
                FunctionResult("word_count", {"error": "E: no"}),
            ),
        ),
    )
    second = asyncio.run(
        EchoProvider().generate(LlmRequest("echo", prompt, functions=(spec,), turns=turns))
    )
    assert second.calls == ()
    assert second.text == 'lookup: {"result": 1}; word_count: {"error": "E: no"}'
    plain = asyncio.run(EchoProvider().generate(LlmRequest("echo", prompt)))
    assert plain.calls == () and plain.text == prompt
