"""A graph file is built from libyaml's event stream (`documents._load_events`) in the
pass that screens it: the value must be exactly the one the safe loader builds, and
whatever that pass does not build itself goes to the safe loader."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgraph.core import documents
from agentgraph.core.documents import parse_yaml
from agentgraph.core.errors import RequestInvalid

pytestmark = pytest.mark.skipif(documents._C_LOADER is None, reason="needs libyaml")
LOADER: Any = documents._C_LOADER


def _safe(text: str) -> tuple[str, Any]:
    try:
        return "value", yaml.load(text, Loader=LOADER)
    except yaml.YAMLError:
        return "refused", None


def _ours(text: str) -> tuple[str, Any]:
    try:
        return "value", parse_yaml(text)
    except RequestInvalid:
        return "refused", None


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            _same(k, j) and _same(a[k], b[j]) for k, j in zip(a, b, strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


BUILT_FROM_EVENTS = [
    "",
    "a: 1",
    "plain text",
    "- 1\n- 2.5\n- true\n- no\n- null\n- ~\n- 0x1f\n- 0o17\n- 1_000\n- .inf\n- -.nan\n- 1e3",
    "- '12'\n- \"yes\"\n- 2001-12-14\n- 2001-12-14t21:59:43.10-05:00\n- 12:30:45\n- ''",
    "a: 1\na: 2",
    "{1: a, 2.0: b, null: c, true: d, 2024-01-02: e}",
    "[]",
    "{}",
    "a:\n  - b: |\n      multi\n      line\n    c: >\n      folded\n",
    "name: g\nnodes:\n- {id: a, tool: noop, args: {n: 1, f: 1.5, b: yes, d: 2024-01-02}}\n",
]
LEFT_TO_THE_SAFE_LOADER = [
    "a: {b: [1, 2]}\nb: !!str 12",
    "a: !!binary aGk=",
    "a: &anchor 1\nb: 2",
    "<<: {a: 1}\nb: 2",
    "base: {a: 1}\nc:\n  <<: {a: 2}\n  b: 3",
    "=: 1",
    "? [a]\n: 1",
    "? {a: 1}\n: 1",
    "--- 1\n--- 2",
    "a: !!set {x, y}",
    "!!omap [a: 1]",
]


@pytest.mark.parametrize("text", BUILT_FROM_EVENTS)
def test_plain_documents_are_built_from_the_events_as_the_safe_loader_builds_them(
    text: str,
) -> None:
    assert documents._load_events(text, LOADER) is not documents._UNSURE
    expected, got = _safe(text), _ours(text)
    assert expected[0] == got[0] == "value"
    assert _same(got[1], expected[1])


@pytest.mark.parametrize("text", LEFT_TO_THE_SAFE_LOADER)
def test_tags_anchors_merges_and_collection_keys_are_left_to_the_safe_loader(text: str) -> None:
    assert documents._load_events(text, LOADER) is documents._UNSURE
    expected, got = _safe(text), _ours(text)
    assert expected[0] == got[0]
    assert _same(got[1], expected[1])


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.dates()
    | st.datetimes(timezones=st.just(datetime.UTC))
    | st.sampled_from(["yes", "off", "~", "0x1a", "1_0", "1:20", "<<", "=", "-", "a: b", "#"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_scalars.filter(lambda k: k == k), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_values, flow=st.sampled_from([None, True, False]))
def test_any_document_reads_as_the_safe_loader_reads_it(value: Any, flow: bool | None) -> None:
    text = yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True)
    expected, got = _safe(text), _ours(text)
    assert expected[0] == got[0]
    assert _same(got[1], expected[1])
