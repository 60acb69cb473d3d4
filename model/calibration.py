"""Read-out corrections fitted on validation data at export and stored beside the model.

Three things the raw network output gets wrong off its home data, each fixed by a
small, monotone correction whose parameters live in ``<model>.calibration.npz``:

* age prior: the age distribution is divided by the training prior of ages raised
  to ``age_prior_power`` (logit adjustment). Training faces are mostly 20-40, which
  pulls old faces' answers young; dividing part of the prior out trades a little
  overall MAE for less bias over 60.
* interval width: the central-80% interval's lower and upper half-widths are each
  multiplied by their own ``a + b * max(u - 1, 0)``, where ``u`` is the face's
  unfamiliarity (:mod:`model.familiarity`), so the interval widens for faces unlike the
  training data. Two sides because the errors are lopsided off home: adults unlike the
  training faces are read too young far more often than too old, so the truth lies
  above the interval more often than below it.
* temperature: gender and ethnicity probabilities are tempered, ``p ** (1 / T)``
  renormalised, with ``T = a + b * max(u - 1, 0)``.
* ethnicity prior: the tempered ethnicity probabilities are divided by the training
  mix of ethnicities raised to ``ethnicity_prior_power`` (logit adjustment). UTKFace is
  43% white and 7% "other"; people who use the app are not mixed like that, and a
  network trained on that mix calls a rare group's faces by a common group's name.

Loads with numpy only. A model without a calibration file gets the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.familiarity import Familiarity
from model.postprocess import age_intervals, expected_age

#: Above this unfamiliarity (if the calibration has no own threshold), a face is flagged.
DEFAULT_WARN_ABOVE: float = math.inf

#: What the app, the CLI and the API say about a face far from the training data.
UNFAMILIAR_WARNING = "Unlike the photos this model learned from: treat these estimates with care."


def unfamiliarity_text(unfamiliarity: float) -> str:
    """The figure behind the warning, in words."""
    return (f"Unfamiliarity {unfamiliarity:.1f}: this face's features are {unfamiliarity:.1f} times as far from "
            "the training data as an ordinary validation face's.")


def linear_in_unfamiliarity(params: tuple[float, float], u: np.ndarray) -> np.ndarray:
    """``a + b * max(u - 1, 0)``: the form of every correction that grows with unfamiliarity."""
    a, b = params
    return a + b * np.maximum(np.asarray(u, np.float64) - 1.0, 0.0)


def _ordinary_if_unknown(unfamiliarity: np.ndarray) -> np.ndarray:
    """No measure (NaN): treat the face as an ordinary one (unfamiliarity 1)."""
    u = np.asarray(unfamiliarity, np.float64)
    return np.where(np.isnan(u), 1.0, u)


def temper(probabilities: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """(N, C) probabilities raised to 1/T per row and renormalised (T > 1 flattens)."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)
    t = np.maximum(np.asarray(temperature, np.float64), 1e-3).reshape(-1, 1)
    logp = np.log(p) / t
    logp -= logp.max(1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(1, keepdims=True)


def divide_prior(probabilities: np.ndarray, prior: np.ndarray, power: float) -> np.ndarray:
    """(N, C) probabilities divided by ``prior ** power`` per class and renormalised."""
    adjusted = np.asarray(probabilities, np.float64) / np.maximum(prior, 1e-12)[None, :] ** power
    return adjusted / np.maximum(adjusted.sum(1, keepdims=True), 1e-300)


def best_mean_power(scores: dict) -> str | float:
    """The key of the ethnicity prior power with the best mean of accuracy and balanced
    accuracy (``scores[power]["score"]``); ties go to the smaller power. Keys may be floats
    (training) or their strings (a card read from JSON): one rule for the chooser and the
    Model page, which cannot import ``training``."""
    return max(scores, key=lambda p: (scores[p]["score"], -float(p)))


def scale_intervals(centre: np.ndarray, intervals: np.ndarray, below: np.ndarray, above: np.ndarray,
                    low: float, high: float) -> np.ndarray:
    """Stretch each [lo, hi] around ``centre``: its lower half by ``below``, its upper half by
    ``above`` (per face), clipped to [low, high]."""
    centre = np.asarray(centre, np.float64)
    down = np.maximum(centre - intervals[:, 0], 0.0) * np.asarray(below, np.float64)
    up = np.maximum(intervals[:, 1] - centre, 0.0) * np.asarray(above, np.float64)
    return np.clip(np.stack([centre - down, centre + up], 1), low, high)


@dataclass(frozen=True)
class Calibration:
    familiarity: Familiarity | None = None
    age_prior: np.ndarray | None = None  # (K,) training prior over age bins, sums to 1
    age_prior_power: float = 0.0
    interval_below: tuple[float, float] = (1.0, 0.0)  # lower half-width scale: a + b * max(u - 1, 0)
    interval_above: tuple[float, float] = (1.0, 0.0)  # upper half-width scale
    gender_temperature: tuple[float, float] = (1.0, 0.0)
    ethnicity_temperature: tuple[float, float] = (1.0, 0.0)
    warn_above: float = DEFAULT_WARN_ABOVE
    ethnicity_prior: np.ndarray | None = None  # (5,) training mix over labels.ETHNICITIES, sums to 1
    ethnicity_prior_power: float = 0.0

    @property
    def is_identity(self) -> bool:
        return (self.familiarity is None and (self.age_prior is None or self.age_prior_power == 0)
                and self.interval_below == self.interval_above == (1.0, 0.0)
                and self.gender_temperature == (1.0, 0.0)
                and self.ethnicity_temperature == (1.0, 0.0)
                and (self.ethnicity_prior is None or self.ethnicity_prior_power == 0))

    def unfamiliarity(self, features: np.ndarray | None, n: int) -> np.ndarray:
        """(N,) unfamiliarity, or NaN when there is no familiarity model or no features."""
        if self.familiarity is None or features is None:
            return np.full(n, np.nan)
        return self.familiarity.unfamiliarity(features)

    def adjust_age_distribution(self, age_dist: np.ndarray) -> np.ndarray:
        dist = np.asarray(age_dist, np.float64)
        if self.age_prior is None or self.age_prior_power == 0 or not len(dist):
            return dist
        return divide_prior(dist, self.age_prior, self.age_prior_power)

    def adjust_ethnicity(self, ethnicity: np.ndarray) -> np.ndarray:
        """(N, 5) probabilities with part of the training mix divided out."""
        e = np.asarray(ethnicity, np.float64)
        if self.ethnicity_prior is None or self.ethnicity_prior_power == 0 or not len(e):
            return e
        return divide_prior(e, self.ethnicity_prior, self.ethnicity_prior_power)

    def apply(self, age_dist: np.ndarray, gender: np.ndarray, ethnicity: np.ndarray,
              features: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Raw head outputs -> corrected age distribution, age, interval, probabilities, unfamiliarity."""
        n = len(age_dist)
        u = self.unfamiliarity(features, n)
        known = _ordinary_if_unknown(u)
        dist = self.adjust_age_distribution(age_dist)
        age, interval = self.age_readout(dist, u)
        g = np.asarray(gender, np.float64)
        if n and self.gender_temperature != (1.0, 0.0):
            g = temper(g, linear_in_unfamiliarity(self.gender_temperature, known))
        e = self.adjust_ethnicity(self.tempered_ethnicity(ethnicity, u))
        return {"age_dist": dist, "age": age, "age_interval": interval, "gender": g, "ethnicity": e,
                "unfamiliarity": u}

    def tempered_ethnicity(self, ethnicity: np.ndarray, unfamiliarity: np.ndarray) -> np.ndarray:
        """(N, 5) probabilities tempered by unfamiliarity (NaN: an ordinary face), before the prior."""
        e = np.asarray(ethnicity, np.float64)
        if not len(e) or self.ethnicity_temperature == (1.0, 0.0):
            return e
        return temper(e, linear_in_unfamiliarity(self.ethnicity_temperature, _ordinary_if_unknown(unfamiliarity)))

    def age_readout(self, age_dist: np.ndarray, unfamiliarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, K) (already prior-adjusted) distributions -> expected ages and calibrated 80% intervals.

        Also used by the live video loop on its frame-smoothed distributions."""
        dist = np.asarray(age_dist, np.float64)
        if not len(dist):
            return np.zeros(0), np.zeros((0, 2))
        age, interval = expected_age(dist), age_intervals(dist)
        if not self.interval_below == self.interval_above == (1.0, 0.0):
            u = _ordinary_if_unknown(unfamiliarity)
            interval = scale_intervals(age, interval, linear_in_unfamiliarity(self.interval_below, u), linear_in_unfamiliarity(self.interval_above, u),
                                       0.0, dist.shape[1] - 1.0)
        return age, interval

    def is_unfamiliar(self, unfamiliarity: float) -> bool:
        return bool(np.isfinite(unfamiliarity) and unfamiliarity > self.warn_above)

    # -- storage --------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {
            "age_prior_power": np.float64(self.age_prior_power),
            "interval_below": np.asarray(self.interval_below, np.float64),
            "interval_above": np.asarray(self.interval_above, np.float64),
            "gender_temperature": np.asarray(self.gender_temperature, np.float64),
            "ethnicity_temperature": np.asarray(self.ethnicity_temperature, np.float64),
            "warn_above": np.float64(self.warn_above),
            "ethnicity_prior_power": np.float64(self.ethnicity_prior_power),
        }
        if self.age_prior is not None:
            arrays["age_prior"] = np.asarray(self.age_prior, np.float64)
        if self.ethnicity_prior is not None:
            arrays["ethnicity_prior"] = np.asarray(self.ethnicity_prior, np.float64)
        if self.familiarity is not None:
            arrays.update(self.familiarity.to_arrays())
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        with np.load(Path(path)) as data:
            pair = lambda name: tuple(float(v) for v in data[name]) if name in data else (1.0, 0.0)  # noqa: E731
            return cls(
                familiarity=Familiarity.from_arrays(data) if "familiarity_mean" in data else None,
                age_prior=np.asarray(data["age_prior"], np.float64) if "age_prior" in data else None,
                age_prior_power=float(data["age_prior_power"]) if "age_prior_power" in data else 0.0,
                # files written before the two sides were fitted apart hold one "interval_scale"
                interval_below=pair("interval_below" if "interval_below" in data else "interval_scale"),
                interval_above=pair("interval_above" if "interval_above" in data else "interval_scale"),
                gender_temperature=pair("gender_temperature"),
                ethnicity_temperature=pair("ethnicity_temperature"),
                warn_above=float(data["warn_above"]) if "warn_above" in data else DEFAULT_WARN_ABOVE,
                ethnicity_prior=np.asarray(data["ethnicity_prior"], np.float64) if "ethnicity_prior" in data else None,
                ethnicity_prior_power=float(data["ethnicity_prior_power"]) if "ethnicity_prior_power" in data else 0.0,
            )


def calibration_path(model_path: str | Path) -> Path:
    """``model/x.keras`` -> ``model/x.calibration.npz``."""
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".keras") + ".calibration.npz")


def load_for_model(model_path: str | Path | None) -> Calibration:
    """The calibration stored beside a model file, or the identity when there is none."""
    if model_path is None:
        return Calibration()
    path = calibration_path(model_path)
    return Calibration.load(path) if path.is_file() else Calibration()
