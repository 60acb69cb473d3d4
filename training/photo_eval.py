"""Evaluate a labelled folder of whole photos through the app's whole pipeline.

Every photo goes through :meth:`FaceAnalyzer.analyze` exactly as an upload does
(intake, MTCNN, alignment, the compiled model call); the biggest face found is
taken as the labelled person. Used by ``python -m training.evaluate --photos DIR``.
"""

from __future__ import annotations

import sys

import numpy as np

from model.labels import AGE_GROUP_NAMES, AGE_GROUPS, ETHNICITIES, GENDERS, age_group, age_group_names
from model.settings import GENDER_UNSURE_BELOW
from training.metrics import _rounded, confusion_matrix
from training.sources import FaceRecord


def group_index(age: float) -> int:
    return AGE_GROUP_NAMES.index(age_group(age))


def label_group(record: FaceRecord) -> int | None:
    """The report age group of a record's label: exact ages, or a range that fits in one group."""
    if record.age is not None:
        return group_index(record.age)
    if record.age_low is None:
        return None
    low, high = group_index(record.age_low), group_index(record.age_high)
    return low if low == high else None


def analyze_records(analyzer, records: list[FaceRecord], progress: bool = True) -> list[dict | None]:
    """Per record: the biggest face's result dict (FaceResult.to_dict()), or None when no face."""
    from tqdm import tqdm

    from model.image_io import ImageError

    out: list[dict | None] = []
    for record in tqdm(records, desc="analyze photos", unit="photo", disable=not progress, file=sys.stderr,
                       mininterval=2.0):
        try:
            faces = analyzer.analyze(record.path if record.pixels is None else record.pixels)
        except (ImageError, ValueError):
            faces = []
        if not faces:
            out.append(None)
            continue
        biggest = max(faces, key=lambda f: f.box[2] * f.box[3])
        out.append(biggest.to_dict())
    return out


def photo_report(records: list[FaceRecord], results: list[dict | None]) -> dict:
    """Detection rate, age MAE/bias per group, 9-group accuracy, gender per age group,
    ethnicity confusion and the share of 'Unsure' gender calls, as one JSON-able dict."""
    found = [(r, res) for r, res in zip(records, results) if res is not None]
    report: dict = {
        "photos": len(records),
        "detected": len(found),
        "detection_rate": _rounded(len(found) / len(records)) if records else None,
    }
    exact = [(r, res) for r, res in found if r.age is not None]
    if exact:
        true = np.array([r.age for r, _ in exact], np.float64)
        pred = np.array([res["age"] for _, res in exact], np.float64)
        groups = age_group_names(true)
        report["age_mae"] = _rounded(np.abs(pred - true).mean())
        report["age_bias"] = _rounded((pred - true).mean())
        low = np.array([res["age_interval"][0] for _, res in exact])
        high = np.array([res["age_interval"][1] for _, res in exact])
        report["age_interval_coverage"] = _rounded(((true >= low) & (true <= high)).mean())
        report["age_by_group"] = {
            g: {"n": int((groups == g).sum()), "mae": _rounded(np.abs(pred - true)[groups == g].mean()),
                "bias": _rounded((pred - true)[groups == g].mean())}
            for g in AGE_GROUP_NAMES if (groups == g).any()
        }
    grouped = [(label_group(r), group_index(res["age"])) for r, res in found if label_group(r) is not None]
    if grouped:
        true_g = np.array([t for t, _ in grouped])
        pred_g = np.array([p for _, p in grouped])
        report["age_group_accuracy"] = _rounded((true_g == pred_g).mean())
        report["age_group_within_one"] = _rounded((np.abs(true_g - pred_g) <= 1).mean())
        report["age_group_confusion"] = {"labels": list(AGE_GROUP_NAMES),
                                         "matrix": confusion_matrix(true_g, pred_g, len(AGE_GROUPS))}
    gendered = [(r, res) for r, res in found if r.gender is not None]
    if gendered:
        true = np.array([r.gender for r, _ in gendered])
        pred = np.array([GENDERS.index(res["gender"]) for _, res in gendered])
        sure = np.array([res["gender_probability"] >= GENDER_UNSURE_BELOW for _, res in gendered])
        report["gender_accuracy"] = _rounded((true == pred).mean())
        report["gender_unsure_share"] = _rounded(1.0 - sure.mean())
        report["gender_accuracy_when_sure"] = _rounded((true == pred)[sure].mean()) if sure.any() else None
        report["gender_recall"] = {name: _rounded((pred[true == c] == c).mean()) for c, name in enumerate(GENDERS)
                                   if (true == c).any()}
        by_group: dict = {}
        for (r, _res), t, p in zip(gendered, true, pred):
            g = label_group(r)
            if g is None:
                continue
            name = AGE_GROUP_NAMES[g]
            entry = by_group.setdefault(name, [0, 0])
            entry[0] += int(t == p)
            entry[1] += 1
        report["gender_accuracy_by_age_group"] = {
            g: {"n": by_group[g][1], "accuracy": _rounded(by_group[g][0] / by_group[g][1])}
            for g in AGE_GROUP_NAMES if g in by_group
        }
    ethnic = [(r, res) for r, res in found if r.ethnicity is not None]
    if ethnic:
        true = np.array([r.ethnicity for r, _ in ethnic])
        pred = np.array([ETHNICITIES.index(res["ethnicity"]) for _, res in ethnic])
        report["ethnicity_accuracy"] = _rounded((true == pred).mean())
        report["ethnicity_confusion"] = {"labels": list(ETHNICITIES),
                                         "matrix": confusion_matrix(true, pred, len(ETHNICITIES))}
    return report
