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


def test_lru_cache_keeps_its_entries_within_a_byte_budget_but_always_the_newest():
    import numpy as np
    import pytest

    cache = LRUCache(10, max_bytes=1000, sizeof=lambda a: a.nbytes)
    for key in "abc":
        cache.put(key, np.zeros(400, np.uint8))
    assert len(cache) == 2 and cache.get("a") is None and cache.nbytes == 800
    cache.put("huge", np.zeros(5000, np.uint8))  # over the budget alone: kept, the rest go
    assert len(cache) == 1 and cache.get("huge") is not None and cache.nbytes == 5000
    cache.put("huge", np.zeros(10, np.uint8))  # replacing an entry counts its new size
    assert cache.nbytes == 10
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0
    with pytest.raises(ValueError, match="together"):
        LRUCache(2, max_bytes=10)
