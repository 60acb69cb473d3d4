"""Data layer: read UTKFace (folder or Kaggle CSV), drop duplicates, split by content.

Survives the quirks of real UTKFace copies: names that lack a field or carry a
stray space are skipped and counted; byte-identical images under several names are
collapsed (groups whose labels disagree are dropped and counted); the split is a
pure function of each image's content hash, so identical images always land on the
same side and adding files never moves existing ones.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.image_io import IMAGE_SUFFIXES
from model.labels import ETHNICITIES, GENDERS, valid_age

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Fractions of the hash space per split (train / val / test).
SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Labels:
    age: int
    gender: int
    ethnicity: int


@dataclass(frozen=True)
class Sample:
    """One labelled face: a file on disk or a pixel array (Kaggle CSV)."""

    name: str
    age: int
    gender: int
    ethnicity: int
    digest: str
    path: Path | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def labels(self) -> Labels:
        return Labels(self.age, self.gender, self.ethnicity)

    @property
    def split(self) -> str:
        return split_of(self.digest)


@dataclass
class DataIndex:
    """Samples kept after cleaning, plus the counts of what was dropped and why."""

    samples: list[Sample]
    source: str
    files_seen: int = 0
    unparseable: int = 0
    unparseable_examples: list[str] = field(default_factory=list)
    unreadable: int = 0
    duplicate_groups: int = 0
    duplicates_removed: int = 0
    conflicting_groups: int = 0
    conflicting_removed: int = 0

    def by_split(self, split: str) -> list[Sample]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [s for s in self.samples if s.split == split]

    def quality(self) -> dict[str, int | list[str]]:
        return {
            "files_seen": self.files_seen,
            "kept": len(self.samples),
            "unparseable_names": self.unparseable,
            "unparseable_examples": self.unparseable_examples[:10],
            "unreadable_files": self.unreadable,
            "duplicate_groups": self.duplicate_groups,
            "duplicates_removed": self.duplicates_removed,
            "conflicting_label_groups": self.conflicting_groups,
            "conflicting_removed": self.conflicting_removed,
        }


def parse_utkface_name(name: str) -> Labels | None:
    """Labels from ``[age]_[gender]_[race]_[date].jpg...``; None when the name doesn't parse.

    Stray whitespace around fields is tolerated; a missing field, a non-number,
    an age outside 1..116 or an unknown code is not.
    """
    parts = Path(name).name.split("_")
    if len(parts) < 4:
        return None
    try:
        age, gender, race = (int(p.strip()) for p in parts[:3])
    except ValueError:
        return None
    date = parts[3].strip()
    if not date[:1].isdigit():
        return None
    if not valid_age(age) or gender not in range(len(GENDERS)) or race not in range(len(ETHNICITIES)):
        return None
    return Labels(age, gender, race)


def split_of(digest: str, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> str:
    """train / val / test from a hex hash: deterministic and stable under additions."""
    position = int(digest[:8], 16) / 0x1_0000_0000
    cumulative = 0.0
    for split, fraction in zip(SPLITS, fractions):
        cumulative += fraction
        if position < cumulative:
            return split
    return SPLITS[-1]


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _dedupe(samples: Iterable[Sample], index: DataIndex, dedupe: bool = True) -> list[Sample]:
    """Keep one sample per content hash; drop whole groups whose labels disagree.

    With ``dedupe=False`` (evaluation of a given folder) every sample is kept, but
    duplicate and conflicting groups are still counted (nothing is removed).
    """
    samples = list(samples)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.digest].append(sample)
    kept: list[Sample] = []
    for members in groups.values():
        if len(members) == 1:
            kept.append(members[0])
            continue
        index.duplicate_groups += 1
        if len({m.labels for m in members}) > 1:
            index.conflicting_groups += 1
            index.conflicting_removed += len(members) if dedupe else 0
            continue
        index.duplicates_removed += len(members) - 1 if dedupe else 0
        kept.append(min(members, key=lambda s: s.name))
    if not dedupe:
        kept = samples
    kept.sort(key=lambda s: s.name)
    return kept


def index_utkface_dir(directory: str | Path, progress: Progress | None = None, dedupe: bool = True) -> DataIndex:
    """Index a UTKFace folder (labels from file names). Never raises on bad files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a folder: {directory}")
    paths = sorted(
        p for p in directory.rglob("*") if p.is_file() and _looks_like_image(p.name)
    )
    index = DataIndex(samples=[], source=str(directory), files_seen=len(paths))
    raw: list[Sample] = []
    for i, path in enumerate(paths):
        if progress is not None and (i % 200 == 0 or i == len(paths) - 1):
            progress(i + 1, len(paths))
        labels = parse_utkface_name(path.name)
        if labels is None:
            index.unparseable += 1
            index.unparseable_examples.append(path.name)
            continue
        try:
            digest = file_digest(path)
        except OSError:
            index.unreadable += 1
            continue
        raw.append(Sample(path.name, labels.age, labels.gender, labels.ethnicity, digest, path=path))
    index.samples = _dedupe(raw, index, dedupe)
    return index


