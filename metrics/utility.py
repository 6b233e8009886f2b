"""Machine-learning utility: train on synthetic, test on real (TSTR) beside train on real (TRTR).

Esteban, Hyland and Rätsch, "Real-valued (Medical) Time Series Generation with
Recurrent Conditional GANs", 2017, introduced TSTR; Xu et al., "Modeling Tabular
Data using Conditional GAN" (CTGAN), NeurIPS 2019, use it for tables.

A model predicts the target column from the other columns, encoded with the codec
(the target's own span is left out). It is trained once on the synthetic table
(TSTR) and once on the real training table (TRTR), and both are tested on the real
holdout. A discrete target gets a ``HistGradientBoostingClassifier`` (accuracy,
macro-F1, and ROC AUC when the target has two categories, the second one counting
as positive); a numeric target a ``HistGradientBoostingRegressor`` (R²). Both stop
early on a 10% validation split of their training rows when there are enough rows
(and, for a classifier, at least 2 of each class).

A training table whose target holds a single class cannot train a classifier: the
model then always predicts that class, and the result says so (``single_class``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, r2_score, roc_auc_score

from fedsynth.core.errors import SchemaError
from fedsynth.metrics.estimators import fit_classifier, fit_regressor
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema

VALIDATION_SHARE = 0.1  # HistGradientBoosting's default validation_fraction for early stopping


def predictors(frame: pd.DataFrame, schema: Schema, target: str) -> np.ndarray:
    """Encoded rows without the target column's span."""
    codec = TableCodec(schema)
    span = next(s for s in codec.spans if s.column.name == target)
    encoded = codec.encode(frame[schema.names])
    return np.delete(encoded, np.arange(span.start, span.stop), axis=1).astype(np.float64)


def _can_stop_early(labels: np.ndarray, classes: int = 1) -> bool:
    """Whether a stratified 10% validation split is possible and worth it."""
    counts = np.unique(labels, return_counts=True)[1] if classes > 1 else np.array([len(labels)])
    return len(labels) >= 20 and counts.min() >= 2 and VALIDATION_SHARE * len(labels) >= classes


def classification_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, positive: str | None, seed: int
) -> dict[str, Any]:
    """Accuracy, macro-F1 and (binary targets) ROC AUC of a classifier trained on one table."""
    classes = np.unique(train_y)
    if len(classes) == 1:
        predicted = np.full(len(test_y), classes[0], dtype=object)
        positive_score = np.full(len(test_y), float(classes[0] == positive))
        note: dict[str, Any] = {"single_class": str(classes[0])}
    else:
        stop = _can_stop_early(train_y, len(classes))
        model = fit_classifier(train_x, train_y, seed, early_stopping=stop)
        predicted = model.predict(test_x)
        known = list(model.classes_)
        positive_score = (
            model.predict_proba(test_x)[:, known.index(positive)] if positive in known else np.zeros(len(test_y))
        )
        note = {"single_class": None}
    auc = None
    if positive is not None and len(np.unique(test_y)) == 2:
        auc = float(roc_auc_score(test_y == positive, positive_score))
    return {
        "accuracy": float(accuracy_score(test_y, predicted)),
        "macro_f1": float(f1_score(test_y, predicted, average="macro", zero_division=0)),
        "roc_auc": auc,
        **note,
    }


def regression_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int
) -> dict[str, Any]:
    """R² on the test rows of a regressor trained on one table."""
    stop = _can_stop_early(train_y)
    model = fit_regressor(train_x, train_y, seed, early_stopping=stop)
    return {"r2": float(r2_score(test_y, model.predict(test_x)))}


def _scores(train: pd.DataFrame, holdout: pd.DataFrame, schema: Schema, target: str, seed: int) -> dict[str, Any]:
    column = schema.column(target)
    if column.nullable and column.is_numeric:  # a missing target cannot be regressed on: leave those rows out
        train, holdout = train[train[target].notna()], holdout[holdout[target].notna()]
    train_x, test_x = predictors(train, schema, target), predictors(holdout, schema, target)
    if column.is_numeric:
        train_y = pd.to_numeric(train[target]).to_numpy(dtype=float)
        test_y = pd.to_numeric(holdout[target]).to_numpy(dtype=float)
        return regression_scores(train_x, train_y, test_x, test_y, seed)
    positive = column.categories[1] if len(column.categories) == 2 else None
    # A missing class label is a class of its own ("").
    train_y, test_y = (frame[target].astype(object).where(frame[target].notna(), "") for frame in (train, holdout))
    train_y, test_y = train_y.to_numpy(dtype=object), test_y.to_numpy(dtype=object)
    return classification_scores(train_x, train_y.astype(str), test_x, test_y.astype(str), positive, seed)


def utility(
    real: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, target: str, seed: int = 0
) -> dict[str, Any]:
    """TSTR and TRTR scores for predicting ``target``, both tested on the real ``holdout``."""
    column = schema.column(target)
    if len(schema.columns) < 2:
        raise SchemaError(f"{schema.source}: utility needs at least one column besides the target '{target}'")
    return {
        "target": target,
        "task": "regression" if column.is_numeric else "classification",
        "tstr": _scores(synthetic, holdout, schema, target, seed),
        "trtr": _scores(real, holdout, schema, target, seed),
    }
