"""Privacy metrics flag a copy of the training rows and not an independent sample of the same distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.metrics.disclosure import closer_share, exact_match_rate, membership_inference_auc, nndr, privacy
from fedsynth.tabular.schema import parse_schema
from fedsynth.tabular.table import validate_frame

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": -10, "max": 10},
            {"name": "y", "type": "continuous", "min": -10, "max": 10},
            {"name": "group", "type": "categorical", "categories": ["a", "b"]},
        ]
    },
    source="privacy.yaml",
)


def noisy(n: int, seed: int) -> pd.DataFrame:
    """A small dataset with continuous noise: no two rows coincide."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    frame = pd.DataFrame({"x": x, "y": x + rng.normal(0, 1, n), "group": rng.choice(["a", "b"], n)})
    return validate_frame(frame, SCHEMA)


def test_copy_of_training_rows_is_flagged_by_every_metric():
    train, holdout = noisy(300, 0), noisy(300, 1)
    result = privacy(train, holdout, train.sample(frac=1, random_state=5), SCHEMA)
    assert result["exact_match_rate"] == 1.0
    assert result["exact_match_rate_holdout"] == 0.0
    assert result["dcr_train"] == {"median": 0.0, "p5": 0.0}
    assert result["dcr_holdout"]["median"] > 0.0
    assert result["closer_to_train_share"] == 1.0
    assert result["nndr_median"] == 0.0
    assert result["mia_auc"] > 0.9


def test_independent_sample_is_not_flagged():
    train, holdout, fresh = noisy(300, 0), noisy(300, 1), noisy(300, 2)
    result = privacy(train, holdout, fresh, SCHEMA)
    assert result["exact_match_rate"] == 0.0
    assert result["dcr_train"]["median"] > 0.0
    assert result["closer_to_train_share"] == pytest.approx(0.5, abs=0.1)
    assert result["nndr_median"] > 0.4
    assert result["mia_auc"] == pytest.approx(0.5, abs=0.08)


def test_partial_copy_sits_in_between():
    train, holdout, fresh = noisy(300, 0), noisy(300, 1), noisy(300, 2)
    half = pd.concat([train.iloc[:150], fresh.iloc[:150]], ignore_index=True)
    result = privacy(train, holdout, half, SCHEMA)
    assert result["exact_match_rate"] == pytest.approx(0.5)
    assert 0.6 < result["mia_auc"] < 0.9


def test_exact_match_compares_every_column():
    train = noisy(20, 0)
    altered = train.copy()
    altered.loc[:9, "group"] = altered.loc[:9, "group"].map({"a": "b", "b": "a"})
    assert exact_match_rate(altered, train, SCHEMA) == pytest.approx(0.5)


def test_closer_share_counts_ties_as_half():
    assert closer_share(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0, 3.0])) == pytest.approx(0.5)


def test_nndr_hand_computed_and_defined_for_double_zero():
    ratios = nndr(np.array([[1.0, 4.0], [0.0, 2.0], [0.0, 0.0], [3.0, 3.0]]))
    assert ratios.tolist() == [0.25, 0.0, 1.0, 1.0]


def test_membership_attack_scores_closeness_to_synthetic_rows():
    synthetic = np.array([[0.0], [10.0]])
    members = np.array([[0.1], [9.9]])
    non_members = np.array([[5.0], [20.0]])
    assert membership_inference_auc(members, non_members, synthetic) == 1.0
    assert membership_inference_auc(non_members, members, synthetic) == 0.0


def test_privacy_is_deterministic_given_a_seed():
    train, holdout, fresh = noisy(500, 0), noisy(200, 1), noisy(800, 2)
    first = privacy(train, holdout, fresh, SCHEMA, max_rows=300, seed=4)
    assert first == privacy(train, holdout, fresh, SCHEMA, max_rows=300, seed=4)
    assert first["rows"] == {"synthetic": 300, "candidates": 400}
