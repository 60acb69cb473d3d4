"""Fit the read-out corrections of :mod:`model.calibration` on training and validation faces.

Run by the export (``python -m training.train ... --output`` or ``--export-from``),
after the model is chosen and before anything is evaluated, so every figure on the
model card is for the answers the app shows. Nothing here looks at a test split:

* familiarity: the pooled features of training faces drawn as training drew them
  (source weights), with the home source's validation faces as the unit;
* age prior power: the one of :data:`PRIOR_POWERS` with the lowest balanced MAE
  (the mean over age groups, so a 75-year-old counts as much as a 25-year-old) on
  the validation faces with exact ages, each source counting equally;
* interval scales, one per side: the line ``a + b * max(u - 1, 0)`` minimising the 90%
  pinball loss of the error beyond that side / its half-width (so 10% fall below and
  10% above) over validation faces of every source with ages, clean and degraded
  (quarter resolution, JPEG 20, grayscale, blur), each set equally; then, while some
  set of at least :data:`FLOOR_SET_FACES` faces is covered less than
  :data:`COVERAGE_FLOOR`, the side that set misses more on is widened a step: an 80%
  interval should not cover 72% of some kind of face because most sets are easy;
* temperatures: ``a + b * max(u - 1, 0)`` minimising the negative log-likelihood of
  gender (ethnicity) over the validation sets with that label, each set equally;
* ethnicity prior power: every power of :data:`ETHNICITY_PRIOR_POWERS` is scored on the
  clean validation sets with ethnicity labels, by accuracy (which weighs the groups as
  the home data mixes them), balanced accuracy (the mean recall over the groups: an
  even mix) and their mean, and the card shows the table. Which power is served is a
  choice (:data:`ETHNICITY_MIXES`): ``training`` (the default) keeps the plain read-out;
  ``between`` takes the power with the best mean, for users mixed unlike the home data.
  On the shipped model's validation faces ``between`` gives balanced accuracy +2.6
  points for accuracy -0.4, but on its test split +1.6 for -1.5: a trade, not a gain;
* warning threshold: the 99th percentile of the home source's validation faces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from model.calibration import Calibration, best_mean_power, linear_in_unfamiliarity
from model.familiarity import Familiarity
from model.labels import ETHNICITIES, NUM_AGE_BINS
from model.postprocess import age_intervals, expected_age
from training.metrics import balanced_mae

PRIOR_POWERS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
ETHNICITY_PRIOR_POWERS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
#: Whose mix of ethnicities the read-out serves: "training" (the plain read-out) or "between"
#: (the power of the training mix divided out that scores best on mean accuracy and balanced accuracy).
ETHNICITY_MIXES: tuple[str, ...] = ("training", "between")
FIT_FACES: int = 6000  # training faces whose features summarise the training data
WARN_QUANTILE: float = 0.99
MIN_SET_FACES: int = 5  # a validation set with fewer labelled faces is left out of a fit
SIDE_QUANTILE: float = 0.9  # each side of the central 80% interval misses 10%
COVERAGE_FLOOR: float = 0.78  # 80% less sampling slack (a 200-face set's coverage has sd ~3 points)
FLOOR_SET_FACES: int = 50  # smaller sets are too noisy to widen everyone's intervals for
_FLOOR_STEP: float = 0.01
_FLOOR_MAX_STEPS: int = 200
_SCALE_SLOPES = np.round(np.arange(0.0, 4.001, 0.02), 3)
_TEMPERATURE_A = np.round(np.arange(0.6, 2.501, 0.02), 3)
_TEMPERATURE_B = np.round(np.arange(0.0, 3.001, 0.05), 3)


@dataclass
class EvalSet:
    """Raw outputs and labels of one validation set (a source, maybe degraded)."""

    name: str
    raw: dict[str, np.ndarray]  # Predictor.raw: age_dist, gender, ethnicity, features
    labels: dict[str, np.ndarray]  # training.sources.label_arrays (-1 = missing)
    degraded: bool = False

    def has(self, head: str) -> np.ndarray:
        return self.labels[head] >= 0


def training_age_prior(labels: dict[str, np.ndarray], draw_probability: np.ndarray, age_weight: np.ndarray,
                       smooth_sd: float = 3.0) -> np.ndarray:
    """The age distribution training effectively saw: each face's draw probability times
    its age-loss weight, exact ages at their bin, ranges spread over theirs; smoothed."""
    prior = np.zeros(NUM_AGE_BINS)
    mass = np.asarray(draw_probability, np.float64) * np.asarray(age_weight, np.float64)
    exact = labels["age"] >= 0
    np.add.at(prior, np.clip(labels["age"][exact], 0, NUM_AGE_BINS - 1), mass[exact])
    for i in np.flatnonzero(~exact & (labels["age_low"] >= 0)):
        low, high = int(labels["age_low"][i]), int(min(labels["age_high"][i], NUM_AGE_BINS - 1))
        prior[low : high + 1] += mass[i] / (high - low + 1)
    offsets = np.arange(-10, 11)
    kernel = np.exp(-0.5 * (offsets / smooth_sd) ** 2)
    prior = np.convolve(prior, kernel / kernel.sum(), mode="same")
    prior += 1e-3 * prior.max()  # no bin is impossible
    return prior / prior.sum()


def training_class_prior(codes: np.ndarray, draw_probability: np.ndarray, classes: int = len(ETHNICITIES)) -> np.ndarray:
    """The mix of classes training drew (each labelled face by its draw probability); no class
    is impossible. Uniform when no training face carries the label."""
    codes = np.asarray(codes)
    labelled = codes >= 0
    mass = np.bincount(codes[labelled], weights=np.asarray(draw_probability, np.float64)[labelled],
                       minlength=classes)[:classes]
    if mass.sum() <= 0:
        return np.full(classes, 1.0 / classes)
    mass += 1e-3 * mass.max()
    return mass / mass.sum()


def accuracy_and_balanced(probabilities: np.ndarray, codes: np.ndarray) -> tuple[float, float]:
    """Top-class accuracy and the mean recall over the classes present."""
    calls = np.asarray(probabilities).argmax(1)
    codes = np.asarray(codes)
    recalls = [float(np.mean(calls[codes == c] == c)) for c in np.unique(codes)]
    return float(np.mean(calls == codes)), float(np.mean(recalls))


def choose_ethnicity_prior_power(sets: list[EvalSet], base: Calibration, mix: str = "training") -> tuple[float, dict]:
    """Every power of ``base.ethnicity_prior`` scored (accuracy, balanced accuracy, their mean,
    averaged over the sets), and the one ``mix`` serves: 0 for "training", else the best mean
    (ties: the smaller power)."""
    if mix not in ETHNICITY_MIXES:
        raise ValueError(f"unknown ethnicity mix {mix!r} (choose from {', '.join(ETHNICITY_MIXES)})")
    scored = [s for s in sets if not s.degraded and s.has("ethnicity").sum() >= MIN_SET_FACES]
    if not scored or base.ethnicity_prior is None:
        return 0.0, {}
    tempered = []
    for s in scored:
        m = s.has("ethnicity")
        features = s.raw.get("features")
        u = base.unfamiliarity(None if features is None else features[m], int(m.sum()))
        tempered.append((base.tempered_ethnicity(s.raw["ethnicity"][m], u), s.labels["ethnicity"][m]))
    scores = {}
    for power in ETHNICITY_PRIOR_POWERS:
        per_set = []
        for probs, codes in tempered:
            acc, bal = accuracy_and_balanced(base.ethnicity_prior[None, :] ** -power * probs, codes)
            per_set.append({"accuracy": acc, "balanced_accuracy": bal, "score": (acc + bal) / 2})
        scores[power] = {k: round(float(np.mean([r[k] for r in per_set])), 4) for k in per_set[0]}
    best = best_mean_power(scores) if mix == "between" else 0.0
    return best, scores


def choose_prior_power(sets: list[EvalSet], prior: np.ndarray) -> tuple[float, dict]:
    scores = {}
    for power in PRIOR_POWERS:
        cal = Calibration(age_prior=prior, age_prior_power=power)
        per_set = []
        for s in sets:
            exact = s.labels["age"] >= 0
            if exact.sum() >= MIN_SET_FACES:
                age = expected_age(cal.adjust_age_distribution(s.raw["age_dist"][exact]))
                per_set.append(balanced_mae(s.labels["age"][exact].astype(float), age))
        if not per_set or np.isnan(per_set).all():
            return 0.0, {}
        scores[power] = round(float(np.nanmean(per_set)), 4)
    best = min(scores, key=lambda p: (scores[p], p))
    return best, scores


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1])])


def fit_line_quantile(ratio: np.ndarray, excess: np.ndarray, weights: np.ndarray, q: float = 0.8,
                      min_a: float = 0.3) -> tuple[float, float]:
    """(a, b) minimising the weighted pinball loss of ``ratio`` against ``a + b * excess``."""
    best = (np.inf, 1.0, 0.0)
    for b in _SCALE_SLOPES:
        a = max(min_a, _weighted_quantile(ratio - b * excess, weights, q))
        resid = ratio - (a + b * excess)
        loss = float((weights * np.where(resid >= 0, q * resid, (q - 1) * resid)).sum())
        if loss < best[0] - 1e-12:
            best = (loss, a, float(b))
    return round(best[1], 4), best[2]


def fit_temperature(probs: np.ndarray, codes: np.ndarray, excess: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(a, b) of T = a + b * excess minimising the weighted negative log-likelihood (grid search)."""
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    best = (np.inf, 1.0, 0.0)
    for b in _TEMPERATURE_B:
        t = _TEMPERATURE_A[:, None] + b * excess[None, :]  # (A, N)
        scaled = logp[None, :, :] / t[:, :, None]
        scaled -= scaled.max(-1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(-1))
        nll = (weights[None, :] * (log_norm - scaled[:, np.arange(len(codes)), codes])).sum(1)
        i = int(np.argmin(nll))
        if nll[i] < best[0] - 1e-12:
            best = (float(nll[i]), float(_TEMPERATURE_A[i]), float(b))
    return best[1], best[2]


