"""Shared fixtures: tiny generated UTKFace-style data, an untrained model of the
shipped shape, and the marker that skips tests needing ../shared when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model import settings  # noqa: E402

SHARED_UTKFACE = settings.SHARED_DATA_DIR / "utkface" / "UTKFace"
SHARED_WEIGHTS = settings.SHARED_DATA_DIR / "weights" / "mobilenet_v2_1.0_imagenet_notop.weights.h5"


def pytest_configure(config):
    """Caches (decoded images, LiteRT conversions of the many throwaway test models) go to
    a folder of this session, never into the user's ~/.cache/facelens."""
    import tempfile

    os.environ["FACELENS_CACHE"] = tempfile.mkdtemp(prefix="facelens-test-cache-")
    config._facelens_cache = os.environ["FACELENS_CACHE"]


def pytest_unconfigure(config):
    import shutil

    folder = getattr(config, "_facelens_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if SHARED_UTKFACE.is_dir() and SHARED_WEIGHTS.is_file():
        return
    skip = pytest.mark.skip(reason=f"needs ../shared/data (real UTKFace + ImageNet weights), not found at {settings.SHARED_DATA_DIR}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


def synthetic_face(rng: np.random.Generator, size: int = 200, tone: int = 180) -> np.ndarray:
    """A crude face-like RGB image (skin ellipse, eyes, mouth) with noise; uint8."""
    import cv2

    img = np.full((size, size, 3), rng.integers(40, 200, 3), np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c), (size // 3, size * 2 // 5), 0, 0, 360, (tone, tone - 40, tone - 70), -1)
    for dx in (-size // 7, size // 7):
        cv2.circle(img, (c + dx, c - size // 10), size // 20, (30, 30, 30), -1)
    cv2.ellipse(img, (c, c + size // 6), (size // 8, size // 20), 0, 0, 360, (120, 40, 50), -1)
    noise = rng.integers(-12, 12, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def write_utkface_folder(folder: Path, n: int = 40, seed: int = 0) -> list[Path]:
    """A small UTKFace-style folder of synthetic JPEGs with parseable names."""
    import cv2

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        age = int(rng.integers(1, 90))
        gender = int(rng.integers(0, 2))
        race = int(rng.integers(0, 5))
        img = synthetic_face(rng, tone=120 + 25 * race)
        path = folder / f"{age}_{gender}_{race}_2017011{i:010d}.jpg.chip.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def utkface_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("utkface")
    write_utkface_folder(folder, n=48)
    return folder


@pytest.fixture(scope="session")
def untrained_model():
    """The shipped architecture with random weights (no download, a few seconds)."""
    from model.architecture import build_model

    return build_model(settings.INPUT_SIZE)


@pytest.fixture(scope="session")
def untrained_model_path(tmp_path_factory, untrained_model) -> Path:
    path = tmp_path_factory.mktemp("model") / "untrained.keras"
    untrained_model.save(path)
    return path
