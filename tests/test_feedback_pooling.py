"""The server's pooling of the sites' noisy feedback sums into scores (post-processing only)."""

from __future__ import annotations

import math

import pytest

from fedsynth.server.oversight import combine_feedback


def test_scores_are_pooled_sums_over_pooled_public_row_counts():
    answers = {
        "a": {"sum:distance:age": 30.0, "sum:distance:region": 10.0, "sum:covered": 80.0, "noise-std": 3.0,
              "public-rows": 100.0, "epsilon": 0.4},
        "b": {"sum:distance:age": 90.0, "sum:distance:region": 50.0, "sum:covered": 220.0, "noise-std": 4.0,
              "public-rows": 300.0, "epsilon": 0.4},
    }  # fmt: skip
    pooled = combine_feedback(answers)
    assert pooled["sites"] == ["a", "b"] and pooled["refused"] == []
    assert pooled["values"]["shape:age"] == pytest.approx(1 - 120 / 400)
    assert pooled["values"]["shape:region"] == pytest.approx(1 - 60 / 400)
    assert pooled["values"]["coverage"] == pytest.approx(300 / 400)
    assert pooled["noise_std"] == pytest.approx(math.sqrt(9 + 16) / 400)


def test_an_answer_without_a_public_row_count_is_left_out():
    answers = {"a": {"sum:covered": 5.0, "public-rows": 10.0}, "b": {"refused": 1}}
    pooled = combine_feedback(answers)
    assert pooled["sites"] == ["a"] and pooled["refused"] == ["b"]
    assert pooled["values"] == {"coverage": 0.5}
    assert combine_feedback({})["values"] == {}
