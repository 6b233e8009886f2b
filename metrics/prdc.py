"""Precision, recall, density and coverage of a synthetic table against real rows.

Precision and recall: Kynkäänniemi et al., "Improved Precision and Recall Metric for
Assessing Generative Models", NeurIPS 2019. Density and coverage: Naeem et al.,
"Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020. The code
follows the authors' ``prdc`` package, one small function per metric.

Each real row gets a ball whose radius is the distance to its k-th nearest other
real row (likewise for synthetic rows):

- precision: share of synthetic rows inside some real ball (are samples realistic?);
- recall: share of real rows inside some synthetic ball (is the real data's variety produced?);
- density: mean number of real balls holding a synthetic row, divided by k (about 1 when matched);
- coverage: share of real rows whose ball holds at least one synthetic row.

Rows live in the codec's encoded space (numeric columns scaled to [-1, 1] from the
public bounds, categories one-hot). On discrete data many rows coincide, so a radius
can be 0: membership uses ``<=``, so an exact match counts as inside a ball.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedsynth.metrics.neighbours import nearest_distances, pairwise_distances
from fedsynth.metrics.subsample import encode, subsample
from fedsynth.tabular.schema import Schema


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row of the same set."""
    return nearest_distances(features, features, k + 1)[:, k]  # the row itself is at distance 0


def precision(distances: np.ndarray, real_radii: np.ndarray) -> float:
    """Share of synthetic rows inside at least one real ball. ``distances`` is [n_real, n_synthetic]."""
    return float((distances <= real_radii[:, None]).any(axis=0).mean())


def recall(distances: np.ndarray, synthetic_radii: np.ndarray) -> float:
    """Share of real rows inside at least one synthetic ball."""
    return float((distances <= synthetic_radii[None, :]).any(axis=1).mean())


def density(distances: np.ndarray, real_radii: np.ndarray, k: int) -> float:
    """Mean number of real balls holding each synthetic row, divided by k."""
    return float((distances <= real_radii[:, None]).sum(axis=0).mean() / k)


def coverage(distances: np.ndarray, real_radii: np.ndarray) -> float:
    """Share of real rows whose ball holds at least one synthetic row."""
    return float((distances.min(axis=1) <= real_radii).mean())


def prdc_features(real: np.ndarray, synthetic: np.ndarray, k: int = 5) -> dict[str, Any]:
    """All four metrics for two feature matrices; None when either set has no more than k rows."""
    if len(real) <= k or len(synthetic) <= k:
        return {"precision": None, "recall": None, "density": None, "coverage": None, "k": k}
    real_radii = knn_radii(real, k)
    synthetic_radii = knn_radii(synthetic, k)
    distances = pairwise_distances(real, synthetic)
    return {
        "precision": precision(distances, real_radii),
        "recall": recall(distances, synthetic_radii),
        "density": density(distances, real_radii, k),
        "coverage": coverage(distances, real_radii),
        "k": k,
    }


def prdc(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, k: int = 5, max_rows: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Precision, recall, density and coverage on at most ``max_rows`` rows of each table.

    Memory grows as ``max_rows``² (about 32 MB at the default 2,000).
    """
    real_rows = subsample(real, max_rows, seed)
    synthetic_rows = subsample(synthetic, max_rows, seed + 1)
    result = prdc_features(encode(real_rows, schema), encode(synthetic_rows, schema), k)
    return {**result, "rows": {"real": len(real_rows), "synthetic": len(synthetic_rows)}}
