"""Collapse monitoring: collapsed samples are flagged, diverse ones are not; the history picks the right action."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.core.errors import ConfigError
from fedsynth.tabular.schema import parse_schema
from fedsynth.validator.collapse import CollapseRule, ValidatorHistory, health_score, synthetic_health

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": 0, "max": 10},
            {"name": "n", "type": "integer", "min": 0, "max": 20},
            {"name": "edu", "type": "categorical", "categories": ["a", "b", "c", "d", "e", "f"]},
            {"name": "flag", "type": "boolean"},
        ]
    },
    source="collapse.yaml",
)


def diverse(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 10, rows),
            "n": rng.integers(0, 21, rows).astype(float),
            "edu": rng.choice(list("abcdef"), rows).astype(object),
            "flag": rng.choice(["false", "true"], rows, p=[0.7, 0.3]).astype(object),
        }
    )


def one_point(rows: int = 600) -> pd.DataFrame:
    return pd.DataFrame({"x": [5.0] * rows, "n": [3.0] * rows, "edu": ["a"] * rows, "flag": ["true"] * rows})


def test_diverse_table_is_healthy(small_table, small_schema):
    for table, schema in ((diverse(), SCHEMA), (small_table, small_schema)):
        health = synthetic_health(table, schema)
        assert CollapseRule().check(health) == []
        assert health["duplicate_share"] == 0.0
        assert health["coverage_min"] == 1.0
        assert health_score(health) == pytest.approx(1.0)


def test_everything_on_one_point_is_flagged_for_every_symptom():
    health = synthetic_health(one_point(), SCHEMA)
    reasons = CollapseRule().check(health)
    text = " ".join(reasons)
    assert "column 'edu': 1 of 6 categories" in text
    assert "column 'flag': entropy 0.000" in text
    assert "duplicate rows" in text
    assert "column 'x': spread 0.0000" in text and "column 'n': spread" in text
    assert health["clusters"] == 1
    assert health_score(health) < 0.5 * health_score(synthetic_health(diverse(), SCHEMA))


def test_one_category_in_every_row_is_flagged_even_with_diverse_numerics():
    table = diverse()
    table["edu"] = "c"
    reasons = CollapseRule().check(synthetic_health(table, SCHEMA))
    assert reasons and all("'edu'" in r for r in reasons)


def test_health_figures_by_hand():
    table = pd.DataFrame(
        {"x": [0.0, 10.0, 0.0, 10.0], "n": [0.0, 20.0, 0.0, 20.0], "edu": ["a", "b", "a", "b"], "flag": ["true"] * 4}
    )
    health = synthetic_health(table, SCHEMA)
    assert health["categorical"]["edu"]["coverage"] == pytest.approx(2 / 6)
    assert health["categorical"]["edu"]["entropy"] == pytest.approx(np.log(2) / np.log(6))
    assert health["categorical"]["edu"]["missing"] == ["c", "d", "e", "f"]
    assert health["numeric"]["x"]["spread"] == pytest.approx(0.5)  # std of {0, 1} over the unit range
    assert health["numeric"]["n"]["distinct_share"] == pytest.approx(0.5)
    assert health["duplicate_share"] == pytest.approx(0.5)
    assert health["clusters"] == 2


def test_duplicates_are_judged_against_what_a_small_domain_allows():
    schema = parse_schema({"columns": [{"name": "a", "type": "boolean"}, {"name": "b", "type": "boolean"}]}, "b.yaml")
    rng = np.random.default_rng(1)
    full = pd.DataFrame({"a": rng.choice(["false", "true"], 400), "b": rng.choice(["false", "true"], 400)})
    health = synthetic_health(full, schema)
    assert health["domain_rows"] == 4
    assert health["duplicate_share"] == pytest.approx(0.99)
    assert health["duplicate_share_adjusted"] == 0.0
    assert CollapseRule().check(health) == []
    single = pd.DataFrame({"a": ["true"] * 400, "b": ["false"] * 400})
    assert synthetic_health(single, schema)["duplicate_share_adjusted"] == pytest.approx(0.75)


def record(server_round: int, table: pd.DataFrame) -> dict:
    return {"round": server_round, "healthy": True, "health": synthetic_health(table, SCHEMA)}


def test_vanishing_categories_are_flagged_against_the_reference_round():
    narrowed = diverse(seed=1)
    narrowed["edu"] = narrowed["edu"].map({"a": "a", "b": "b", "c": "c", "d": "d", "e": "a", "f": "b"})
    health = synthetic_health(narrowed, SCHEMA)
    assert CollapseRule().check(health) == []  # coverage 4/6 alone is fine
    reasons = CollapseRule().check(health, [record(1, diverse())])
    assert reasons == ["categories vanished since round 1: edu=e, edu=f"]
    assert CollapseRule(max_vanished_categories=2).check(health, [record(1, diverse())]) == []


def test_cluster_drop_is_flagged():
    rng = np.random.default_rng(2)
    squeezed = diverse(seed=2)
    squeezed["x"] = rng.uniform(5.0, 5.9, len(squeezed))  # one bin, but still some spread
    squeezed["n"] = 7.0 + (rng.random(len(squeezed)) < 0.5)  # two values in one bin
    health = synthetic_health(squeezed, SCHEMA)
    assert CollapseRule().check(health) == []
    reasons = CollapseRule().check(health, [record(1, diverse())])
    assert len(reasons) == 1 and reasons[0].startswith("clusters fell to 12 from")


def test_rule_values_are_validated():
    with pytest.raises(ConfigError, match="min_category_coverage"):
        CollapseRule(min_category_coverage=1.5)
    with pytest.raises(ConfigError, match="unknown key 'max-dupes'"):
        CollapseRule.from_mapping({"max-dupes": 0.1})
    assert CollapseRule.from_mapping({"max-duplicate-share": 0.2}).max_duplicate_share == 0.2
    with pytest.raises(ConfigError, match="action"):
        ValidatorHistory(action="restart")


HEALTHY = synthetic_health(diverse(), SCHEMA)
COLLAPSED = synthetic_health(one_point(), SCHEMA)


def test_rollback_goes_to_the_last_healthy_round_with_patience():
    history = ValidatorHistory(action="rollback", patience=2, lr_factor=0.5)
    assert history.observe(1, HEALTHY).action == "continue"
    assert history.observe(2, HEALTHY).action == "continue"
    first = history.observe(3, COLLAPSED)
    assert (first.healthy, first.action, first.rollback_to) == (False, "record", None)
    second = history.observe(4, COLLAPSED)
    assert (second.action, second.rollback_to, second.lr_scale) == ("rollback", 2, 0.5)
    assert history.observe(5, HEALTHY).lr_scale == 0.5
    history.observe(6, COLLAPSED)
    third = history.observe(7, COLLAPSED)
    assert (third.action, third.rollback_to, third.lr_scale) == ("rollback", 5, 0.25)
    assert history.best_round == 5


def test_rollback_target_is_the_last_healthy_round_even_when_an_earlier_one_scored_higher():
    thinner = diverse(seed=3)
    thinner["edu"] = thinner["edu"].replace("f", "e")  # 5 of 6 categories: healthy, lower score
    history = ValidatorHistory(action="rollback")
    history.observe(1, HEALTHY)
    history.observe(2, synthetic_health(thinner, SCHEMA))
    verdict = history.observe(3, COLLAPSED)
    assert (verdict.rollback_to, verdict.best_round) == (2, 1)


def test_rollback_without_any_healthy_round_restarts_from_the_initial_model_then_stops():
    history = ValidatorHistory(action="rollback", max_rollbacks=1)
    verdict = history.observe(1, COLLAPSED)
    assert (verdict.action, verdict.rollback_to) == ("rollback", 0)
    verdict = history.observe(2, COLLAPSED)
    assert verdict.action == "stop" and "max_rollbacks" in verdict.reasons[-1]
    assert history.to_dict()["final"]["verdict"] == "stopped"


def test_stop_and_record_actions_and_the_best_round():
    stop = ValidatorHistory(action="stop")
    stop.observe(1, HEALTHY)
    stop.observe(2, HEALTHY)
    verdict = stop.observe(3, COLLAPSED)
    assert (verdict.action, verdict.best_round) == ("stop", 2)
    keep = ValidatorHistory(action="record")
    keep.observe(1, HEALTHY)
    assert keep.observe(2, COLLAPSED).action == "record"
    assert keep.best_round == 1


def test_history_round_trips_through_json_with_trends():
    history = ValidatorHistory(action="rollback")
    for server_round, health in enumerate((HEALTHY, HEALTHY, COLLAPSED, HEALTHY), start=1):
        history.observe(server_round, health)
    data = json.loads(json.dumps(history.to_dict(), allow_nan=False))
    assert data["final"]["collapsed_rounds"] == [3]
    assert data["final"]["rollbacks"] == [{"round": 3, "to": 2, "lr_scale": 0.5}]
    assert data["trends"]["duplicate_share"]["values"] == [0.0, 0.0, pytest.approx(1 - 1 / 600), 0.0]
    restored = ValidatorHistory.from_dict(data)
    assert restored.records == history.records and restored.lr_scale == 0.5
    assert restored.observe(5, COLLAPSED).rollback_to == 4
