"""TSTR beside TRTR: equal for a fresh sample of the same process, low for a table without signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.core.errors import SchemaError
from fedsynth.metrics.utility import predictors, utility
from fedsynth.tabular.schema import parse_schema
from fedsynth.tabular.table import validate_frame

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": -10, "max": 10},
            {"name": "z", "type": "continuous", "min": -10, "max": 10},
            {"name": "group", "type": "categorical", "categories": ["a", "b", "c"]},
            {"name": "label", "type": "boolean"},
            {"name": "score", "type": "continuous", "min": -50, "max": 50},
        ]
    },
    source="utility.yaml",
)


def process(n: int, seed: int) -> pd.DataFrame:
    """label and score depend on x, z and group."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(0, 1, n), rng.normal(0, 1, n)
    group = rng.choice(["a", "b", "c"], n)
    shift = pd.Series(group).map({"a": -1.0, "b": 0.0, "c": 1.0}).to_numpy()
    logit = 2 * x - z + shift
    frame = pd.DataFrame(
        {
            "x": x,
            "z": z,
            "group": group,
            "label": np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "true", "false"),
            "score": 3 * x + 2 * z + 2 * shift + rng.normal(0, 1, n),
        }
    )
    return validate_frame(frame, SCHEMA)


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return process(1500, 0), process(800, 1), process(1500, 2)


def test_predictors_leave_out_the_target_span():
    frame = process(10, 0)
    assert predictors(frame, SCHEMA, "label").shape == (10, 1 + 1 + 3 + 1)
    assert predictors(frame, SCHEMA, "group").shape == (10, 1 + 1 + 2 + 1)


def test_tstr_matches_trtr_for_a_fresh_sample_classification(tables):
    real, holdout, fresh = tables
    result = utility(real, holdout, fresh, SCHEMA, "label")
    assert result["task"] == "classification"
    tstr, trtr = result["tstr"], result["trtr"]
    assert trtr["roc_auc"] > 0.8
    for key in ("accuracy", "macro_f1", "roc_auc"):
        assert tstr[key] == pytest.approx(trtr[key], abs=0.04), key
    assert tstr["single_class"] is None


def test_tstr_matches_trtr_for_a_fresh_sample_regression(tables):
    real, holdout, fresh = tables
    result = utility(real, holdout, fresh, SCHEMA, "score")
    assert result["task"] == "regression"
    assert result["trtr"]["r2"] > 0.8
    assert result["tstr"]["r2"] == pytest.approx(result["trtr"]["r2"], abs=0.04)


def test_multiclass_target_has_no_roc_auc(tables):
    real, holdout, fresh = tables
    result = utility(real, holdout, fresh, SCHEMA, "group")
    assert result["tstr"]["roc_auc"] is None
    assert 0.0 <= result["tstr"]["accuracy"] <= 1.0


def test_table_without_signal_scores_below_real(tables):
    real, holdout, fresh = tables
    rng = np.random.default_rng(3)
    noise = fresh.assign(label=rng.permutation(fresh["label"].to_numpy()), score=rng.permutation(fresh["score"]))
    classification = utility(real, holdout, noise, SCHEMA, "label")
    assert classification["tstr"]["roc_auc"] < classification["trtr"]["roc_auc"] - 0.2
    regression = utility(real, holdout, noise, SCHEMA, "score")
    assert regression["tstr"]["r2"] < 0.2 < regression["trtr"]["r2"]


def test_single_class_synthetic_target_is_reported_not_a_crash(tables):
    real, holdout, fresh = tables
    collapsed = fresh.assign(label="true")
    result = utility(real, holdout, collapsed, SCHEMA, "label")
    tstr = result["tstr"]
    assert tstr["single_class"] == "true"
    assert tstr["accuracy"] == pytest.approx((holdout["label"] == "true").mean())
    assert tstr["roc_auc"] == 0.5
    assert result["trtr"]["single_class"] is None


def test_unknown_target_is_a_schema_error(tables):
    real, holdout, fresh = tables
    with pytest.raises(SchemaError, match="'nope'"):
        utility(real, holdout, fresh, SCHEMA, "nope")


def test_utility_is_deterministic(tables):
    real, holdout, fresh = tables
    assert utility(real, holdout, fresh, SCHEMA, "label", seed=1) == utility(
        real, holdout, fresh, SCHEMA, "label", seed=1
    )
