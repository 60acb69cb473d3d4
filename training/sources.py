"""Labelled face sources with partial labels: UTKFace names, Kaggle CSV, ``labels.csv``
folders and FairFace's label CSV, read into one record type.

Every record may lack any label: an exact age, an inclusive age range
(``age_low``..``age_high``, e.g. FairFace's "30-39"), a gender or an ethnicity. The
split (train / val / test) is a pure function of the record's *group*: its
``identity`` where the source gives one (so no person is on both sides), else the
file's content hash (so identical images never straddle splits), exactly as for
UTKFace in :mod:`training.data`.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from model.labels import AGE_MAX, ETHNICITIES, GENDERS
from training.data import SPLIT_FRACTIONS, SPLITS, index_dataset, split_of

#: Label names accepted for gender (lower-cased); codes 0/1 follow UTKFace.
GENDER_ALIASES: dict[str, int] = {
    "male": 0, "m": 0, "man": 0, "0": 0,
    "female": 1, "f": 1, "woman": 1, "1": 1,
}
#: FairFace's 7 race classes mapped onto UTKFace's 5.
FAIRFACE_RACES: dict[str, str] = {
    "white": "white",
    "black": "black",
    "east asian": "asian",
    "southeast asian": "asian",
    "indian": "indian",
    "latino_hispanic": "other",
    "latino hispanic": "other",
    "middle eastern": "other",
}
ETHNICITY_ALIASES: dict[str, int] = {
    **{name: code for code, name in enumerate(ETHNICITIES)},
    **{str(code): code for code in range(len(ETHNICITIES))},
    **{k: ETHNICITIES.index(v) for k, v in FAIRFACE_RACES.items()},
    **{k.replace(" ", "_"): ETHNICITIES.index(v) for k, v in FAIRFACE_RACES.items()},
}


@dataclass(frozen=True)
class FaceRecord:
    """One labelled image of a source; any label may be missing (None)."""

    source: str
    name: str
    path: Path | None
    digest: str
    age: int | None = None
    age_low: int | None = None
    age_high: int | None = None
    gender: int | None = None
    ethnicity: int | None = None
    identity: str | None = None
    split: str = "train"
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def group(self) -> str:
        """What keeps a person on one side of the split: identity, else content."""
        return f"id:{self.identity}" if self.identity else f"sha:{self.digest}"


@dataclass
class SourceReport:
    """What a reader kept and what it skipped, and why (shown by the prepare step)."""

    source: str
    kind: str
    rows: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(example)


def split_of_group(group: str, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> str:
    """train / val / test from a hash of the group key (stable, deterministic)."""
    return split_of(hashlib.sha1(group.encode()).hexdigest(), fractions)


def parse_gender(text: str | None) -> int | None:
    """'male' / 'F' / '1' ... -> 0 or 1; None when blank. ValueError when unknown."""
    value = (text or "").strip().lower()
    if not value:
        return None
    if value not in GENDER_ALIASES:
        raise ValueError(f"unknown gender {text!r}")
    return GENDER_ALIASES[value]


def parse_ethnicity(text: str | None) -> int | None:
    """UTKFace names or codes, or FairFace's 7 race names -> 0..4; None when blank."""
    value = (text or "").strip().lower()
    if not value:
        return None
    if value not in ETHNICITY_ALIASES:
        raise ValueError(f"unknown ethnicity {text!r}")
    return ETHNICITY_ALIASES[value]


def parse_age_range(text: str | None) -> tuple[int, int] | None:
    """'34' -> (34, 34); '30-39' -> (30, 39); '70+' / 'more than 70' -> (70, 116); blank -> None."""
    value = (text or "").strip().lower()
    if not value:
        return None
    if value.startswith("more than "):
        value = value[len("more than "):] + "+"
    try:
        if value.endswith("+"):
            low, high = int(float(value[:-1])), AGE_MAX
        elif "-" in value.lstrip("-"):
            left, right = value.split("-", 1)
            low, high = int(float(left)), int(float(right))
        else:
            low = high = int(round(float(value)))
    except ValueError:
        raise ValueError(f"unparseable age {text!r}") from None
    if not (0 <= low <= high <= AGE_MAX):
        raise ValueError(f"age out of range {text!r}")
    return low, high


