"""Column shapes and pair trends: hand-computed cases, identical tables, shuffled columns, constant columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.metrics.fidelity import (
    column_shapes,
    contingency_similarity,
    correlation_similarity,
    ks_complement,
    pair_trends,
    pearson,
    quantile_bins,
    tv_complement,
)
from fedsynth.tabular.schema import parse_schema
from fedsynth.tabular.table import validate_frame

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": -10, "max": 10},
            {"name": "y", "type": "continuous", "min": -10, "max": 10},
            {"name": "age", "type": "integer", "min": 0, "max": 100},
            {"name": "group", "type": "categorical", "categories": ["a", "b", "c"]},
            {"name": "flag", "type": "boolean"},
        ]
    },
    source="fidelity.yaml",
)


def correlated_table(n: int, seed: int) -> pd.DataFrame:
    """Every column strongly tied to x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    frame = pd.DataFrame(
        {
            "x": x,
            "y": 0.9 * x + rng.normal(0, 0.2, n),
            "age": np.clip(np.round(40 + 12 * x + rng.normal(0, 2, n)), 0, 100),
            "group": np.where(x < -0.4, "a", np.where(x < 0.4, "b", "c")),
            "flag": np.where(x + rng.normal(0, 0.3, n) > 0, "true", "false"),
        }
    )
    return validate_frame(frame, SCHEMA)


def shuffled(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.permutation(frame[c].to_numpy()) for c in frame.columns})


# --- hand-computed cases -------------------------------------------------------------------------


def test_ks_complement_hand_computed():
    # ECDFs of {1,2,3,4} and {3,4,5,6} differ by at most 0.5 (at x in [2, 3)).
    assert ks_complement(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == pytest.approx(0.5)
    assert ks_complement(np.array([1.0, 2]), np.array([5.0, 6])) == pytest.approx(0.0)
    assert ks_complement(np.array([1.0, 2, 3]), np.array([3.0, 1, 2])) == pytest.approx(1.0)


def test_tv_complement_hand_computed():
    real = pd.Series(["a", "a", "b", "c"])  # a .5, b .25, c .25
    synthetic = pd.Series(["a", "b", "b", "b"])  # a .25, b .75
    # TV = (|.5-.25| + |.25-.75| + |.25-0|) / 2 = 0.5
    assert tv_complement(real, synthetic) == pytest.approx(0.5)
    assert tv_complement(real, real.sample(frac=1, random_state=0)) == pytest.approx(1.0)
    assert tv_complement(pd.Series(["a"] * 3), pd.Series(["b"] * 3)) == pytest.approx(0.0)


def test_correlation_similarity_hand_computed():
    assert correlation_similarity(0.8, 0.2) == pytest.approx(0.7)
    assert correlation_similarity(1.0, -1.0) == pytest.approx(0.0)
    assert correlation_similarity(-0.3, -0.3) == pytest.approx(1.0)
    x = np.array([1.0, 2, 3, 4])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert pearson(x, np.array([1.0, -1, -1, 1])) == pytest.approx(0.0)


def test_contingency_similarity_hand_computed():
    real = pd.DataFrame({"u": ["a", "a", "b", "b"], "v": ["x", "y", "x", "y"]})  # four cells of .25
    synthetic = pd.DataFrame({"u": ["a", "a", "a", "b"], "v": ["x", "x", "y", "y"]})  # ax .5, ay .25, by .25
    # TV = (.25 + 0 + .25 + 0) / 2 = 0.25
    assert contingency_similarity(real, synthetic) == pytest.approx(0.75)


def test_quantile_bins_use_real_quantiles_and_merge_tied_edges():
    real = np.arange(100, dtype=float)
    bins = quantile_bins(real, np.array([-5.0, 0, 9.5, 50, 99, 1000]))
    assert list(bins) == [0, 0, 0, 5, 9, 9]
    constant = quantile_bins(np.zeros(50), np.array([-1.0, 0, 1]))
    assert list(constant) == [0, 1, 1]


# --- whole tables --------------------------------------------------------------------------------


def test_identical_tables_score_one():
    table = correlated_table(500, 0)
    shapes = column_shapes(table, table.copy(), SCHEMA)
    trends = pair_trends(table, table.copy(), SCHEMA)
    assert shapes["score"] == pytest.approx(1.0)
    assert all(c["score"] == pytest.approx(1.0) for c in shapes["columns"].values())
    assert trends["score"] == pytest.approx(1.0)
    assert len(trends["pairs"]) == 10  # 5 columns: 10 pairs


def test_metric_kinds_follow_column_types():
    table = correlated_table(200, 0)
    shapes = column_shapes(table, table, SCHEMA)["columns"]
    assert shapes["x"]["metric"] == "ks_complement" and shapes["group"]["metric"] == "tv_complement"
    pairs = pair_trends(table, table, SCHEMA)["pairs"]
    assert pairs["x|y"]["metric"] == "correlation_similarity"
    assert pairs["x|group"]["metric"] == "contingency_similarity"
    assert pairs["group|flag"]["metric"] == "contingency_similarity"


def test_shuffled_columns_keep_shapes_but_lose_pair_trends():
    real = correlated_table(2000, 0)
    fake = shuffled(correlated_table(2000, 1), 2)
    shapes = column_shapes(real, fake, SCHEMA)["score"]
    trends = pair_trends(real, fake, SCHEMA)
    same_process = pair_trends(real, correlated_table(2000, 1), SCHEMA)["score"]
    assert shapes > 0.95
    assert same_process > 0.95
    assert trends["score"] < 0.7
    assert trends["pairs"]["x|y"]["score"] < 0.6  # r ≈ 0.98 against ≈ 0


def test_constant_columns_give_no_nan():
    real = correlated_table(300, 0)
    constant = validate_frame(
        pd.DataFrame(
            {"x": [0.0] * 300, "y": [0.0] * 300, "age": [40.0] * 300, "group": ["b"] * 300, "flag": ["true"] * 300}
        ),
        SCHEMA,
    )
    for a, b in [(real, constant), (constant, real), (constant, constant)]:
        shapes = column_shapes(a, b, SCHEMA)
        trends = pair_trends(a, b, SCHEMA)
        values = [shapes["score"], trends["score"]] + [p["score"] for p in trends["pairs"].values()]
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
    assert pair_trends(constant, constant.copy(), SCHEMA)["score"] == pytest.approx(1.0)
    assert column_shapes(real, constant, SCHEMA)["score"] < 0.6
    assert pair_trends(real, constant, SCHEMA)["pairs"]["x|y"]["score"] == pytest.approx(
        1 - abs(pearson(real["x"].to_numpy(), real["y"].to_numpy())) / 2
    )


def test_single_column_schema_has_no_pairs():
    schema = parse_schema({"columns": [{"name": "g", "type": "boolean"}]})
    table = validate_frame(pd.DataFrame({"g": ["true", "false"]}), schema)
    assert pair_trends(table, table, schema) == {"score": None, "pairs": {}}
