"""Dataset summary: the counts behind the dataset explorer and the model card.

A plain JSON-able dict, so the app can show the statistics of the data the shipped
model was trained on without having the data itself.
"""

from __future__ import annotations

from collections import Counter

from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS, age_group
from training.data import SPLITS, DataIndex, Sample


def _counts(values: list[str], order: tuple[str, ...]) -> dict[str, int]:
    counter = Counter(values)
    return {name: int(counter.get(name, 0)) for name in order}


def _crosstab(samples: list[Sample], rows: tuple[str, ...], cols: tuple[str, ...], row_of, col_of) -> dict[str, dict[str, int]]:
    table = {r: {c: 0 for c in cols} for r in rows}
    for s in samples:
        table[row_of(s)][col_of(s)] += 1
    return table


def _gender(s: Sample) -> str:
    return GENDERS[s.gender]


def _ethnicity(s: Sample) -> str:
    return ETHNICITIES[s.ethnicity]


def _age_group(s: Sample) -> str:
    return age_group(s.age)


def imbalance_ratio(counts: dict[str, int]) -> float | None:
    """Largest class count over smallest non-empty one (1.0 = balanced)."""
    nonzero = [c for c in counts.values() if c > 0]
    return round(max(nonzero) / min(nonzero), 3) if nonzero else None


def summarize_samples(samples: list[Sample]) -> dict:
    ages = Counter(s.age for s in samples)
    genders = _counts([_gender(s) for s in samples], GENDERS)
    ethnicities = _counts([_ethnicity(s) for s in samples], ETHNICITIES)
    groups = _counts([_age_group(s) for s in samples], AGE_GROUP_NAMES)
    return {
        "n": len(samples),
        "age_counts": {str(a): int(ages[a]) for a in sorted(ages)},
        "age_group_counts": groups,
        "gender_counts": genders,
        "ethnicity_counts": ethnicities,
        "gender_by_ethnicity": _crosstab(samples, GENDERS, ETHNICITIES, _gender, _ethnicity),
        "age_group_by_ethnicity": _crosstab(samples, AGE_GROUP_NAMES, ETHNICITIES, _age_group, _ethnicity),
        "imbalance": {
            "gender": imbalance_ratio(genders),
            "ethnicity": imbalance_ratio(ethnicities),
            "age_group": imbalance_ratio(groups),
        },
    }


def summarize(index: DataIndex) -> dict:
    """Whole-dataset summary with per-split sizes and the data-quality counts."""
    summary = summarize_samples(index.samples)
    summary["source"] = index.source
    summary["quality"] = index.quality()
    summary["splits"] = {split: len(index.by_split(split)) for split in SPLITS}
    return summary
