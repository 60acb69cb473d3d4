"""How unlike the training photos a face is, from the features the network already computes.

The 1280 pooled backbone features of the training faces are summarised once (at
export) by their mean, their top principal directions with the variance along each,
and the mean variance left outside them. A face's squared distance is the
Mahalanobis distance in the principal subspace plus the scaled residual, divided by
the number of terms, so a typical training face scores about 1. ``unfamiliarity``
is that distance relative to the median of validation faces from the training
collections: 1 is an ordinary face, 2 twice as far from the training data as usual.
Costs one (D x k) matrix product per face (~0.1 ms), so it fits the live path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Familiarity:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, k) orthonormal principal directions
    variances: np.ndarray  # (k,) variance along each direction
    residual_variance: float  # mean per-dimension variance outside the subspace
    reference: float = 1.0  # median distance of in-collection validation faces

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 64, shrink: float = 0.05) -> Familiarity:
        """Summarise (N, D) training features; ``shrink`` mixes in the mean variance so
        that rare directions do not blow up the distance of ordinary faces."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need (N >= 2, D) features, got {x.shape}")
        k = int(min(k, x.shape[1] - 1, len(x) - 1))
        mean = x.mean(0)
        centred = x - mean
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        variances = s**2 / (len(x) - 1)
        total = variances.sum() / x.shape[1]
        top = (1 - shrink) * variances[:k] + shrink * total
        rest = variances[k:].sum() / max(1, x.shape[1] - k)
        return cls(mean.astype(np.float32), vt[:k].T.astype(np.float32), top.astype(np.float32),
                   float(max(rest, 1e-12)))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) root mean squared standardised distance (~1 for training faces)."""
        x = np.asarray(features, np.float32) - self.mean
        z = x @ self.components
        inside = (z**2 / self.variances).sum(1)
        residual = np.maximum((x**2).sum(1) - (z**2).sum(1), 0.0) / self.residual_variance
        d, k = self.components.shape
        if d == k:
            return np.sqrt(inside / k).astype(np.float64)
        # Each part is ~1 per dimension for training faces; both count equally, so a face
        # off in the few main directions is caught as well as one off everywhere else.
        return np.sqrt(0.5 * inside / k + 0.5 * residual / (d - k)).astype(np.float64)

    def with_reference(self, in_collection_features: np.ndarray) -> Familiarity:
        """The same summary, with the median distance of these (validation) faces as unit."""
        median = float(np.median(self.distance(in_collection_features)))
        return Familiarity(self.mean, self.components, self.variances, self.residual_variance, max(median, 1e-9))

    def unfamiliarity(self, features: np.ndarray) -> np.ndarray:
        """(N,) distance in units of an ordinary validation face's distance."""
        return self.distance(features) / self.reference

    def to_arrays(self, prefix: str = "familiarity_") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}components": self.components,
                f"{prefix}variances": self.variances,
                f"{prefix}residual_variance": np.float64(self.residual_variance),
                f"{prefix}reference": np.float64(self.reference)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "familiarity_") -> Familiarity:
        return cls(np.asarray(arrays[f"{prefix}mean"], np.float32), np.asarray(arrays[f"{prefix}components"], np.float32),
                   np.asarray(arrays[f"{prefix}variances"], np.float32),
                   float(arrays[f"{prefix}residual_variance"]), float(arrays[f"{prefix}reference"]))
