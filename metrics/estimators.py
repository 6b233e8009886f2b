"""The gradient-boosted models that the detection and utility metrics train, set up in one place.

scikit-learn's ``HistGradientBoosting*`` models are fast on a few thousand rows.
They are fitted with OpenMP limited to one thread: the models are small, and on
the project's two shared cores OpenMP's spinning threads made fits about ten times
slower under load than a single thread (same results either way).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits


def fit_classifier(x: np.ndarray, y: np.ndarray, seed: int, early_stopping: bool) -> HistGradientBoostingClassifier:
    """A ``HistGradientBoostingClassifier`` fitted on ``x``, ``y`` (early stopping on a 10% split if asked)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return HistGradientBoostingClassifier(early_stopping=early_stopping, random_state=seed).fit(x, y)


def fit_regressor(x: np.ndarray, y: np.ndarray, seed: int, early_stopping: bool) -> HistGradientBoostingRegressor:
    """A ``HistGradientBoostingRegressor`` fitted on ``x``, ``y`` (early stopping on a 10% split if asked)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return HistGradientBoostingRegressor(early_stopping=early_stopping, random_state=seed).fit(x, y)
