"""Privacy of a synthetic table towards the real training rows it was learned from.

- Exact-match rate: share of synthetic rows identical, on every schema column, to some
  training row (validated values compared exactly). The same share against the holdout
  is the baseline a generator that never saw the training rows would reach: on
  all-discrete data matches are expected, with continuous columns they should be ~0.
- Distance to closest record (DCR): Euclidean distance in the codec's encoded space from
  each synthetic row to its nearest training row and to its nearest holdout row (median
  and 5th percentile). ``closer_to_train_share`` is the share of synthetic rows closer to
  the training set than to an equally large holdout set, ties counting one half:
  about 0.5 means no sign of overfitting, towards 1 means copying (Platzer and Reutterer,
  "Holdout-Based Empirical Assessment of Mixed-Type Synthetic Data", Frontiers in Big
  Data, 2021).
- Nearest-neighbour distance ratio (NNDR): distance to the closest training row divided
  by the distance to the second closest; near 0 means a synthetic row singles out one
  record. When both are 0 (a row repeated in the training data) the ratio is 1.
- Membership inference AUC: the distance-based Monte Carlo attack of Hilprecht, Härterich
  and Bernau, "Monte Carlo and Reconstruction Membership Inference Attacks against
  Generative Models", PoPETs 2019 (4). Candidates are members (a sample of the training
  rows) and as many non-members (holdout rows); each is scored by minus its distance to
  the closest synthetic row (the small-radius limit of the paper's share of synthetic
  samples within a radius), and the attack's ROC AUC is reported: 0.5 means the
  synthetic table does not reveal membership, 1 means it reveals it completely.

Synthetic rows are subsampled to ``max_rows`` for the distance metrics; the training and
holdout tables are searched in full, so the nearest record really is the nearest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from fedsynth.metrics.neighbours import nearest_distances
from fedsynth.metrics.subsample import encode, subsample
from fedsynth.tabular.schema import Schema


def exact_match_rate(synthetic: pd.DataFrame, reference: pd.DataFrame, schema: Schema) -> float:
    """Share of synthetic rows equal on every schema column to at least one reference row (a missing cell
    equals a missing cell)."""
    known = set(_comparable(reference, schema).itertuples(index=False, name=None))
    rows = _comparable(synthetic, schema).itertuples(index=False, name=None)
    return float(np.mean([row in known for row in rows]))


def _comparable(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Numbers as floats and categories as text, missing cells as −inf or ``""``, so equal rows compare equal."""
    out = {}
    for col in schema.columns:
        if col.is_numeric:
            out[col.name] = pd.to_numeric(frame[col.name]).astype(float).fillna(-np.inf)
        else:
            out[col.name] = frame[col.name].astype(object).where(frame[col.name].notna(), "").astype(str)
    return pd.DataFrame(out)


def closer_share(to_train: np.ndarray, to_holdout: np.ndarray) -> float:
    """Share of rows strictly closer to the training set than to the holdout, ties counting one half."""
    return float(np.mean((to_train < to_holdout) + 0.5 * (to_train == to_holdout)))


def nndr(closest_two: np.ndarray) -> np.ndarray:
    """Ratio of the closest to the second-closest distance per row (1 when both are 0)."""
    first, second = closest_two[:, 0], closest_two[:, 1]
    safe = np.where(second > 0, second, 1.0)
    return np.where(second > 0, first / safe, 1.0)


def membership_inference_auc(members: np.ndarray, non_members: np.ndarray, synthetic: np.ndarray) -> float:
    """ROC AUC of the distance attack (Hilprecht et al. 2019): a closer synthetic row means 'member'."""
    scores = -nearest_distances(np.vstack([members, non_members]), synthetic, 1)[:, 0]
    labels = np.repeat([1, 0], [len(members), len(non_members)])
    return float(roc_auc_score(labels, scores))


def _summary(distances: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(distances)), "p5": float(np.percentile(distances, 5))}


def privacy(
    real: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, max_rows: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Exact matches, DCR, NNDR and membership-inference AUC of ``synthetic`` towards the training rows ``real``."""
    syn = encode(subsample(synthetic, max_rows, seed), schema)
    train_x, holdout_x = encode(real, schema), encode(holdout, schema)
    to_train = nearest_distances(syn, train_x, min(2, len(train_x)))
    to_holdout = nearest_distances(syn, holdout_x, 1)[:, 0]

    same = min(len(real), len(holdout))  # equal reference sizes, or the larger set looks closer
    train_same = encode(subsample(real, same, seed + 1), schema)
    holdout_same = encode(subsample(holdout, same, seed + 2), schema)
    share = closer_share(nearest_distances(syn, train_same, 1)[:, 0], nearest_distances(syn, holdout_same, 1)[:, 0])

    candidates = min(same, max_rows)
    members = encode(subsample(real, candidates, seed + 3), schema)
    non_members = encode(subsample(holdout, candidates, seed + 4), schema)
    return {
        "exact_match_rate": exact_match_rate(synthetic, real, schema),
        "exact_match_rate_holdout": exact_match_rate(synthetic, holdout, schema),
        "dcr_train": _summary(to_train[:, 0]),
        "dcr_holdout": _summary(to_holdout),
        "closer_to_train_share": share,
        "nndr_median": float(np.median(nndr(to_train))) if to_train.shape[1] == 2 else None,
        "mia_auc": membership_inference_auc(members, non_members, syn),
        "rows": {"synthetic": len(syn), "candidates": 2 * candidates},
    }
