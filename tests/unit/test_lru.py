"""The bounded memory of the engine and the stores (`core.lru.Lru`)."""

from __future__ import annotations

from agentgraph.core.lru import Lru


def test_the_least_recently_used_entry_goes_first_when_over_the_count() -> None:
    cache: Lru[str, int] = Lru(max_items=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)

    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3


def test_large_values_are_bounded_by_their_total_size() -> None:
    cache: Lru[str, str] = Lru(max_items=100, max_bytes=10, size=len)
    cache.put("a", "xxxx")
    cache.put("b", "xxxx")
    cache.put("c", "xxxx")  # 12 bytes: "a" must go

    assert "a" not in cache and len(cache) == 2 and cache.bytes == 8


def test_a_value_larger_than_the_whole_budget_is_not_kept() -> None:
    cache: Lru[str, str] = Lru(max_items=100, max_bytes=10, size=len)
    cache.put("small", "x")
    cache.put("huge", "x" * 11)

    assert "huge" not in cache and cache.get("small") == "x"


def test_replacing_or_popping_a_value_gives_its_bytes_back() -> None:
    cache: Lru[str, str] = Lru(max_items=100, max_bytes=10, size=len)
    cache.put("a", "xxxx")
    cache.put("a", "xx")
    assert cache.bytes == 2
    assert cache.pop("a") == "xx" and cache.bytes == 0 and cache.pop("a") is None
