"""Exact Euclidean nearest-neighbour distances, computed in memory-bounded chunks.

Distances come from ``scipy.spatial.distance.cdist``, which computes each one
directly, so identical rows are exactly 0 apart (a dot-product shortcut would leave
rounding noise and break the ties that discrete data produce).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

# At most this many distances are held in memory at once (128 MiB of float64).
_CHUNK_ELEMENTS = 1 << 24


def nearest_distances(queries: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """Distances from each query row to its ``k`` closest reference rows, sorted: shape [n_queries, k]."""
    if not 1 <= k <= len(reference):
        raise ValueError(f"k must be between 1 and the {len(reference)} reference rows, got {k}")
    out = np.empty((len(queries), k), dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(reference)))
    for start in range(0, len(queries), step):
        block = cdist(queries[start : start + step], reference)
        if k < block.shape[1]:
            block = np.partition(block, k - 1, axis=1)[:, :k]
        out[start : start + step] = np.sort(block, axis=1)
    return out


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All distances between the rows of ``a`` and ``b``: shape [len(a), len(b)]."""
    return cdist(a, b)
