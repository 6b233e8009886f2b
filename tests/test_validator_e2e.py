"""The validator in a real simulated federation: policy, DP site feedback and the DP release check in ε, the gate."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fedsynth.privacy.budget import SiteBudget
from fedsynth.tabular.schema import dump_schema

pytestmark = pytest.mark.e2e
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")

POLICY = """\
name: test-federation
allowed_jurisdictions: [north, south]
epsilon_caps: {south: 1.5}
release:
  no_copies: true
  min_distance: 50.0
"""


def test_policy_release_check_and_withheld_release(tmp_path, small_schema, small_table):
    data, schema_path, policy, out = (tmp_path / n for n in ("t.csv", "t.yaml", "policy.yaml", "run"))
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    policy.write_text(POLICY)
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema_path), "--partition", "column:region",
         "--rounds", "2", "--local-steps", "3", "--epsilon", "3", "--out", str(out),
         "--set", "batch-size=32", "--set", f"policy={policy}", "--set", "validator-rows=200",
         "--set", "min-sites=3", "--set", "validator-feedback-every=1"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "WITHHELD" in result.stdout
    report = json.loads((out / "report.json").read_text())

    # Participation: the 'east' site is outside the policy and never contributed an update.
    for entry in report["rounds"]:
        assert "region=east" not in entry["aggregated"]
        assert sorted(entry["aggregated"]) == ["region=north", "region=south"]
    assert "region=east" not in report["privacy"]["sites"]
    rules = report["sovereignty"]["rules"]
    assert rules["participation"]["passed"] and "region=east" in rules["participation"]["excluded"]

    # The jurisdiction cap lowered south's budget; north keeps the run's.
    sites = report["privacy"]["sites"]
    assert sites["region=south"]["epsilon"] <= 1.5 < sites["region=north"]["epsilon"] <= 3.0

    # Each site's plan reserved the release check (the policy asks for it); the saved ledgers and the
    # report include its charge, and ε after it stays in budget.
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    for name, cap in (("region=north", 3.0), ("region=south", 1.5)):
        budget = SiteBudget.from_state(state["ledgers"][name])
        assert budget.release_check_noise == 20.0  # the default release-check-noise
        assert budget.release_checked and (20.0, 1.0, 1) in budget.history
        assert sites[name]["epsilon"] == pytest.approx(budget.spent)
        assert budget.spent <= cap
        # Site feedback after each of the 2 rounds, planned and charged at the default noise multiplier 10.
        assert budget.feedback_planned == 2 and budget.feedback_given == 2
        assert (10.0, 1.0, 2) in budget.history
        without_feedback = SiteBudget.from_state(state["ledgers"][name])
        without_feedback.history = [h for h in budget.history if h[0] != budget.feedback_noise]
        assert budget.spent > without_feedback.spent

    # The pooled feedback: per-column shape scores and coverage for rounds 1 and 2, from both sites.
    feedback = report["validator"]["site_feedback"]
    assert set(feedback) == {"1", "2"}
    for entry in feedback.values():
        assert entry["sites"] == ["region=north", "region=south"] and entry["failed"] == {}
        assert set(entry["values"]) == {f"shape:{c}" for c in ("age", "income", "region", "smoker")} | {"coverage"}
        # Noise std per score: sqrt(2 sites · (10·sqrt(5))²) over the sites' pooled public (DP) row counts.
        rows = sum(SiteBudget.from_state(state["ledgers"][n]).public_rows for n in ("region=north", "region=south"))
        assert entry["noise_std"] == pytest.approx(math.sqrt(2 * (10.0 * math.sqrt(5)) ** 2) / rows)
        assert all(-0.5 < v < 1.5 for v in entry["values"].values())
    assert report["privacy"]["validator_feedback"]["rounds"] == [1, 2]

    # A failed rule withholds the release: no synthetic.csv, and the report says why. Every real row is
    # closer than 50 to a released row; each site sent a noisy count of them (std 20·sqrt(2), two counts).
    assert not report["release"]["approved"]
    rule = rules["min_distance"]
    assert not rule["passed"] and sorted(rule["by_site"]) == ["region=north", "region=south"]
    assert rule["noise_std"] == pytest.approx(math.sqrt(2) * 20.0 * math.sqrt(2))
    assert rule["tolerance"] == pytest.approx(3 * rule["noise_std"])
    assert rule["noisy_total"] > rule["tolerance"]
    assert "differentially private estimate" in rule["meaning"]
    reason = next(r for r in report["release"]["reasons"] if r.startswith("min_distance"))
    assert f"noisy total {rule['noisy_total']}" in reason and "tolerance" in reason
    assert report["privacy"]["disclosed_without_dp"] == []
    assert "release-check-noise" in report["privacy"]["release_check"]
    assert not (out / "synthetic.csv").exists()
    assert (out / "report.md").is_file() and (out / "plots" / "validator.png").is_file()
