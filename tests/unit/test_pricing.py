"""Cost of LLM calls from the dated price table, with a user override file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from agentgraph.core.records import Usage
from agentgraph.llm.pricing import ENV_PRICES, canonical_model, cost_usd, load_prices

M = 1_000_000


@pytest.fixture(autouse=True)
def _builtin_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_PRICES, raising=False)


def _write(tmp_path: Path, table: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    return path


def test_builtin_table_is_dated_sourced_and_covers_the_gemini_models() -> None:
    table = load_prices()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.as_of)
    assert "ai.google.dev" in table.source
    for model in (
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
    ):
        price = table.models[model]
        assert price.output > price.input >= price.cached > 0


def test_flash_cost_is_input_plus_output_at_list_price() -> None:
    usage = Usage(input_tokens=M, output_tokens=M)
    assert cost_usd("gemini-2.5-flash", usage) == pytest.approx(0.30 + 2.50)


def test_thinking_tokens_are_billed_as_output() -> None:
    with_thinking = Usage(input_tokens=0, output_tokens=100, thinking_tokens=900)
    assert cost_usd("gemini-2.5-flash", with_thinking) == pytest.approx(1000 * 2.50 / M)


def test_cached_tokens_are_part_of_input_and_billed_at_the_cached_rate() -> None:
    usage = Usage(input_tokens=1000, cached_tokens=800)
    assert cost_usd("gemini-2.5-flash", usage) == pytest.approx((200 * 0.30 + 800 * 0.03) / M)


def test_cached_tokens_beyond_the_input_count_are_capped() -> None:
    usage = Usage(input_tokens=10, cached_tokens=50)
    assert cost_usd("gemini-2.5-flash", usage) == pytest.approx(10 * 0.03 / M)


def test_pro_prompts_over_200k_tokens_use_the_long_context_rates() -> None:
    short = Usage(input_tokens=200_000, output_tokens=1000)
    long = Usage(input_tokens=200_001, output_tokens=1000)
    assert cost_usd("gemini-2.5-pro", short) == pytest.approx((200_000 * 1.25 + 1000 * 10) / M)
    assert cost_usd("gemini-2.5-pro", long) == pytest.approx((200_001 * 2.50 + 1000 * 15) / M)


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gemini-2.5-flash-001", "gemini-2.5-flash"),
        ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-001", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash~fail=2x429", "gemini-2.5-flash"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("publishers/google/models/gemini-2.0-flash@001", "gemini-2.0-flash"),
        ("Gemini-2.5-Pro", "gemini-2.5-pro"),
    ],
)
def test_model_names_match_the_longest_price_prefix(model: str, priced_as: str) -> None:
    found = load_prices().lookup(model)
    assert found is not None
    assert found[0] == priced_as


def test_prefix_matching_stops_at_name_boundaries() -> None:
    assert load_prices().lookup("gemini-2.5-flashy") is None


def test_unknown_model_costs_nothing_rather_than_failing_the_node() -> None:
    assert cost_usd("mystery-model", Usage(input_tokens=M, output_tokens=M)) == 0.0


def test_canonical_model_strips_paths_and_the_stub_suffix() -> None:
    assert canonical_model("publishers/google/models/gemini-2.5-pro~latency=1s") == "gemini-2.5-pro"


def test_override_file_replaces_named_models_and_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        {
            "as_of": "2030-01-01",
            "source": "our contract",
            "models": {
                "gemini-2.5-flash": {"input": 1.0, "output": 2.0, "cached": 0.5},
                "gemini-9-ultra": {"input": 10.0, "output": 20.0},
            },
        },
    )
    monkeypatch.setenv(ENV_PRICES, str(path))
    table = load_prices()
    assert (table.as_of, table.source) == ("2030-01-01", "our contract")
    usage = Usage(input_tokens=M, output_tokens=M, cached_tokens=M // 2)
    assert cost_usd("gemini-2.5-flash", usage) == pytest.approx(0.5 + 2.0 + 0.25)
    assert cost_usd("gemini-9-ultra-001", Usage(input_tokens=M)) == pytest.approx(10.0)
    assert cost_usd("gemini-2.5-pro", Usage(input_tokens=1000)) == pytest.approx(1000 * 1.25 / M)


def test_override_without_cached_price_bills_cached_tokens_as_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, {"models": {"gemini-x": {"input": 4.0, "output": 8.0}}})
    monkeypatch.setenv(ENV_PRICES, str(path))
    assert cost_usd("gemini-x", Usage(input_tokens=M, cached_tokens=M)) == pytest.approx(4.0)


def test_edited_override_file_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, {"models": {"gemini-x": {"input": 1.0, "output": 1.0}}})
    monkeypatch.setenv(ENV_PRICES, str(path))
    assert cost_usd("gemini-x", Usage(input_tokens=M)) == pytest.approx(1.0)
    path.write_text(json.dumps({"models": {"gemini-x": {"input": 3.0, "output": 1.0, "x": 1}}}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cost_usd("gemini-x", Usage(input_tokens=M)) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ([1, 2], "expected an object with a 'models' mapping"),
        (
            {"models": {"gemini-x": {"input": "cheap", "output": 1}}},
            "'input' must be a non-negative",
        ),
        ({"models": {"gemini-x": {"input": 1}}}, "'output' must be a non-negative number"),
        ({"models": {"gemini-x": {"input": 1, "output": 1, "long_context": 5}}}, "long_context"),
    ],
)
def test_malformed_override_says_what_was_expected_and_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: object, expected: str
) -> None:
    monkeypatch.setenv(ENV_PRICES, str(_write(tmp_path, table)))
    with pytest.raises(ValueError, match=re.escape(expected)) as caught:
        load_prices()
    assert ENV_PRICES in str(caught.value)


def test_missing_override_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PRICES, "/nonexistent/prices.json")
    with pytest.raises(ValueError, match=f"{ENV_PRICES} names '/nonexistent/prices.json'"):
        load_prices()
