"""The validator in a real simulated federation: policy, site feedback charged to ε, release gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from privacy.budget import SiteBudget
from tabular.schema import dump_schema

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


def test_policy_feedback_and_withheld_release(tmp_path, small_schema, small_table):
    data, schema_path, policy, out = (tmp_path / n for n in ("t.csv", "t.yaml", "policy.yaml", "run"))
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    policy.write_text(POLICY)
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema_path), "--partition", "column:region",
         "--rounds", "2", "--local-steps", "3", "--epsilon", "3", "--out", str(out),
         "--set", "batch-size=32", "--set", f"policy={policy}", "--set", "validator-feedback-every=1",
         "--set", "validator-rows=200", "--set", "validator-feedback-noise=0.1",
         "--set", "min-sites=3"],
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

    # Site feedback was released twice per site and is inside the reported ε.
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    for name in ("region=north", "region=south"):
        budget = SiteBudget.from_state(state["ledgers"][name])
        assert budget.feedback_given == 2
        assert sites[name]["epsilon"] == pytest.approx(budget.spent)
        without_feedback = SiteBudget.from_state(state["ledgers"][name])
        without_feedback.history = [h for h in without_feedback.history if h[0] != budget.feedback_noise]
        assert budget.spent > without_feedback.spent
    assert set(report["validator"]["site_feedback"]) == {"1", "2"}

    # A failed rule withholds the release: no synthetic.csv, and the report says why.
    assert not report["release"]["approved"]
    assert any("min_distance" in reason for reason in report["release"]["reasons"])
    assert not (out / "synthetic.csv").exists()
    assert (out / "report.md").is_file() and (out / "plots" / "validator.png").is_file()
