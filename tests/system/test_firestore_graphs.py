"""Stored graphs on the Firestore emulator: versions, dedupe, and names per owner."""

from __future__ import annotations

from typing import Any

import pytest

from agentgraph.backends.gcp.firestore_graphs import FirestoreGraphs

pytestmark = pytest.mark.emulator

GRAPH = {"name": "pair", "nodes": [{"id": "a", "tool": "noop"}]}


@pytest.fixture
def graphs(isolated_firestore: Any) -> FirestoreGraphs:
    return FirestoreGraphs(isolated_firestore)


async def test_a_new_definition_is_a_new_version_and_the_same_one_is_not(
    graphs: FirestoreGraphs,
) -> None:
    first, created = await graphs.save("ann", "pair", GRAPH, "h1")
    again, created_again = await graphs.save("ann", "pair", GRAPH, "h1")
    second, _ = await graphs.save("ann", "pair", {**GRAPH, "description": "v2"}, "h2")

    assert (first.version, created, again.version, created_again) == (1, True, 1, False)
    assert second.version == 2
    oldest = await graphs.get("ann", "pair", 1)
    latest = await graphs.get("ann", "pair")
    assert oldest is not None and oldest.definition == GRAPH
    assert latest is not None and (latest.version, latest.latest_version) == (2, 2)


async def test_names_are_per_owner_so_another_owners_name_is_neither_seen_nor_taken(
    graphs: FirestoreGraphs,
) -> None:
    await graphs.save("ann", "pair", GRAPH, "h1")
    bobs, created = await graphs.save("bob/with:odd chars", "pair", {**GRAPH, "x": 1}, "hb")

    assert created and bobs.version == 1 and bobs.owner == "bob/with:odd chars"
    assert await graphs.get("carol", "pair") is None
    anns = await graphs.get("ann", "pair")
    assert anns is not None and anns.definition == GRAPH
