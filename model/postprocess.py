"""Pure post-processing: raw head outputs to ages, intervals and class names.

Shared by the analyzer, the predict CLI and the evaluate CLI so a number shown in
the app is computed exactly as the one reported on the model card.
"""

from __future__ import annotations

import numpy as np

from model.labels import AGE_MIN, ETHNICITIES, GENDERS

#: Central probability mass of the reported age interval.
AGE_INTERVAL_MASS: float = 0.80


def expected_age(age_dist: np.ndarray) -> np.ndarray:
    """(N, K) age distributions -> (N,) expected ages in years."""
    dist = np.asarray(age_dist, np.float64)
    ages = np.arange(AGE_MIN, AGE_MIN + dist.shape[-1], dtype=np.float64)
    return (dist * ages).sum(-1) / np.maximum(dist.sum(-1), 1e-12)


def age_intervals(age_dist: np.ndarray, mass: float = AGE_INTERVAL_MASS) -> np.ndarray:
    """(N, K) distributions -> (N, 2) [low, high] holding the central ``mass`` of each.

    Quantiles come from the cumulative distribution with linear interpolation
    between bins, so intervals are not forced onto whole years.
    """
    dist = np.asarray(age_dist, np.float64)
    dist = dist / np.maximum(dist.sum(-1, keepdims=True), 1e-12)
    cdf = np.cumsum(dist, axis=-1)
    ages = np.arange(AGE_MIN, AGE_MIN + dist.shape[-1], dtype=np.float64)
    tail = (1.0 - mass) / 2.0
    out = np.empty((dist.shape[0], 2))
    for i, row in enumerate(cdf):
        # Treat each bin's mass as spread over [k - 0.5, k + 0.5].
        edges = np.concatenate([[ages[0] - 0.5], ages + 0.5])
        padded = np.concatenate([[0.0], row])
        out[i, 0] = np.interp(tail, padded, edges)
        out[i, 1] = np.interp(1.0 - tail, padded, edges)
    return np.clip(out, AGE_MIN, ages[-1])


def top_class(probabilities: np.ndarray, names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """(N, C) probabilities -> (names of the argmax, its probability) per row."""
    probs = np.asarray(probabilities, np.float64)
    idx = probs.argmax(-1)
    return [names[i] for i in idx], probs[np.arange(len(idx)), idx]


def gender_names(probabilities: np.ndarray) -> tuple[list[str], np.ndarray]:
    return top_class(probabilities, GENDERS)


def ethnicity_names(probabilities: np.ndarray) -> tuple[list[str], np.ndarray]:
    return top_class(probabilities, ETHNICITIES)
