"""The demo's code-review tools work on real Python source."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgraph.tools.code_review import (
    complexity,
    detect_issues,
    extract_functions,
    suggest_improvements,
)

SAMPLE = (Path(__file__).parents[2] / "examples" / "sample_code.py").read_text()


def test_extract_functions_finds_every_function_with_its_span() -> None:
    found = extract_functions(SAMPLE)
    assert [f["name"] for f in found["functions"]] == ["load", "classify", "_helper"]
    assert found["functions"][0]["args"] == ["path", "cache"]


def test_complexity_counts_branches_and_boolean_operators() -> None:
    result = complexity(
        extract_functions("def f(x):\n    if x and x > 1:\n        return 1\n    return 0\n")[
            "functions"
        ]
    )
    assert result == {"per_function": {"f": 3}, "max": 3, "worst": "f"}


def test_detect_issues_flags_the_classic_mistakes() -> None:
    kinds = {i["kind"] for i in detect_issues(SAMPLE)}
    assert {
        "bare-except",
        "mutable-default",
        "print",
        "none-comparison",
        "too-many-args",
        "missing-docstring",
    } <= kinds


def test_suggestions_are_prioritised_and_scored() -> None:
    issues = detect_issues(SAMPLE)
    result = suggest_improvements(issues, complexity(extract_functions(SAMPLE)["functions"]))
    assert result["score"] < 100 and len(result["suggestions"]) == len(issues)


def test_source_that_does_not_parse_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="does not parse: line 1"):
        extract_functions("def (:")
