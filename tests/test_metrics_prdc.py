"""Precision, recall, density, coverage and detection AUC: perfect on a copy, low on a collapsed table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.metrics.detection import detection, detection_score, twin_groups
from fedsynth.metrics.neighbours import nearest_distances
from fedsynth.metrics.prdc import coverage, density, knn_radii, prdc, prdc_features, precision, recall
from fedsynth.tabular.schema import parse_schema
from fedsynth.tabular.table import validate_frame

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": -10, "max": 10},
            {"name": "y", "type": "continuous", "min": -10, "max": 10},
            {"name": "group", "type": "categorical", "categories": ["a", "b", "c"]},
            {"name": "flag", "type": "boolean"},
        ]
    },
    source="prdc.yaml",
)
DISCRETE = parse_schema(
    {
        "columns": [
            {"name": "group", "type": "categorical", "categories": ["a", "b", "c"]},
            {"name": "flag", "type": "boolean"},
        ]
    }
)


def table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    frame = pd.DataFrame(
        {
            "x": x,
            "y": 0.8 * x + rng.normal(0, 0.5, n),
            "group": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
            "flag": np.where(x > 0, "true", "false"),
        }
    )
    return validate_frame(frame, SCHEMA)


def collapsed(n: int) -> pd.DataFrame:
    return validate_frame(
        pd.DataFrame({"x": [0.1] * n, "y": [0.1] * n, "group": ["a"] * n, "flag": ["true"] * n}), SCHEMA
    )


def test_nearest_distances_are_exact_and_sorted():
    ref = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    got = nearest_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), ref, 2)
    assert got.tolist() == [[0.0, 1.0], [0.0, pytest.approx(np.hypot(2, 4))]]


def test_hand_computed_prdc_on_a_line():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[0.5], [1.5], [20.0]])
    k = 1
    real_radii = knn_radii(real, k)  # nearest other point: 1, 1, 1, 8
    fake_radii = knn_radii(fake, k)  # 1, 1, 18.5
    assert real_radii.tolist() == [1.0, 1.0, 1.0, 8.0]
    d = np.abs(real - fake.T)
    assert precision(d, real_radii) == pytest.approx(2 / 3)  # 20 lies in no real ball
    assert recall(d, fake_radii) == pytest.approx(1.0)  # the ball around 20 (radius 18.5) reaches every real point
    assert coverage(d, real_radii) == pytest.approx(3 / 4)  # 10's ball (radius 8) holds no fake point
    # 0.5 is in the balls of 0 and 1; 1.5 in those of 1 and 2; 20 in none: (2 + 2 + 0) / 3 / k
    assert density(d, real_radii, k) == pytest.approx(4 / 3)


def test_identical_tables_score_perfectly():
    real = table(600, 0)
    scores = prdc(real, real.copy(), SCHEMA)
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(1.0)
    assert scores["coverage"] == pytest.approx(1.0)
    assert scores["density"] == pytest.approx(1.0, abs=0.25)


def test_fresh_sample_scores_high():
    scores = prdc(table(600, 0), table(600, 1), SCHEMA)
    assert min(scores["precision"], scores["recall"], scores["coverage"]) > 0.85


def test_collapsed_table_has_low_recall_and_coverage():
    scores = prdc(table(600, 0), collapsed(600), SCHEMA)
    assert scores["recall"] < 0.05
    assert scores["coverage"] < 0.1


def test_discrete_ties_count_exact_matches():
    """All-discrete rows repeat, so k-NN radii are 0: exact matches must still count as inside a ball."""
    rng = np.random.default_rng(0)
    real = validate_frame(
        pd.DataFrame({"group": rng.choice(["a", "b", "c"], 300), "flag": rng.choice(["true", "false"], 300)}), DISCRETE
    )
    scores = prdc(real, real.sample(frac=1, random_state=1), DISCRETE)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0 and scores["coverage"] == 1.0
    only_a = real[real["group"] == "a"]
    partial = prdc(real, only_a, DISCRETE)
    assert partial["precision"] == 1.0
    assert partial["coverage"] == pytest.approx((real["group"] == "a").mean())


def test_subsampling_is_seeded_and_bounded():
    real, fake = table(700, 0), table(700, 1)
    first = prdc(real, fake, SCHEMA, max_rows=300, seed=3)
    assert first == prdc(real, fake, SCHEMA, max_rows=300, seed=3)
    assert first["rows"] == {"real": 300, "synthetic": 300}


def test_too_few_rows_give_none_not_nan():
    assert prdc_features(np.zeros((3, 2)), np.zeros((10, 2)), k=5)["precision"] is None


def test_detection_auc_near_half_for_identical_tables():
    real = table(800, 0)
    result = detection(real, real.copy(), SCHEMA)
    assert result["auc"] == pytest.approx(0.5, abs=0.05)
    assert result["score"] > 0.9


def test_detection_auc_near_half_for_fresh_sample_and_high_for_collapsed():
    real = table(800, 0)
    assert detection(real, table(800, 1), SCHEMA)["auc"] < 0.62
    result = detection(real, collapsed(800), SCHEMA)
    assert result["auc"] > 0.95
    assert result["score"] < 0.1


def test_detection_score_mapping():
    assert detection_score(0.5) == 1.0
    assert detection_score(0.3) == 1.0
    assert detection_score(1.0) == 0.0
    assert detection_score(0.75) == pytest.approx(0.5)


def test_twin_groups_pair_matching_copies_only():
    features = np.array([[0.0], [1.0], [0.0], [0.0], [0.0], [0.0], [2.0]])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    groups = twin_groups(features, labels)
    assert groups[0] == groups[3] and groups[2] == groups[4]  # two real 0s paired with two synthetic 0s
    assert len({groups[0], groups[2], groups[5], groups[1], groups[6]}) == 5  # the third synthetic 0 stays alone


def test_detection_on_discrete_data_with_twins():
    rng = np.random.default_rng(0)
    real = validate_frame(
        pd.DataFrame({"group": rng.choice(["a", "b", "c"], 600), "flag": rng.choice(["true", "false"], 600)}),
        DISCRETE,
    )
    assert detection(real, real.sample(frac=1, random_state=2), DISCRETE)["auc"] == pytest.approx(0.5, abs=0.05)
    skewed = real[real["group"] != "c"]
    assert detection(real, skewed, DISCRETE)["auc"] > 0.6
