"""A small thread-safe least-recently-used cache, without TensorFlow.

Streamlit serves sessions from threads and the app shares one analyzer between them,
so the Grad-CAM maps (model.gradcam) and the analyzer's explanations (model.analyzer)
are kept in caches like this one: bounded, so memory cannot grow with use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class LRUCache:
    """A small thread-safe least-recently-used cache (Streamlit serves sessions from threads).

    ``maxsize`` bounds the entries; ``max_bytes`` with ``sizeof`` (an entry's size in bytes)
    also bounds their total, for entries whose size follows the photo (a 60-megapixel
    photo's heat map and overlay take 420 MB). The newest entry is always kept.
    """

    def __init__(self, maxsize: int, max_bytes: int | None = None, sizeof: Callable[[Any], int] | None = None):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if (max_bytes is None) != (sizeof is None):
            raise ValueError("give max_bytes and sizeof together")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._sizes: dict[Hashable, int] = {}
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if self._sizeof is not None:
                self._sizes[key] = int(self._sizeof(value))
            while len(self._data) > self.maxsize or (len(self._data) > 1 and self._over_budget()):
                old, _ = self._data.popitem(last=False)
                self._sizes.pop(old, None)

    def _over_budget(self) -> bool:
        return self.max_bytes is not None and self.nbytes > self.max_bytes

    @property
    def nbytes(self) -> int:
        """Total size of the entries (0 without ``sizeof``)."""
        return sum(self._sizes.values())

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._sizes.clear()

    def __len__(self) -> int:
        return len(self._data)