def _equal_set_weights(counts: list[int]) -> np.ndarray:
    """Per-face weights over concatenated sets of these sizes: every set weighs the same in total."""
    return np.concatenate([np.full(n, 1.0 / max(1, n)) for n in counts]) / len(counts)


@dataclass
class IntervalSides:
    """One validation set's ages seen from its raw 80% intervals: how far the truth lies beyond
    each side, in units of that side's half-width (<= 1 inside), and each face's unfamiliarity excess."""

    beyond_below: np.ndarray
    beyond_above: np.ndarray
    excess: np.ndarray

    def missed(self, below: tuple[float, float], above: tuple[float, float]) -> tuple[float, float]:
        """Shares of faces whose truth falls below / above the interval scaled by the two lines."""
        u = self.excess + 1.0
        return (float(np.mean(self.beyond_below > linear_in_unfamiliarity(below, u))),
                float(np.mean(self.beyond_above > linear_in_unfamiliarity(above, u))))


def interval_sides(calibration: Calibration, s: EvalSet, unfamiliarity: np.ndarray) -> IntervalSides:
    exact = s.labels["age"] >= 0
    dist = calibration.adjust_age_distribution(s.raw["age_dist"][exact])
    centre, iv = expected_age(dist), age_intervals(dist)
    truth = s.labels["age"][exact].astype(float)
    return IntervalSides(beyond_below=(centre - truth) / np.maximum(centre - iv[:, 0], 0.5),
                         beyond_above=(truth - centre) / np.maximum(iv[:, 1] - centre, 0.5),
                         excess=np.maximum(unfamiliarity[exact] - 1.0, 0.0))


