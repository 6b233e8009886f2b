"""Robust aggregation of the packed G+D record: one small strategy per idea.

Each strategy is ``GanFedAvg`` with only its ``combine`` step replaced, so the
per-reply checks, the norm-outlier rule and the round log are the same for all.
Each works on the whole packed record (generator and discriminator together),
flattened to one vector per site. The ideas are those of Flower's FedMedian,
FedTrimmedAvg and MultiKrum strategies:

- ``median``: the coordinate-wise median of the updates (unweighted);
- ``trimmed-mean``: per coordinate, drop the ``int(trim_fraction * n)`` lowest
  and highest values and average the rest (unweighted);
- ``krum``: multi-Krum. Each update scores the sum of its squared distances to
  its ``n - f - 2`` nearest neighbours; the ``n - f`` lowest-scoring updates are
  averaged, weighted by row count. Krum needs ``n >= 2f + 3`` updates to mean
  anything; with fewer it falls back to the coordinate-wise median.
"""

from __future__ import annotations

from logging import WARNING
from typing import Any

import numpy as np
from flwr.supercore import log

from fedsynth.strategies.gan_fedavg import GanFedAvg, weighted_mean


def coordinate_median(matrix: np.ndarray) -> np.ndarray:
    """Median of each column of an (n, d) matrix."""
    return np.median(matrix, axis=0)


def trimmed_mean(matrix: np.ndarray, fraction: float) -> np.ndarray:
    """Mean of each column after cutting ``int(fraction * n)`` values at each end."""
    if not 0 <= fraction < 0.5:
        raise ValueError(f"trim fraction must be in [0, 0.5), got {fraction}")
    n = matrix.shape[0]
    cut = int(fraction * n)
    ordered = np.sort(matrix, axis=0)
    return ordered[cut : n - cut].mean(axis=0)


def krum_scores(matrix: np.ndarray, byzantine: int) -> np.ndarray:
    """Each row's Krum score: the sum of squared distances to its ``n - f - 2`` nearest other rows."""
    n = matrix.shape[0]
    norms = np.square(matrix).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * matrix @ matrix.T, 0.0)  # |x - y|², (n, n)
    np.fill_diagonal(squared, 0.0)
    neighbours = max(1, n - byzantine - 2)
    nearest = np.sort(squared, axis=1)[:, 1 : neighbours + 1]  # column 0 is the row itself
    return nearest.sum(axis=1)


def multi_krum_selection(matrix: np.ndarray, byzantine: int) -> list[int]:
    """Indices of the ``n - f`` rows with the lowest Krum scores, in ascending index order."""
    n = matrix.shape[0]
    keep = max(1, n - byzantine)
    return sorted(int(i) for i in np.argsort(krum_scores(matrix, byzantine), kind="stable")[:keep])


class GanMedian(GanFedAvg):
    """Coordinate-wise median of the packed G+D updates."""

    name = "median"

    def combine(self, matrix: np.ndarray, weights: list[float]) -> tuple[np.ndarray, list[int]]:
        return coordinate_median(matrix), list(range(len(matrix)))


class GanTrimmedMean(GanFedAvg):
    """Coordinate-wise trimmed mean of the packed G+D updates."""

    name = "trimmed-mean"

    def __init__(self, trim_fraction: float = 0.2, **kwargs: Any) -> None:
        if not 0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        super().__init__(**kwargs)
        self.trim_fraction = trim_fraction

    def combine(self, matrix: np.ndarray, weights: list[float]) -> tuple[np.ndarray, list[int]]:
        return trimmed_mean(matrix, self.trim_fraction), list(range(len(matrix)))


class GanMultiKrum(GanFedAvg):
    """Multi-Krum: the weighted mean of the ``n - f`` updates closest to the others."""

    name = "krum"

    def __init__(self, byzantine: int = 1, **kwargs: Any) -> None:
        if byzantine < 0:
            raise ValueError(f"byzantine must not be negative, got {byzantine}")
        super().__init__(**kwargs)
        self.byzantine = byzantine

    def combine(self, matrix: np.ndarray, weights: list[float]) -> tuple[np.ndarray, list[int]]:
        if len(matrix) < 2 * self.byzantine + 3:
            log(WARNING, "krum: %d update(s), fewer than 2f + 3 = %d; using the coordinate-wise median",
                len(matrix), 2 * self.byzantine + 3)  # fmt: skip
            return coordinate_median(matrix), list(range(len(matrix)))
        chosen = multi_krum_selection(matrix, self.byzantine)
        return weighted_mean(matrix[chosen], [weights[i] for i in chosen]), chosen
