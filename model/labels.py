"""The one label schema shared by training, the model, the app and the tests.

UTKFace encodes labels in file names as ``[age]_[gender]_[race]_[date].jpg``:
gender 0 = male, 1 = female; race 0..4 = white, black, asian, indian, other.
Everything that needs a label name, a code or an age group imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.settings import GENDER_UNSURE_BELOW

GENDERS: tuple[str, ...] = ("male", "female")


def gender_headline(gender: str, probability: float) -> str:
    """What a gender call is shown as: "Unsure" under the threshold of model.settings, else the name."""
    return "Unsure" if probability < GENDER_UNSURE_BELOW else gender.capitalize()


ETHNICITIES: tuple[str, ...] = ("white", "black", "asian", "indian", "other")

#: Human-readable ethnicity names for charts ("other" is UTKFace's catch-all:
#: Hispanic, Latino, Middle Eastern, ...).
ETHNICITY_DISPLAY: dict[str, str] = {
    "white": "White",
    "black": "Black",
    "asian": "Asian",
    "indian": "Indian",
    "other": "Other (Hispanic, Latino, Middle Eastern, ...)",
}

#: Ages the model can output. UTKFace labels run 1..116; bin 0 exists so that the
#: expected value of the age distribution can reach below 1 for newborns.
AGE_MIN: int = 0
AGE_MAX: int = 116
NUM_AGE_BINS: int = AGE_MAX - AGE_MIN + 1
#: Training weighs rare ages up per bin of this many years; ages 100 and over share the last bin.
AGE_WEIGHT_BIN_YEARS: int = 5
NUM_AGE_WEIGHT_BINS: int = 100 // AGE_WEIGHT_BIN_YEARS + 1

#: Which head predicts what; names match the model's output layers.
HEAD_NAMES: tuple[str, ...] = ("age", "gender", "ethnicity")
#: Class names per head; an empty tuple marks a regression head (no target class).
HEAD_CLASSES: dict[str, tuple[str, ...]] = {"age": (), "gender": GENDERS, "ethnicity": ETHNICITIES}


def check_head(head: str) -> tuple[str, ...]:
    """The head's class names (empty for age); ValueError for an unknown head."""
    if head not in HEAD_CLASSES:
        raise ValueError(f"unknown head {head!r}; expected one of {HEAD_NAMES}")
    return HEAD_CLASSES[head]


@dataclass(frozen=True)
class AgeGroup:
    """A closed age range [low, high] used for reports and per-group metrics."""

    name: str
    low: int
    high: int

    def contains(self, age: float) -> bool:
        return self.low <= age < self.high + 1


AGE_GROUPS: tuple[AgeGroup, ...] = (
    AgeGroup("0-2", 0, 2),
    AgeGroup("3-9", 3, 9),
    AgeGroup("10-19", 10, 19),
    AgeGroup("20-29", 20, 29),
    AgeGroup("30-39", 30, 39),
    AgeGroup("40-49", 40, 49),
    AgeGroup("50-59", 50, 59),
    AgeGroup("60-69", 60, 69),
    AgeGroup("70+", 70, AGE_MAX),
)
AGE_GROUP_NAMES: tuple[str, ...] = tuple(g.name for g in AGE_GROUPS)
_AGE_GROUP_LOWS = np.array([g.low for g in AGE_GROUPS], np.float64)
_AGE_GROUP_NAME_ARRAY = np.array(AGE_GROUP_NAMES)


def age_group_names(ages) -> np.ndarray:
    """:func:`age_group` of every age in an array, vectorised (the groups are contiguous)."""
    clipped = np.clip(np.asarray(ages, np.float64), AGE_MIN, AGE_MAX)
    return _AGE_GROUP_NAME_ARRAY[np.searchsorted(_AGE_GROUP_LOWS, clipped, side="right") - 1]


def age_group(age: float) -> str:
    """Name of the report age group holding ``age`` (clipped to the model's range)."""
    clipped = min(max(float(age), AGE_MIN), AGE_MAX)
    for group in AGE_GROUPS:
        if group.contains(clipped):
            return group.name
    raise AssertionError(f"age groups do not cover {clipped}")  # pragma: no cover


def gender_name(code: int) -> str:
    """UTKFace gender code (0 male, 1 female) to its name; ValueError if unknown."""
    if not 0 <= int(code) < len(GENDERS):
        raise ValueError(f"gender code must be 0..{len(GENDERS) - 1}, got {code}")
    return GENDERS[int(code)]


def ethnicity_name(code: int) -> str:
    """UTKFace race code (0..4) to its name; ValueError if unknown."""
    if not 0 <= int(code) < len(ETHNICITIES):
        raise ValueError(f"ethnicity code must be 0..{len(ETHNICITIES) - 1}, got {code}")
    return ETHNICITIES[int(code)]


def valid_age(age: int) -> bool:
    """True for ages UTKFace can label (1..116 years)."""
    return 1 <= int(age) <= AGE_MAX
