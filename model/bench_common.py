"""The benchmark photo and the timers every benchmark shares (pipeline, Grad-CAM, live video),
so their figures are measured on the same pixels in the same way."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

import numpy as np


def bench_photo(width: int = 640, height: int = 480) -> np.ndarray:
    """The astronaut portrait resized to ``height`` and edge-padded to ``width`` (RGB uint8)."""
    import cv2
    from skimage import data

    image = data.astronaut()
    image = cv2.resize(image, (height, height), interpolation=cv2.INTER_AREA)
    pad = width - height
    return cv2.copyMakeBorder(image, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REPLICATE)


def jpeg_bytes(photo: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of ``fn``: the median of ``repeats`` runs after one warm-up run
    (tracing and first-call allocations)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
