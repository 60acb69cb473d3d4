"""Dataset explorer data: index a UTKFace folder into the model card's summary and a
per-face table, pick filtered samples and thumbnails. The figures and display tables
are in ui.dataset_charts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model.labels import ETHNICITIES, GENDERS, age_group
from training.data import DataIndex, Progress, index_utkface_dir
from training.summary import summarize

#: Columns of the per-face table of an indexed folder.
SAMPLE_COLUMNS: tuple[str, ...] = ("name", "path", "age", "age_group", "gender", "ethnicity", "split")


def index_folder(folder: str | Path, progress: Progress | None = None) -> tuple[dict, pd.DataFrame]:
    """Index a UTKFace folder: (summary as on the model card, one row per kept face)."""
    index = index_utkface_dir(folder, progress=progress)
    return summarize(index), samples_frame(index)


def samples_frame(index: DataIndex) -> pd.DataFrame:
    rows = [
        (s.name, str(s.path) if s.path else "", s.age, age_group(s.age), GENDERS[s.gender], ETHNICITIES[s.ethnicity],
         s.split)
        for s in index.samples
    ]
    return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))


def filter_samples(frame: pd.DataFrame, genders: list[str] | None = None, ethnicities: list[str] | None = None,
                   ages: tuple[int, int] | None = None, limit: int = 24, seed: int = 0) -> pd.DataFrame:
    """A random (seeded) subset of at most ``limit`` faces matching the filters."""
    keep = pd.Series(True, index=frame.index)
    if genders:
        keep &= frame["gender"].isin(genders)
    if ethnicities:
        keep &= frame["ethnicity"].isin(ethnicities)
    if ages:
        keep &= frame["age"].between(ages[0], ages[1])
    matched = frame[keep]
    if len(matched) > limit:
        matched = matched.sample(n=limit, random_state=seed)
    return matched.sort_values(["age", "name"])


def thumbnail(path: str | Path, size: int = 120) -> np.ndarray | None:
    """A small RGB thumbnail of a dataset image; None if it does not decode."""
    import cv2

    from model.image_io import ImageError, load_image

    try:
        image = load_image(path)
    except ImageError:
        return None
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