def fit_interval_sides(sides: list[IntervalSides], floor: float = COVERAGE_FLOOR) -> tuple[tuple[float, float], ...]:
    """(below, above) lines: per-side pinball fit, then widened until every large set reaches ``floor``."""
    weights = _equal_set_weights([len(s.excess) for s in sides])
    excess = np.concatenate([s.excess for s in sides])
    below = fit_line_quantile(np.concatenate([s.beyond_below for s in sides]), excess, weights, SIDE_QUANTILE)
    above = fit_line_quantile(np.concatenate([s.beyond_above for s in sides]), excess, weights, SIDE_QUANTILE)
    judged = [s for s in sides if len(s.excess) >= FLOOR_SET_FACES]
    for _ in range(_FLOOR_MAX_STEPS if judged else 0):
        missed = [s.missed(below, above) for s in judged]
        worst = int(np.argmin([1.0 - lo - hi for lo, hi in missed]))
        if 1.0 - sum(missed[worst]) >= floor:
            break
        if missed[worst][0] > missed[worst][1]:
            below = (round(below[0] + _FLOOR_STEP, 4), below[1])
        else:
            above = (round(above[0] + _FLOOR_STEP, 4), above[1])
    return below, above


def fit_calibration(fit_features: np.ndarray, home_val_features: np.ndarray, prior: np.ndarray,
                    sets: list[EvalSet], k: int = 64,
                    ethnicity_prior: np.ndarray | None = None, ethnicity_mix: str = "training") -> tuple[Calibration, dict]:
    """Every correction, fitted in order (familiarity, prior power, interval, temperatures,
    ethnicity prior power)."""
    familiarity = Familiarity.fit(fit_features, k=k).with_reference(home_val_features)
    power, prior_scores = choose_prior_power([s for s in sets if not s.degraded], prior)
    base = Calibration(familiarity=familiarity, age_prior=prior, age_prior_power=power)
    u = {s.name: familiarity.unfamiliarity(s.raw["features"]) for s in sets}

    age_sets = [s for s in sets if (s.labels["age"] >= 0).sum() >= MIN_SET_FACES]
    sides = [interval_sides(base, s, u[s.name]) for s in age_sets]
    below, above = fit_interval_sides(sides) if sides else ((1.0, 0.0), (1.0, 0.0))

    temperatures = {}
    for head in ("gender", "ethnicity"):
        head_sets = [s for s in sets if s.has(head).sum() >= MIN_SET_FACES]
        masks = [s.has(head) for s in head_sets]
        if not head_sets:
            temperatures[head] = (1.0, 0.0)
            continue
        temperatures[head] = fit_temperature(
            np.concatenate([s.raw[head][m] for s, m in zip(head_sets, masks)]),
            np.concatenate([s.labels[head][m] for s, m in zip(head_sets, masks)]),
            np.concatenate([np.maximum(u[s.name][m] - 1.0, 0.0) for s, m in zip(head_sets, masks)]),
            _equal_set_weights([int(m.sum()) for m in masks]))
    warn_above = float(np.quantile(u[sets[0].name], WARN_QUANTILE))
    calibration = replace(base, interval_below=below, interval_above=above, gender_temperature=temperatures["gender"],
                               ethnicity_temperature=temperatures["ethnicity"], warn_above=round(warn_above, 4),
                               ethnicity_prior=ethnicity_prior)
    ethnicity_power, ethnicity_scores = choose_ethnicity_prior_power(sets, calibration, ethnicity_mix)
    calibration = replace(calibration, ethnicity_prior_power=ethnicity_power)
    fitted = {
        "age_prior_power": power,
        "balanced_mae_by_prior_power": {str(p): v for p, v in prior_scores.items()},
        "interval_below": list(below),
        "interval_above": list(above),
        "interval_coverage_floor": COVERAGE_FLOOR,
        "gender_temperature": list(temperatures["gender"]),
        "ethnicity_temperature": list(temperatures["ethnicity"]),
        "warn_above": calibration.warn_above,
        "ethnicity_prior": None if ethnicity_prior is None else [round(float(v), 4) for v in ethnicity_prior],
        "ethnicity_mix": ethnicity_mix,
        "ethnicity_prior_power": ethnicity_power,
        "ethnicity_by_prior_power": {str(p): v for p, v in ethnicity_scores.items()},
        "familiarity_components": int(familiarity.components.shape[1]),
        "familiarity_fit_faces": int(len(fit_features)),
    }
    return calibration, fitted