def sample_split(directory: str | Path, split: str, n: int, seed: int = 0) -> list[Sample]:
    """``n`` random samples of one split of a UTKFace folder, in file order (for checks
    and measurements that look at a subset, reproducibly)."""
    pool = [s for s in index_utkface_dir(directory).samples if s.split == split]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]


def _looks_like_image(name: str) -> bool:
    lowered = name.lower().rstrip()
    return any(lowered.endswith(s) or f"{s} " in lowered or f"{s}." in lowered for s in IMAGE_SUFFIXES)


def index_kaggle_csv(path: str | Path, progress: Progress | None = None, dedupe: bool = True) -> DataIndex:
    """Index the Kaggle CSV form (``age,ethnicity,gender,img_name,pixels``; 48x48 gray).

    Rows with bad labels or a pixel string that is not a square image are skipped
    and counted as unparseable.
    """
    path = Path(path)
    csv.field_size_limit(sys.maxsize)
    index = DataIndex(samples=[], source=str(path))
    raw: list[Sample] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"age", "ethnicity", "gender", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} lacks CSV columns: {sorted(missing)}")
        for row_number, row in enumerate(reader):
            index.files_seen += 1
            if progress is not None and row_number % 1000 == 0:
                progress(row_number + 1, 0)
            name = (row.get("img_name") or f"row{row_number}").strip()
            pixels = _parse_pixels(row.get("pixels", ""))
            try:
                age, gender, race = int(row["age"]), int(row["gender"]), int(row["ethnicity"])
            except (TypeError, ValueError):
                pixels = None
            if (
                pixels is None
                or not valid_age(age)
                or gender not in range(len(GENDERS))
                or race not in range(len(ETHNICITIES))
            ):
                index.unparseable += 1
                index.unparseable_examples.append(name)
                continue
            digest = hashlib.sha1(pixels.tobytes()).hexdigest()
            raw.append(Sample(name, age, gender, race, digest, pixels=pixels))
    index.samples = _dedupe(raw, index, dedupe)
    return index


def _parse_pixels(text: str) -> np.ndarray | None:
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        return None
    side = int(round(np.sqrt(values.size)))
    if values.size == 0 or side * side != values.size or values.min() < 0 or values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(side, side)


def index_dataset(source: str | Path, progress: Progress | None = None, dedupe: bool = True) -> DataIndex:
    """A UTKFace folder or a Kaggle-style CSV file, whichever ``source`` is."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return index_kaggle_csv(source, progress, dedupe)
    return index_utkface_dir(source, progress, dedupe)


def load_rgb(sample: Sample) -> np.ndarray | None:
    """Decode a sample to HxWx3 uint8 RGB (through model.image_io, as the app decodes
    uploads); None if the file is unreadable or truncated."""
    if sample.pixels is not None:
        return np.repeat(sample.pixels[:, :, None], 3, axis=2)
    from model.image_io import ImageError, load_image

    assert sample.path is not None
    try:
        return load_image(sample.path)
    except ImageError:
        return None
