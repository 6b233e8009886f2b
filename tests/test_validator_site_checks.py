"""Site-side checks: the counts are right, only counts come back, and the noise has the stated scale."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from privacy.budget import epsilon_of
from tabular.schema import parse_schema
from tabular.table import validate_frame
from validator.site_checks import (
    epsilon_with_release,
    fidelity_aggregates,
    gaussian_release_cost,
    noisy_fidelity,
    release_counts,
)

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": -10, "max": 10},
            {"name": "y", "type": "continuous", "min": -10, "max": 10},
            {"name": "group", "type": "categorical", "categories": ["a", "b"]},
        ]
    },
    source="site.yaml",
)


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(0, 1, n), "y": rng.normal(0, 1, n), "group": rng.choice(["a", "b"], n)})
    return validate_frame(frame, SCHEMA)


def test_counts_copies_and_near_rows_only():
    real = rows(200, 0)
    copies = real.iloc[:3]
    near = real.iloc[3:5].assign(x=real["x"].iloc[3:5] + 0.05)  # encoded distance 0.005
    far = pd.DataFrame({"x": [9.5] * 20, "y": np.linspace(-9, 9, 20), "group": ["a"] * 20})  # >= 0.5 away
    synthetic = pd.concat([copies, near, far], ignore_index=True)
    counts = release_counts(synthetic, real, SCHEMA, distance_threshold=0.05)
    assert counts == {
        "synthetic_rows": 25,
        "columns_compared": ["x", "y", "group"],
        "copies": 3,
        "closer_than_threshold": 5,
        "distance_threshold": 0.05,
    }
    assert release_counts(synthetic, real, SCHEMA, distance_threshold=0.0)["closer_than_threshold"] == 0
    assert release_counts(far, real, SCHEMA, distance_threshold=0.05)["copies"] == 0


def test_counts_compare_the_released_form_dropped_columns_and_wildcards():
    real = rows(50, 1)
    synthetic = real.iloc[:4].copy()
    synthetic["y"] = 9.9  # differs from every real row in y ...
    released = synthetic.drop(columns=["y"])  # ... but y is not released: the projection copies real rows
    assert release_counts(synthetic, real, SCHEMA, 0.01)["copies"] == 0
    assert release_counts(released, real, SCHEMA, 0.01)["copies"] == 4
    wildcard = released.copy()
    wildcard["group"] = wildcard["group"].map({"a": "b", "b": "a"})
    assert release_counts(wildcard, real, SCHEMA, 0.01)["copies"] == 0
    wildcard.loc[:1, "group"] = "*"  # a generalised value matches any real value
    counts = release_counts(wildcard, real, SCHEMA, 1e-9)  # x alone is released: keep "close" to exact matches
    assert (counts["copies"], counts["closer_than_threshold"]) == (2, 2)
    only_group = wildcard[["group"]]  # two rows fully generalised, two with a group some real row has
    assert release_counts(only_group, real, SCHEMA, 0.5)["copies"] == 4


def test_counts_do_not_depend_on_the_numeric_dtype():
    real = rows(30, 2)
    as_text = real.iloc[:5].astype({"x": str, "y": str})
    assert release_counts(as_text, real, SCHEMA, 0.0)["copies"] == 5


def test_coverage_uses_the_public_radius_by_hand():
    real = validate_frame(pd.DataFrame({"x": [0.0, 2.0, 4.0, 6.0], "y": [0.0] * 4, "group": ["a"] * 4}), SCHEMA)
    synthetic = validate_frame(pd.DataFrame({"x": [0.5, 6.0], "y": [0.0, 0.0], "group": ["a", "b"]}), SCHEMA)
    # Encoded distances: real x=0 is 0.05 from the first synthetic row; real x=2 is 0.15; x=6 differs in group.
    assert fidelity_aggregates(synthetic, real, SCHEMA, radius=0.1)["coverage"] == 0.25
    assert fidelity_aggregates(synthetic, real, SCHEMA, radius=0.2)["coverage"] == 0.5


def test_release_cost_by_hand():
    # 4 values, 101 rows: L2 sensitivity sqrt(4)/100 = 0.02; noise std 0.1 -> multiplier 5.
    assert gaussian_release_cost(4, 0.1, 101) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="n_rows"):
        gaussian_release_cost(4, 0.1, 1)


def test_each_aggregate_moves_by_at_most_one_over_n_minus_one_when_a_row_is_added_or_removed():
    real, synthetic = rows(40, 3), rows(60, 4)
    bound = 1.0 / (len(real) - 1)
    exact = fidelity_aggregates(synthetic, real, SCHEMA)
    rng = np.random.default_rng(5)
    extremes = pd.DataFrame({"x": [10.0, -10.0], "y": [10.0, 0.0], "group": ["b", "a"]})
    neighbours = [real.drop(index=i).reset_index(drop=True) for i in rng.choice(len(real), 10, replace=False)]
    neighbours += [pd.concat([real, extremes.iloc[[j]]], ignore_index=True) for j in range(2)]
    worst = max(
        abs(fidelity_aggregates(synthetic, other, SCHEMA)[key] - value)
        for other in neighbours
        for key, value in exact.items()
    )
    assert 0 < worst <= bound + 1e-12


def test_noise_has_the_stated_scale():
    real, synthetic = rows(60, 6), rows(60, 7)
    exact = fidelity_aggregates(synthetic, real, SCHEMA)
    assert noisy_fidelity(synthetic, real, SCHEMA, 0.0, np.random.default_rng(0))["values"] == exact
    rng = np.random.default_rng(8)
    draws = []
    for _ in range(300):
        released = noisy_fidelity(synthetic, real, SCHEMA, 0.05, rng)
        draws += [released["values"][k] - v for k, v in exact.items()]
    draws = np.asarray(draws)
    assert abs(draws.mean()) < 0.005
    assert draws.std() == pytest.approx(0.05, rel=0.08)
    assert released["num_values"] == 4
    assert released["noise_multiplier"] == pytest.approx(0.05 * 59 / math.sqrt(4))


def test_epsilon_with_release_adds_one_gaussian_release():
    history = [(1.1, 0.02, 100)]
    after = epsilon_with_release(history, 2.0, 1e-5, "rdp")
    assert after == pytest.approx(epsilon_of([*history, (2.0, 1.0, 1)], 1e-5, "rdp"))
    assert after > epsilon_of(history, 1e-5, "rdp")