def set_report(s: EvalSet, calibration: Calibration) -> dict:
    """What calibration changes on one set: coverage, width, bias, calibration error, flagged share
    (the figures of training.metrics.partial_report, plus the balanced MAE and unfamiliarity)."""
    from training.metrics import partial_report

    out = calibration.apply(s.raw["age_dist"], s.raw["gender"], s.raw["ethnicity"], s.raw.get("features"))
    full = partial_report(s.labels, out["age"], out["age_interval"], out["gender"], out["ethnicity"])
    report: dict = {"n": full["n"]}
    if full["n_exact_age"]:
        exact = s.labels["age"] >= 0
        report.update({
            "n_age": full["n_exact_age"], "age_mae": full["age_mae"], "age_bias": full["age_bias"],
            "balanced_age_mae": round(balanced_mae(s.labels["age"][exact].astype(float), out["age"][exact]), 4),
            "interval_coverage": full["age"]["interval_coverage"],
            "interval_mean_width": full["age"]["interval_mean_width"],
        })
    for head in ("gender", "ethnicity"):
        if full[f"n_{head}"]:
            report[f"{head}_accuracy"] = full[f"{head}_accuracy"]
            report[f"{head}_ece"] = full[f"{head}_ece"]
    u = out["unfamiliarity"]
    if np.isfinite(u).any():
        report["unfamiliarity_median"] = round(float(np.nanmedian(u)), 3)
        report["flagged_unfamiliar"] = round(float(np.mean([calibration.is_unfamiliar(v) for v in u])), 4)
    return report


