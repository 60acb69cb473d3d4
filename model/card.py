"""The model card: one typed reader and writer of ``model_card.json``.

training/export.py writes it, the analyzer reads its flip-averaging choice and the
app shows it. Its top-level keys are the fields of :class:`ModelCard`; the sections
under them (metrics, data summary, training history) stay plain JSON dicts, as
training.metrics and training.summary build them. Keys a newer card carries that this
class does not know are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Paired t of hot minus random occlusion from which a heat map counts as pointing at what
#: matters: over 100-200 faces a map no better than random patches reaches it about 2.5% of the time.
MAP_TRUST_T: float = 2.0


@dataclass(frozen=True)
class MapCheck:
    """One head's heat maps checked by occlusion on one set of faces (training.gradcam_faithfulness):
    how much hiding the map's hottest pixels moved the explained output, against random blobs."""

    faces_label: str  # e.g. "200 UTKFace faces"
    faces: int
    drop_hot: float  # mean drop of the output (years for age, probability for the classes)
    drop_random: float
    t_stat: float  # paired t of hot minus random over the faces

    @property
    def trusted(self) -> bool:
        return map_verdict(self.t_stat) == "trusted"


def map_verdict(t_stat: float) -> str:
    """"trusted" (t >= MAP_TRUST_T), "unclear" (hot beat random on average, not clearly) or
    "against" (random patches mattered as much or more): the study's printout and the Explain
    page word the same three cases."""
    if t_stat >= MAP_TRUST_T:
        return "trusted"
    return "unclear" if t_stat > 0 else "against"


@dataclass
class ModelCard:
    """What a shipped model is, what it learned from and how well it does."""

    name: str = ""
    created: str = ""  # "%Y-%m-%d %H:%M:%S %Z" of the export
    architecture: str = ""
    input: dict[str, Any] = field(default_factory=dict)  # size, channels, dtype, crop
    labels: dict[str, list[str]] = field(default_factory=dict)  # gender, ethnicity, age_groups
    flip_tta: bool | None = None  # flip averaging, chosen on the validation split
    weights: str = ""  # where the exported weights came from
    model_sha256: str = ""  # of the exported model file: which file this card describes
    data: dict[str, Any] | None = None  # training.summary.summarize of the training data
    splits: dict[str, int] = field(default_factory=dict)  # faces per train / val / test
    # raw read-out with and without flip averaging: the flip choice; every other figure is calibrated
    validation_metrics: dict[str, Any] = field(default_factory=dict)  # {"flip_tta": ..., "plain": ...}
    # training.calibrate: fitted read-out corrections and validation figures before/after, per set
    calibration: dict[str, Any] = field(default_factory=dict)  # {"fitted": ..., "validation": ...}
    test_metrics: dict[str, Any] = field(default_factory=dict)  # training.metrics report of the first source
    evaluations: dict[str, Any] = field(default_factory=dict)  # source -> {"val", "test", "test_degraded"}
    framing_jitter: dict[str, Any] = field(default_factory=dict)  # source -> training.robustness.jitter_spread
    # source -> training.robustness.photo_jitter_spread: whole photos re-framed, detected and aligned
    photo_jitter: dict[str, Any] = field(default_factory=dict)
    # source -> training.robustness.hidden_hair_report plus "split": adults' gender with the hair greyed
    hidden_hair: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # minutes, machine, config, history
    # training.gradcam_faithfulness --card: {"fraction", "sets": {name: {"label", "faces", "results":
    # {method: {head: {"drop_hot", "drop_random", "wins", "t"}}}}}}
    faithfulness: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # keys this class does not know

    def gender_accuracy_at(self, age_group: str, min_faces: int = 30) -> tuple[float, int] | None:
        """(held-out gender accuracy, faces) of one age group on the test split; None when the
        card has fewer than ``min_faces`` there or predates the per-age-group breakdown."""
        row = ((self.test_metrics or {}).get("by_age_group") or {}).get(age_group) or {}
        accuracy, n = row.get("gender_accuracy"), int(row.get("n") or 0)
        return (float(accuracy), n) if accuracy is not None and n >= min_faces else None

    def map_checks(self, method: str, head: str) -> list[MapCheck]:
        """Occlusion checks of this method's maps for ``head``, one per face set the card holds
        (largest set first); empty when the model's maps were never checked."""
        checks = []
        for name, entry in ((self.faithfulness or {}).get("sets") or {}).items():
            row = ((entry.get("results") or {}).get(method) or {}).get(head)
            if row:
                t = row.get("t")
                checks.append(MapCheck(str(entry.get("label") or name), int(entry.get("faces") or 0),
                                       float(row["drop_hot"]), float(row["drop_random"]),
                                       float("nan") if t is None else float(t)))
        return sorted(checks, key=lambda c: -c.faces)

    def describes(self, model_path: str | Path) -> bool | None:
        """Whether this card was written for the file at ``model_path`` (by its SHA-256);
        None when the card predates the hash or the file cannot be read."""
        if not self.model_sha256:
            return None
        try:
            return file_sha256(model_path) == self.model_sha256
        except OSError:
            return None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in raw.items() if k in known},
                   extra={k: v for k, v in raw.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able dict, keys in field order (``extra`` merged in)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for key in ("calibration", "faithfulness", "model_sha256", "photo_jitter", "hidden_hair"):  # older cards lack these; keep them as they were
            if not out[key]:
                del out[key]
        return {**out, **self.extra}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def card_to_update(path: str | Path, model_path: str | Path | None = None) -> ModelCard:
    """The card at ``path``, read to add a study of ``model_path`` to it. ValueError when there is
    no readable card, or when the card was written for another model file (its model_sha256
    differs): a study describes the weights it ran on, so it must not land on another model's card."""
    card = read_card(path)
    if card is None:
        raise ValueError(f"no readable model card at {path}")
    if model_path is not None and card.describes(model_path) is False:
        raise ValueError(f"the card at {path} was written for another model file than {model_path} "
                         "(its model_sha256 differs): run the study with that card's model, or export this one")
    return card


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes. A model file (~13 MB) takes ~30 ms to hash and the Model
    page asks on every rerun, so the digest is remembered per path, size and modification time:
    a file written again (a new export) is hashed again."""
    stat = os.stat(path)
    return _sha256_of(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(path: str | Path | None = None) -> ModelCard | None:
    """The card at ``path`` (default ``settings.model_card_path()``); None when it is
    missing, not valid JSON or not a JSON object."""
    if path is None:
        from model import settings

        path = settings.model_card_path()
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return ModelCard.from_dict(raw) if isinstance(raw, dict) else None
