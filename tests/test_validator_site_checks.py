"""Site-side checks: the exact counts are right and move by at most 1 per row, only noisy counts come back,
and the noise has the stated scale."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.client.site_checks import (
    _real_row_counts,
    feedback_sums,
    ks_distance_count,
    noisy_feedback,
    noisy_release_counts,
    tv_distance_count,
)
from fedsynth.privacy.budget import epsilon_of
from fedsynth.privacy.mechanisms import epsilon_with_release
from fedsynth.privacy.secret_noise import NoiseSource
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
    source="site.yaml",
)


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(0, 1, n), "y": rng.normal(0, 1, n), "group": rng.choice(["a", "b"], n)})
    return validate_frame(frame, SCHEMA)


def grid_rows() -> pd.DataFrame:
    """Nine real rows on a line, 2 apart in x (0.2 in encoded space), the groups alternating."""
    x = np.arange(-8.0, 9.0, 2.0)
    return validate_frame(pd.DataFrame({"x": x, "y": 0.0, "group": ["a", "b"] * 4 + ["a"]}), SCHEMA)


def test_real_row_counts_by_hand():
    real = grid_rows()
    synthetic = pd.concat(
        [
            real.iloc[[0, 0, 0]],  # three synthetic copies of one real row: it counts once
            real.iloc[[1]],  # a copy of a second real row
            real.iloc[[2]].assign(x=real["x"].iloc[2] + 0.1),  # 0.01 from a third (encoded)
            pd.DataFrame({"x": [9.9], "y": [9.9], "group": ["b"]}),  # far from every real row
        ],
        ignore_index=True,
    )
    assert _real_row_counts(synthetic, real, SCHEMA, 0.05) == (2, 3)
    assert _real_row_counts(synthetic, real, SCHEMA, 0.0) == (2, 0)  # no threshold: no "close" count
    assert _real_row_counts(synthetic, real, SCHEMA, 0.45) == (2, 5)  # real rows 3, 4: 0.4, 0.39 from released ones
    assert _real_row_counts(synthetic.iloc[5:], real, SCHEMA, 0.05) == (0, 0)
    with pytest.raises(ValueError, match="distance_threshold"):
        noisy_release_counts(synthetic, real, SCHEMA, -1.0, 1.0, NoiseSource.secret_source())


def test_real_row_counts_compare_the_released_form_dropped_columns_and_wildcards():
    real = rows(50, 1)
    synthetic = real.iloc[:4].copy()
    synthetic["y"] = 9.9  # differs from every real row in y ...
    released = synthetic.drop(columns=["y"])  # ... but y is not released: the projection copies real rows
    assert _real_row_counts(synthetic, real, SCHEMA, 0.01) == (0, 0)
    assert _real_row_counts(released, real, SCHEMA, 1e-9) == (4, 4)
    wildcard = released.copy()
    wildcard["group"] = wildcard["group"].map({"a": "b", "b": "a"})
    assert _real_row_counts(wildcard, real, SCHEMA, 0.01)[0] == 0
    wildcard.loc[:1, "group"] = "*"  # a generalised value matches any real value
    assert _real_row_counts(wildcard, real, SCHEMA, 1e-9) == (2, 2)  # x alone decides for those two rows
    only_group = wildcard[["group"]]  # two rows fully generalised: every real row has a "copy"
    assert _real_row_counts(only_group, real, SCHEMA, 0.5) == (50, 50)


def test_real_row_counts_do_not_depend_on_the_numeric_dtype():
    real = rows(30, 2)
    as_text = real.iloc[:5].astype({"x": str, "y": str})
    assert _real_row_counts(as_text, real, SCHEMA, 0.0) == (5, 0)


def test_adding_or_removing_one_real_row_moves_each_count_by_at_most_one():
    real = rows(40, 3)
    twin = pd.DataFrame({"x": [1.5], "y": [-2.5], "group": ["b"]})
    synthetic = pd.concat(
        [
            real.iloc[:6],
            real.iloc[6:10].assign(x=real["x"].iloc[6:10] + 0.05),
            pd.concat([twin] * 3, ignore_index=True),  # three synthetic rows equal to one possible real row
            rows(20, 4),
        ],
        ignore_index=True,
    )
    synthetic.loc[len(synthetic) - 2 :, "group"] = "*"
    exact = _real_row_counts(synthetic, real, SCHEMA, 0.05)
    extremes = pd.DataFrame({"x": [10.0, -10.0, 1.5], "y": [10.0, 0.0, -2.5], "group": ["b", "a", "b"]})
    neighbours = [real.drop(index=i).reset_index(drop=True) for i in range(len(real))]
    neighbours += [pd.concat([real, extremes.iloc[[j]]], ignore_index=True) for j in range(len(extremes))]
    neighbours += [pd.concat([real, real.iloc[[i]]], ignore_index=True) for i in (0, 7, 20)]  # a duplicate row
    moves = np.array([np.subtract(_real_row_counts(synthetic, other, SCHEMA, 0.05), exact) for other in neighbours])
    assert np.abs(moves).max() == 1  # three synthetic copies of the added twin still add 1 to each count
    with_twin = pd.concat([real, validate_frame(twin, SCHEMA)], ignore_index=True)
    assert np.subtract(_real_row_counts(synthetic, with_twin, SCHEMA, 0.05), exact).tolist() == [1, 1]


def test_noisy_release_counts_are_whole_and_have_the_stated_scale():
    real = grid_rows()
    synthetic = pd.concat([real.iloc[[0, 0, 1]], real.iloc[[2]].assign(x=real["x"].iloc[2] + 0.1)], ignore_index=True)
    z = 3.0
    noise = NoiseSource.secret_source()
    draws = [noisy_release_counts(synthetic, real, SCHEMA, 0.05, z, noise) for _ in range(1000)]
    first = draws[0]
    assert set(first) == {"synthetic_rows", "columns_compared", "distance_threshold", "copied_noisy", "close_noisy",
                          "noise_std"}  # fmt: skip
    assert (first["synthetic_rows"], first["columns_compared"], first["distance_threshold"]) == (
        4,
        ["x", "y", "group"],
        0.05,
    )
    assert first["noise_std"] == pytest.approx(z * math.sqrt(2))
    values = np.array([[d["copied_noisy"], d["close_noisy"]] for d in draws])
    assert all(type(d["copied_noisy"]) is int and type(d["close_noisy"]) is int for d in draws)
    errors = (values - np.array([2, 3])).reshape(-1)
    scale = z * math.sqrt(2)
    assert abs(errors.mean()) < 5 * scale / math.sqrt(errors.size)
    assert errors.std() == pytest.approx(scale, rel=5 / math.sqrt(2 * errors.size))
    one = noisy_release_counts(synthetic, real, SCHEMA, 0.0, z, noise)  # no threshold: one count, scale z
    assert "close_noisy" not in one and one["noise_std"] == pytest.approx(z)


def test_noisy_release_counts_are_secret_unless_the_run_asked_for_reproducible_noise():
    real = grid_rows()
    synthetic = real.iloc[:3]
    first, second = (noisy_release_counts(synthetic, real, SCHEMA, 0.05, 50.0, NoiseSource.secret_source())
                     for _ in range(2))  # fmt: skip
    assert (first["copied_noisy"], first["close_noisy"]) != (second["copied_noisy"], second["close_noisy"])
    label = (0, "a", "release-check")
    again = [noisy_release_counts(synthetic, real, SCHEMA, 0.05, 50.0, NoiseSource.reproducible(*label))
             for _ in range(2)]  # fmt: skip
    assert again[0] == again[1]
    with pytest.raises(ValueError, match="noise_multiplier"):
        noisy_release_counts(synthetic, real, SCHEMA, 0.05, 0.0, NoiseSource.secret_source())


def test_coverage_counts_real_rows_within_the_public_radius_by_hand():
    real = validate_frame(pd.DataFrame({"x": [0.0, 2.0, 4.0, 6.0], "y": [0.0] * 4, "group": ["a"] * 4}), SCHEMA)
    synthetic = validate_frame(pd.DataFrame({"x": [0.5, 6.0], "y": [0.0, 0.0], "group": ["a", "b"]}), SCHEMA)
    # Encoded distances: real x=0 is 0.05 from the first synthetic row; real x=2 is 0.15; x=6 differs in group.
    assert feedback_sums(synthetic, real, SCHEMA, radius=0.1)["covered"] == 1
    assert feedback_sums(synthetic, real, SCHEMA, radius=0.2)["covered"] == 2


def test_distance_sums_by_hand():
    # Real {0, 1, 2}, synthetic {0.5, 2.5}: at x=0 C=1, 3F=0 -> 1; x=0.5: C=1, 3F=1.5 -> 0.5; x=1: C=2, 1.5 -> 0.5;
    # x=2: C=3, 1.5 -> 1.5; x=2.5: C=3, 3 -> 0. So n·KS = 1.5 (KS = 0.5).
    assert ks_distance_count(np.array([0.0, 1.0, 2.0]), np.array([0.5, 2.5])) == pytest.approx(1.5)
    # Real a,a,b (n=3), synthetic shares a 1/4, c 3/4: ½(|2 − 0.75| + |1 − 0| + |0 − 2.25|) = 2.25.
    real, synthetic = pd.Series(["a", "a", "b"]), pd.Series(["a", "c", "c", "c"])
    assert tv_distance_count(real, synthetic) == pytest.approx(2.25)
    assert ks_distance_count(np.array([]), np.array([1.0])) == 0.0


def test_each_sum_moves_by_at_most_one_when_a_row_is_added_or_removed_whatever_the_row_count():
    for n in (5, 40, 400):
        real, synthetic = rows(n, 3), rows(60, 4)
        exact = feedback_sums(synthetic, real, SCHEMA)
        rng = np.random.default_rng(5)
        extremes = pd.DataFrame({"x": [10.0, -10.0, 0.0], "y": [10.0, 0.0, 0.0], "group": ["b", "a", "a"]})
        picks = rng.choice(len(real), min(10, len(real)), replace=False)
        neighbours = [real.drop(index=i).reset_index(drop=True) for i in picks]
        neighbours += [pd.concat([real, extremes.iloc[[j]]], ignore_index=True) for j in range(3)]
        moves = [abs(feedback_sums(synthetic, other, SCHEMA)[key] - value)
                 for other in neighbours for key, value in exact.items()]  # fmt: skip
        assert 0 < max(moves) <= 1.0 + 1e-9


def test_feedback_noise_has_the_stated_scale_and_is_secret():
    real, synthetic = rows(60, 6), rows(60, 7)
    exact = feedback_sums(synthetic, real, SCHEMA)
    assert set(exact) == {"distance:x", "distance:y", "distance:group", "covered"}
    draws = []
    for _ in range(300):
        released = noisy_feedback(synthetic, real, SCHEMA, 0.5, NoiseSource.secret_source())
        draws += [released["values"][k] - v for k, v in exact.items()]
    draws = np.asarray(draws)
    assert released["num_values"] == 4 and released["noise_std"] == pytest.approx(0.5 * math.sqrt(4))
    assert abs(draws.mean()) < 0.1
    assert draws.std() == pytest.approx(1.0, rel=0.08)
    again = [noisy_feedback(synthetic, real, SCHEMA, 0.5, NoiseSource.reproducible(1, "a", "feedback"))
             for _ in range(2)]  # fmt: skip
    assert again[0] == again[1]
    with pytest.raises(ValueError, match="noise_multiplier"):
        noisy_feedback(synthetic, real, SCHEMA, 0.0, NoiseSource.secret_source())


def test_epsilon_with_release_adds_one_gaussian_release():
    history = [(1.1, 0.02, 100)]
    after = epsilon_with_release(history, 2.0, 1e-5, "rdp")
    assert after == pytest.approx(epsilon_of([*history, (2.0, 1.0, 1)], 1e-5, "rdp"))
    assert after > epsilon_of(history, 1e-5, "rdp")