def _age_fields(age: str | None, low: str | None, high: str | None) -> tuple[int | None, int | None, int | None]:
    """(exact age, range low, range high) from a row's three age columns."""
    exact = parse_age_range(age)
    if exact is not None and exact[0] != exact[1]:  # a range written in the age column
        return None, exact[0], exact[1]
    lo, hi = parse_age_range(low), parse_age_range(high)
    if exact is not None:
        return exact[0], exact[0], exact[0]
    if lo is None and hi is None:
        return None, None, None
    low_v = lo[0] if lo else 0
    high_v = hi[1] if hi else AGE_MAX
    if low_v > high_v:
        raise ValueError(f"age_low {low!r} above age_high {high!r}")
    if low_v == high_v:
        return low_v, low_v, low_v
    return None, low_v, high_v


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return None


def read_labels_csv(
    folder: str | Path, source: str | None = None, *, group_by: str = "identity",
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> tuple[list[FaceRecord], SourceReport]:
    """A folder with ``labels.csv`` (file, age, age_low, age_high, gender, ethnicity,
    identity; any may be blank). ``group_by="age"`` treats images of one labelled age
    as one group, for folders whose README says each person sits under one age."""
    folder = Path(folder)
    table = folder / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{folder} has no labels.csv")
    source = source or folder.name
    report = SourceReport(source, "labels.csv")
    records: list[FaceRecord] = []
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if "file" not in (reader.fieldnames or []):
            raise ValueError(f"{table} lacks a 'file' column")
        for row in reader:
            report.rows += 1
            rel = (row.get("file") or "").strip()
            try:
                age, low, high = _age_fields(row.get("age"), row.get("age_low"), row.get("age_high"))
                gender = parse_gender(row.get("gender"))
                ethnicity = parse_ethnicity(row.get("ethnicity"))
            except ValueError as exc:
                report.skip("unparseable label", f"{rel}: {exc}")
                continue
            record = _record(folder, rel, source, report, age, low, high, gender, ethnicity,
                             (row.get("identity") or "").strip() or None)
            if record is not None:
                records.append(record)
    return _assign_splits(records, group_by, fractions), report


def read_fairface_csv(
    table: str | Path, source: str = "fairface", fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[list[FaceRecord], SourceReport]:
    """FairFace's own label CSV (``file,age,gender,race,service_test``); image paths
    are relative to the CSV's folder. Age groups become ranges; 7 races map to 5."""
    table = Path(table)
    folder = table.parent
    report = SourceReport(source, "fairface")
    records: list[FaceRecord] = []
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "age", "gender", "race"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{table} lacks FairFace columns: {sorted(missing)}")
        for row in reader:
            report.rows += 1
            rel = (row.get("file") or "").strip()
            try:
                age, low, high = _age_fields(row.get("age"), None, None)
                gender = parse_gender(row.get("gender"))
                ethnicity = parse_ethnicity(row.get("race"))
            except ValueError as exc:
                report.skip("unparseable label", f"{rel}: {exc}")
                continue
            record = _record(folder, rel, source, report, age, low, high, gender, ethnicity, None)
            if record is not None:
                records.append(record)
    return _assign_splits(records, "identity", fractions), report


def _record(folder, rel, source, report, age, low, high, gender, ethnicity, identity) -> FaceRecord | None:
    if not rel:
        report.skip("no file name", "(blank)")
        return None
    if age is None and low is None and gender is None and ethnicity is None:
        report.skip("no label", rel)
        return None
    path = folder / rel
    digest = _digest(path) if path.is_file() else None
    if digest is None:
        report.skip("missing or unreadable file", rel)
        return None
    report.kept += 1
    return FaceRecord(source, rel, path, digest, age, low, high, gender, ethnicity, identity)


def _assign_splits(records: list[FaceRecord], group_by: str, fractions) -> list[FaceRecord]:
    def key(r: FaceRecord) -> str:
        if group_by == "age" and r.age_low is not None:
            return f"{r.source}:age:{r.age_low}-{r.age_high}"
        return f"{r.source}:{r.group}"

    return [replace(r, split=split_of_group(key(r), fractions)) for r in records]


def read_utkface(source_path: str | Path, source: str = "utkface") -> tuple[list[FaceRecord], SourceReport]:
    """UTKFace file names or the Kaggle CSV, with :mod:`training.data`'s dedupe and split."""
    index = index_dataset(source_path)
    report = SourceReport(source, "utkface", rows=index.files_seen, kept=len(index.samples))
    for reason, count in (("unparseable name", index.unparseable), ("unreadable file", index.unreadable),
                          ("duplicate", index.duplicates_removed), ("conflicting duplicate", index.conflicting_removed)):
        if count:
            report.skipped[reason] = count
    records = [
        FaceRecord(source, s.name, s.path, s.digest, s.age, s.age, s.age, s.gender, s.ethnicity,
                   None, s.split, s.pixels)
        for s in index.samples
    ]
    return records, report


def source_kind(path: str | Path) -> str:
    """'labels.csv', 'fairface' or 'utkface' (UTKFace names or the Kaggle CSV), from the layout alone."""
    path = Path(path)
    if path.is_dir() and (path / "labels.csv").is_file():
        return "labels.csv"
    if path.is_file() and path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if "race" in header and "file" in header:
            return "fairface"
    return "utkface"


def read_source(path: str | Path, source: str | None = None, **options) -> tuple[list[FaceRecord], SourceReport]:
    """Whichever layout ``path`` is: a ``labels.csv`` folder, a FairFace CSV, a Kaggle
    CSV or a UTKFace folder."""
    path = Path(path)
    kind = source_kind(path)
    if kind == "labels.csv":
        return read_labels_csv(path, source, **options)
    if kind == "fairface":
        return read_fairface_csv(path, source or "fairface", options.get("fractions", SPLIT_FRACTIONS))
    return read_utkface(path, source or path.name.lower())


def label_arrays(records: Iterable[FaceRecord]) -> dict[str, np.ndarray]:
    """Per-record label arrays for training; -1 marks a missing label.

    ``age`` is the exact age (or -1); ``age_low``/``age_high`` bound it (equal to
    ``age`` for an exact label, a range for group labels, -1 when there is none).
    """
    records = list(records)

    def column(get) -> np.ndarray:
        return np.array([-1 if get(r) is None else get(r) for r in records], np.int32)

    return {
        "age": column(lambda r: r.age),
        "age_low": column(lambda r: r.age_low),
        "age_high": column(lambda r: r.age_high),
        "gender": column(lambda r: r.gender),
        "ethnicity": column(lambda r: r.ethnicity),
    }


def describe(records: list[FaceRecord]) -> dict:
    """Counts per split and per label kind (JSON-able)."""
    arrays = label_arrays(records)
    splits = np.array([r.split for r in records])
    return {
        "n": len(records),
        "splits": {s: int((splits == s).sum()) for s in SPLITS},
        "with_exact_age": int((arrays["age"] >= 0).sum()),
        "with_age_range": int(((arrays["age"] < 0) & (arrays["age_low"] >= 0)).sum()),
        "with_gender": int((arrays["gender"] >= 0).sum()),
        "with_ethnicity": int((arrays["ethnicity"] >= 0).sum()),
        "identities": len({r.identity for r in records if r.identity}),
        "genders": {name: int((arrays["gender"] == code).sum()) for code, name in enumerate(GENDERS)},
    }
