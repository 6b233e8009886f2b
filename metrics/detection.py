"""Detection: can a classifier tell real rows from synthetic ones?

A gradient-boosted classifier (scikit-learn's ``HistGradientBoostingClassifier``)
is trained on encoded rows labelled real (0) or synthetic (1), with equal numbers
of each, and its ROC AUC is measured on a held-out third. This is the "classifier
two-sample test" of Lopez-Paz and Oquab, "Revisiting Classifier Two-Sample Tests",
ICLR 2017, as used by SDMetrics' ``LogisticDetection``.

A row that occurs in both tables is kept on the same side of the split as its twin:
the i-th real copy and the i-th synthetic copy of the same encoded row form a group,
and the split is a stratified group split. Otherwise a row present in both tables
would be learned with one label and tested with the other, and the classifier would
score far below 0.5 on two identical tables by memorising duplicates. Unmatched
copies (a value the synthetic table repeats more often than the real one) stay
separate, so over-represented rows remain detectable.

- ``auc``: 0.5 means the tables are indistinguishable, 1 means perfectly separable.
- ``score`` = 1 - 2 * (max(auc, 0.5) - 0.5), in [0, 1], 1 best. An AUC below 0.5 only
  means the classifier did worse than chance, so it counts as indistinguishable, as
  in SDMetrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from fedsynth.metrics.estimators import fit_classifier
from fedsynth.metrics.subsample import encode, subsample
from fedsynth.tabular.schema import Schema

FOLDS = 3  # the first of 3 stratified group folds is the test set
MIN_ROWS = 10


def detection_score(auc: float) -> float:
    """Map a detection AUC to a score in [0, 1]: 1 at AUC <= 0.5, 0 at AUC 1."""
    return 1.0 - 2.0 * (max(auc, 0.5) - 0.5)


def twin_groups(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Group ids pairing the i-th real and the i-th synthetic copy of each distinct row."""
    row_ids = np.unique(features, axis=0, return_inverse=True)[1].ravel()
    copy_rank = pd.DataFrame({"label": labels, "row": row_ids}).groupby(["label", "row"]).cumcount().to_numpy()
    return np.unique(np.column_stack([row_ids, copy_rank]), axis=0, return_inverse=True)[1].ravel()


def detection(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, max_rows: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Held-out ROC AUC of a real-vs-synthetic classifier on ``min(len(real), len(synthetic), max_rows)`` rows each."""
    n = min(len(real), len(synthetic), max_rows)
    if n < MIN_ROWS:
        return {"auc": None, "score": None, "rows": n, "note": f"needs at least {MIN_ROWS} rows of each table"}
    features = np.vstack([encode(subsample(real, n, seed), schema), encode(subsample(synthetic, n, seed + 1), schema)])
    labels = np.repeat([0, 1], n)
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    train, test = next(folds.split(features, labels, twin_groups(features, labels)))
    model = fit_classifier(features[train], labels[train], seed, early_stopping=True)
    auc = float(roc_auc_score(labels[test], model.predict_proba(features[test])[:, 1]))
    return {"auc": auc, "score": detection_score(auc), "rows": n, "classifier": "HistGradientBoostingClassifier"}
