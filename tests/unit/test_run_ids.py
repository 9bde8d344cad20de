"""Run ids: unique, URL-safe, valid Firestore document ids, and not ordered by time.

Firestore's guidance is to avoid monotonically increasing document ids: they all land
on the last split of the key range, which then takes every new run's writes."""

from __future__ import annotations

import re
import string

from agentgraph.core.messages import RUN_ID_PATTERN
from agentgraph.engine import new_run_id

_START = 1_800_000_000.0


def test_run_ids_made_one_second_apart_are_not_in_creation_order() -> None:
    ids = [new_run_id(_START + i) for i in range(200)]
    assert ids != sorted(ids)


def test_the_leading_characters_of_run_ids_are_spread_over_the_key_range() -> None:
    leading = {new_run_id(_START)[0] for _ in range(500)}
    assert leading == set("0123456789abcdef")


def test_run_ids_made_in_the_same_second_are_unique() -> None:
    assert len({new_run_id(_START) for _ in range(10_000)}) == 10_000


def test_run_ids_are_url_safe_valid_document_ids_that_the_api_routes() -> None:
    for i in range(1000):
        run_id = new_run_id(_START + i)
        assert set(run_id) <= set(string.ascii_lowercase + string.digits + "-")
        assert re.fullmatch(RUN_ID_PATTERN, run_id)
        assert not (run_id.startswith("__") and run_id.endswith("__"))
        assert len(run_id.encode()) <= 1500


def test_run_ids_still_say_when_the_run_was_made_for_people_reading_logs() -> None:
    assert new_run_id(_START).endswith("-20270115-080000")
