"""The combined report: its keys, JSON-safety (no NaN), determinism, and the readable summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.metrics.evaluate import evaluate
from fedsynth.metrics.evaluation_report import json_safe, summary_lines, write_json
from fedsynth.tabular.table import validate_frame


def _fresh(schema, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n).astype(float)
    frame = pd.DataFrame(
        {
            "age": age,
            "income": np.round(np.exp(8 + age / 30 + rng.normal(0, 0.5, n)), 2),
            "region": rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2]),
            "smoker": np.where(rng.random(n) < (age < 40) * 0.4 + 0.1, "true", "false"),
        }
    )
    return validate_frame(frame, schema)


def test_report_has_every_section_and_is_strict_json(small_schema, small_table):
    real = validate_frame(small_table, small_schema)
    holdout, synthetic = _fresh(small_schema, 200, 1), _fresh(small_schema, 400, 2)
    report = evaluate(real, holdout, synthetic, small_schema, target="smoker", seed=0)
    assert set(report) >= {"fidelity", "utility", "privacy", "rows"}
    assert set(report["fidelity"]) >= {"column_shapes", "pair_trends", "prdc", "detection"}
    assert report["rows"] == {"real": 400, "holdout": 200, "synthetic": 400}
    assert report["utility"]["target"] == "smoker"
    json.dumps(report, allow_nan=False)
    assert report == evaluate(real, holdout, synthetic, small_schema, target="smoker", seed=0)


def test_collapsed_synthetic_table_gives_none_not_nan(small_schema, small_table):
    real = validate_frame(small_table, small_schema)
    holdout = _fresh(small_schema, 200, 1)
    constant = validate_frame(
        pd.DataFrame({"age": [50.0] * 50, "income": [1000.0] * 50, "region": ["east"] * 50, "smoker": ["true"] * 50}),
        small_schema,
    )
    report = evaluate(real, holdout, constant, small_schema, target="smoker", max_rows=100)
    text = json.dumps(report, allow_nan=False)
    assert "NaN" not in text
    assert report["utility"]["tstr"]["single_class"] == "true"
    assert report["fidelity"]["prdc"]["coverage"] < 0.1
    assert report["fidelity"]["detection"]["auc"] > 0.9
    assert report["privacy"]["exact_match_rate"] == 0.0


def test_no_target_means_no_utility(small_schema, small_table):
    real = validate_frame(small_table, small_schema)
    report = evaluate(real, _fresh(small_schema, 100, 1), _fresh(small_schema, 100, 2), small_schema, max_rows=100)
    assert report["utility"] is None
    assert any(line.startswith("Privacy") for line in summary_lines(report))


def test_json_safe_replaces_nan_and_unwraps_numpy():
    cleaned = json_safe({"a": np.float64("nan"), "b": [np.int64(3), float("inf")], "c": (np.float32(0.5),)})
    assert cleaned == {"a": None, "b": [3, None], "c": [0.5]}
    assert type(cleaned["b"][0]) is int


def test_write_json_is_atomic_and_strict(tmp_path):
    path = tmp_path / "r.json"
    write_json({"x": float("nan"), "y": np.float64(1.5)}, path)
    assert json.loads(path.read_text()) == {"x": None, "y": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_summary_mentions_single_class(small_schema, small_table):
    real = validate_frame(small_table, small_schema)
    collapsed = real.assign(smoker="false")
    report = evaluate(real, _fresh(small_schema, 100, 1), collapsed, small_schema, target="smoker", max_rows=100)
    text = "\n".join(summary_lines(report))
    assert "single class 'false'" in text
    assert "TSTR" in text and "TRTR" in text


@pytest.mark.parametrize("target", ["age", "region"])
def test_other_target_types(small_schema, small_table, target):
    real = validate_frame(small_table, small_schema)
    report = evaluate(real, _fresh(small_schema, 100, 1), _fresh(small_schema, 100, 2), small_schema, target=target)
    assert report["utility"]["task"] == ("regression" if target == "age" else "classification")
