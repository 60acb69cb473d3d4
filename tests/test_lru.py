"""model.lru: the bounded cache behind Grad-CAM maps and the analyzer's explanations."""

from __future__ import annotations

from model.lru import LRUCache


def test_lru_cache_evicts_the_least_recently_used():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2
    assert cache.get_or_compute("d", lambda: 4) == 4 and cache.get("c") is None
