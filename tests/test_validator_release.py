"""The release gate: DP counts of copied real rows withhold the table, small cells and forbidden columns and values
are handled."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.client.site_checks import noisy_release_counts
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.sovereignty.policy import parse_policy
from fedsynth.sovereignty.release_gate import apply_release_rules, prepare_release
from fedsynth.sovereignty.rules import epsilon_caps_rule, participation_rule, release_section, sovereignty_section
from fedsynth.tabular.schema import parse_schema

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "age", "type": "integer", "min": 0, "max": 100},
            {"name": "income", "type": "continuous", "min": 0, "max": 200000, "transform": "log"},
            {"name": "region", "type": "categorical", "categories": ["north", "south", "east"]},
            {"name": "smoker", "type": "boolean"},
        ]
    },
    source="release.yaml",
)


def policy(**release) -> object:
    raw = {"allowed_jurisdictions": ["j1", "j2"], "epsilon_caps": {"j2": 0.5}, "release": release}
    return parse_policy(raw, source="test-policy.yaml")


def cells(counts: dict[tuple[str, str], int], seed: int = 0) -> pd.DataFrame:
    """A synthetic table with the given number of rows per (region, smoker) combination."""
    rng = np.random.default_rng(seed)
    parts = []
    for (region, smoker), n in counts.items():
        parts.append(
            pd.DataFrame(
                {
                    "age": rng.integers(18, 90, n).astype(float),
                    "income": rng.uniform(1000, 90000, n),
                    "region": [region] * n,
                    "smoker": [smoker] * n,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


SMALL = {("north", "false"): 10, ("south", "true"): 3, ("east", "false"): 6, ("east", "true"): 1}
QI = {"quasi_identifiers": ["region", "smoker"], "k": 5}


def test_small_cells_are_suppressed_until_every_combination_occurs_k_times():
    table = cells(SMALL)
    released, figures = prepare_release(table, policy(small_cells={**QI, "action": "suppress"}), SCHEMA)
    sizes = released.groupby(["region", "smoker"]).size()
    assert sizes.min() >= 5
    assert sizes.to_dict() == {("east", "false"): 6, ("north", "false"): 10}
    assert figures["small_cells"] == {
        "small_cells_found": 2,
        "rows_in_small_cells": 4,
        "rows_generalised": 0,
        "rows_suppressed": 4,
    }


def test_generalising_replaces_rare_values_by_a_star():
    table = cells({("north", "false"): 10, ("south", "true"): 3, ("east", "true"): 3, ("east", "false"): 1})
    rule = {**QI, "action": "generalise"}
    decision = apply_release_rules(table, policy(no_copies=False, small_cells=rule), SCHEMA, site_counts={})
    released = decision.table
    assert released.groupby(["region", "smoker"]).size().min() >= 5
    assert (released["region"] == "*").sum() == 6  # south/true and east/true merged into */true
    assert len(released) == 16  # the lone east/false row could not reach k even as */*: removed
    assert decision.approved
    figures = decision.rules["small_cells"]
    assert (figures["rows_generalised"], figures["rows_suppressed"], figures["smallest_cell"]) == (6, 1, 6)


def test_a_table_copying_most_real_rows_is_withheld_on_the_noisy_total():
    rules = policy(no_copies=True, min_distance=0.01, forbidden_columns=["income"])
    synthetic = cells({("north", "false"): 30, ("south", "true"): 30})
    released, _ = prepare_release(synthetic, rules, SCHEMA)
    real_a = cells({("east", "false"): 40}, seed=5)  # no released row is in the east
    real_b = pd.concat([synthetic.iloc[:50], cells({("east", "true"): 5}, seed=6)], ignore_index=True)
    counts = {
        site: noisy_release_counts(released, real, SCHEMA, 0.01, 1.0, NoiseSource.secret_source())
        for site, real in (("a", real_a), ("b", real_b))
    }
    assert counts["b"]["columns_compared"] == ["age", "region", "smoker"]
    decision = apply_release_rules(synthetic, rules, SCHEMA, counts)
    assert not decision.approved
    rule = decision.rules["no_copies"]
    assert rule["passed"] is False and rule["by_site"] == {s: c["copied_noisy"] for s, c in counts.items()}
    assert rule["noisy_total"] == counts["a"]["copied_noisy"] + counts["b"]["copied_noisy"]
    assert rule["noise_std"] == pytest.approx(math.sqrt(2 * 2.0))  # two sites, each sqrt(2) (two counts)
    assert rule["tolerance"] == pytest.approx(3 * rule["noise_std"])
    assert rule["noisy_total"] > 30  # 50 real rows copied, noise std 2
    assert "differentially private estimate" in rule["meaning"] and "cannot certify" in rule["meaning"]
    reason = next(r for r in decision.reasons if r.startswith("no_copies:"))
    assert f"noisy total {rule['noisy_total']}" in reason and f"tolerance {rule['tolerance']:.1f}" in reason
    assert any(r.startswith("min_distance: noisy total") for r in decision.reasons)
    assert release_section(decision, "released.csv")["file"] is None


def test_a_copy_on_a_table_of_few_possible_rows_is_explained_not_excused():
    # Only region and smoker are released: 3 x 2 = 6 possible rows, so any faithful table repeats real ones.
    rules = policy(no_copies=True, forbidden_columns=["age", "income"])
    synthetic = cells({("north", "false"): 30, ("south", "true"): 30})
    released, _ = prepare_release(synthetic, rules, SCHEMA)
    counts = {"a": noisy_release_counts(released, synthetic.iloc[:40], SCHEMA, 0.0, 1.0, NoiseSource.secret_source())}
    decision = apply_release_rules(synthetic, rules, SCHEMA, counts)
    assert not decision.approved and decision.rules["no_copies"]["possible_rows"] == 6
    reason = next(r for r in decision.reasons if r.startswith("no_copies:"))
    assert "only 6 different rows exist" in reason and "no_copies: false" in reason
    # With a numeric column released, a copy is evidence: no such explanation.
    kept_age = apply_release_rules(synthetic, policy(no_copies=True, forbidden_columns=["income"]), SCHEMA, counts)
    assert "possible_rows" not in kept_age.rules["no_copies"]


def test_the_gate_passes_a_noisy_total_within_three_noise_std_of_zero():
    rules = policy(no_copies=True, min_distance=0.01, forbidden_columns=["income"])
    synthetic = cells({("north", "false"): 30, ("south", "true"): 30})
    released, _ = prepare_release(synthetic, rules, SCHEMA)
    request = {"synthetic_rows": len(released), "columns_compared": list(released.columns), "distance_threshold": 0.01}
    clean = {"a": {**request, "copied_noisy": 2, "close_noisy": -1, "noise_std": 1.0},
             "b": {**request, "copied_noisy": 2, "close_noisy": 0, "noise_std": 1.0}}  # fmt: skip
    decision = apply_release_rules(synthetic, rules, SCHEMA, clean)
    assert decision.approved, decision.reasons
    assert decision.rules["no_copies"]["noisy_total"] == 4 <= decision.rules["no_copies"]["tolerance"]
    above = {**clean, "b": {**clean["b"], "copied_noisy": 3}}  # 5 > 3 x sqrt(2) = 4.24
    assert not apply_release_rules(synthetic, rules, SCHEMA, above).approved
    # A table with no copies, released by real sites with a reproducible source (deterministic here).
    real = {"a": cells({("east", "false"): 40}, seed=5), "b": cells({("east", "true"): 30}, seed=6)}
    counts = {site: noisy_release_counts(released, rows, SCHEMA, 0.01, 1.0, NoiseSource.reproducible(0, site))
              for site, rows in real.items()}  # fmt: skip
    assert apply_release_rules(synthetic, rules, SCHEMA, counts).approved


def test_counts_missing_or_computed_on_another_table_withhold_the_release():
    rules = policy(no_copies=True, forbidden_columns=["income"])
    synthetic = cells({("north", "false"): 30})
    released, _ = prepare_release(synthetic, rules, SCHEMA)
    real = cells({("south", "true"): 10}, seed=3)
    good = noisy_release_counts(released, real, SCHEMA, 0.0, 1.0, NoiseSource.reproducible(0, "a"))
    assert apply_release_rules(synthetic, rules, SCHEMA, {"a": good}).approved
    missing = apply_release_rules(synthetic, rules, SCHEMA, {"a": good}, expected_sites=["a", "b"])
    assert not missing.approved and missing.rules["no_copies"]["missing_sites"] == ["b"]
    old_style = {k: v for k, v in good.items() if k != "copied_noisy"}  # an answer without the noisy count
    assert not apply_release_rules(synthetic, rules, SCHEMA, {"a": old_style}).approved
    stale = noisy_release_counts(synthetic, real, SCHEMA, 0.0, 1.0, NoiseSource.reproducible(0, "a"))  # income kept
    decision = apply_release_rules(synthetic, rules, SCHEMA, {"a": stale})
    assert not decision.approved and "checked a different table" in decision.reasons[0]
    assert not apply_release_rules(synthetic, rules, SCHEMA, {}).approved


def test_forbidden_columns_are_dropped_and_forbidden_values_removed():
    rules = policy(no_copies=False, forbidden_columns=["income"], forbidden_values={"region": ["south"]})
    decision = apply_release_rules(cells(SMALL), rules, SCHEMA, site_counts={})
    assert decision.approved
    assert list(decision.table.columns) == ["age", "region", "smoker"]
    assert "south" not in set(decision.table["region"])
    assert decision.rules["forbidden_columns"] == {
        "required": True, "passed": True, "forbidden": ["income"], "dropped": ["income"], "present": [],
    }  # fmt: skip
    assert decision.rules["forbidden_values"]["rows_removed"] == 3


def test_sovereignty_rules_gate_the_release_and_are_reported():
    rules = policy(no_copies=False)
    declared = {"site-1": "j1", "site-2": "j2", "site-3": "elsewhere"}
    participation = participation_rule(rules, declared, contributed=["site-1", "site-2"])
    caps = epsilon_caps_rule(rules, declared, {"site-1": 0.9, "site-2": 0.7}, run_epsilon=1.0)
    assert participation["passed"] and participation["excluded"] == {
        "site-3": "jurisdiction 'elsewhere' is not among the policy's allowed_jurisdictions"
    }
    assert caps["sites"]["site-2"] == {"jurisdiction": "j2", "epsilon": 0.7, "cap": 0.5, "passed": False}
    decision = apply_release_rules(
        cells(SMALL), rules, SCHEMA, {}, other_rules={"participation": participation, "epsilon_caps": caps}
    )
    assert not decision.approved and decision.reasons == ["epsilon_caps: site-2 spent ε 0.700 over its cap 0.500"]
    section = sovereignty_section(rules, decision)
    assert section["policy"]["digest"] == rules.digest and section["passed"] is False
    assert not participation_rule(rules, declared, contributed=["site-3"])["passed"]


def test_preparing_checks_the_policy_against_the_schema():
    with pytest.raises(Exception, match="column 'zip' is not in the schema"):
        prepare_release(cells(SMALL), policy(forbidden_columns=["zip"]), SCHEMA)