def before_after(sets: list[EvalSet], calibration: Calibration) -> dict:
    """Per set, the figures with the raw read-out and with the calibrated one."""
    raw = Calibration()
    return {s.name: {"before": set_report(s, raw), "after": set_report(s, calibration)} for s in sets}


def calibrate_model(predictor, arrays: dict, probabilities, age_weight, seed: int = 0,
                    val_raw: dict[str, dict[str, np.ndarray]] | None = None, ethnicity_mix: str = "training"):
    """Fit :class:`model.calibration.Calibration` on the training split's features (drawn as
    training drew them: ``probabilities`` per face, its age loss weighted by ``age_weight``)
    and every source's validation faces, clean and (home source) degraded.
    ``val_raw``: the predictor's raw outputs per validation source, if already computed.
    Returns (calibration, card section with the fitted values and before/after per set)."""
    from training.robustness import DEGRADATIONS, degrade_all

    train, val = arrays["train"], arrays["val"]
    prior = training_age_prior(train.labels, probabilities, age_weight)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(train), size=min(len(train), FIT_FACES), replace=False, p=probabilities)
    fit_features = predictor.raw(train.images[np.sort(drawn)], progress="training features")["features"]
    sets = []
    for code, name in enumerate(val.names):
        part = val.subset(val.source == code)
        if len(part):
            raw = val_raw[name] if val_raw and name in val_raw else predictor.raw(part.images, progress=f"scoring {name}")
            sets.append(EvalSet(name, raw, part.labels))
    home = val.subset(val.source == 0)
    for kind in DEGRADATIONS:
        if len(home):
            sets.append(EvalSet(f"{val.names[0]}, {kind}", predictor.raw(degrade_all(home.images, kind), progress=kind),
                                home.labels, degraded=True))
    calibration, fitted = fit_calibration(fit_features, sets[0].raw["features"], prior, sets,
                                          ethnicity_prior=training_class_prior(train.labels["ethnicity"], probabilities),
                                          ethnicity_mix=ethnicity_mix)
    return calibration, {"fitted": fitted, "validation": before_after(sets, calibration)}
