"""Decoded-image cache: decode and resize every face once, not once per epoch.

Two CPU cores spend more time decoding JPEGs than training if a pipeline decodes
per epoch. The cache holds ``prepare_face`` output (uint8, N x S x S x 3) in one
.npy file keyed by the samples' content hashes and the input size.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.preprocess import prepare_face
from training.data import Sample, load_rgb

CACHE_VERSION = 1


def cache_key(samples: list[Sample], size: int) -> str:
    digest = hashlib.sha1(f"v{CACHE_VERSION}-{size}".encode())
    for s in samples:
        digest.update(s.digest.encode())
    return digest.hexdigest()[:16]


def decode_samples(samples: list[Sample], size: int, desc: str = "decode") -> tuple[np.ndarray, np.ndarray]:
    """(images, ok): prepared faces and a mask of samples that decoded."""
    images = np.zeros((len(samples), size, size, 3), np.uint8)
    ok = np.zeros(len(samples), bool)
    for i, sample in enumerate(tqdm(samples, desc=desc, unit="img", mininterval=2.0)):
        rgb = load_rgb(sample)
        if rgb is None:
            continue
        images[i] = prepare_face(rgb, size)
        ok[i] = True
    return images, ok


def cached_images(samples: list[Sample], size: int, cache_dir: Path | None, desc: str = "decode") -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`decode_samples`, reusing ``cache_dir/<key>.npz`` when present."""
    if cache_dir is None:
        return decode_samples(samples, size, desc)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"faces_{size}_{cache_key(samples, size)}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["images"], data["ok"]
    images, ok = decode_samples(samples, size, desc)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # workers sharing the cache write apart
    np.savez(tmp, images=images, ok=ok)
    tmp.replace(path)
    return images, ok
