"""The canary audit of every mechanism: the honest code stays under its claim, the broken variants do not.

Each audit runs the project's own release code (histograms, a DP-SGD step, a client-level round) on a
table with and without a worst-case canary row; ``audit.statistics`` turns the attack's errors into a
lower bound on ε. The interface is ``fedsynth audit``, which writes ``audit.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsynth.audit import mechanisms
from fedsynth.audit.mechanisms import (
    AUDITS,
    audit_distributed,
    audit_feedback,
    audit_histograms,
    canary_row,
    run_audits,
)
from fedsynth.core.config import RunConfig
from fedsynth.tabular.schema import dump_schema
from fedsynth.tabular.table import validate_frame

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
FIELDS = {"mechanism", "epsilon", "epsilon_lower_bound", "interval", "broken_variant", "broken_epsilon_lower_bound"}


def test_the_canary_is_a_valid_row_at_the_edge_of_the_domain(small_schema):
    canary = canary_row(small_schema)
    validate_frame(canary, small_schema)
    assert canary.loc[0, "age"] == 100 and canary.loc[0, "region"] == "east" and canary.loc[0, "smoker"] == "true"


def test_every_mechanism_stays_under_its_claim_and_every_broken_variant_is_caught(small_schema, small_table):
    config = RunConfig(batch_size=32, epsilon=1.0)
    results = run_audits(small_table, small_schema, config, trials=300)
    assert [r.mechanism for r in results] == list(AUDITS)
    for result in results:
        assert result.epsilon > 0
        assert result.honest.epsilon_lower_bound <= result.epsilon, result.to_json()
        assert result.broken.epsilon_lower_bound > result.epsilon + 1.0, result.to_json()
        assert result.passed
        assert set(result.to_json()) >= FIELDS


def test_the_attack_has_power_where_the_noise_is_weaker(small_schema, small_table):
    # At ε = 8 per site the histogram release is loud enough for the attack to see the canary: a
    # positive bound, still under the claim. (At ε = 1 the honest bound is about 0: nothing to see.)
    config = RunConfig(batch_size=32, epsilon=8.0, measure_fraction=0.9)
    result = audit_histograms(small_table, small_schema, config, trials=600, confidence=0.95)
    assert 0 < result.honest.epsilon_lower_bound <= result.epsilon


def test_the_feedback_attack_sees_the_canary_when_the_noise_is_low(small_schema, small_table):
    # At noise multiplier 0.25 one feedback release is worth ε ≈ 26: the projection attack finds a
    # clearly positive bound (about 3 to 4 with 600 runs per world), still under that claim.
    config = RunConfig(batch_size=32, epsilon=1.0, validator_feedback_noise=0.25)
    result = audit_feedback(small_table, small_schema, config, trials=600, confidence=0.95)
    assert 1.5 < result.honest.epsilon_lower_bound <= result.epsilon


def test_fedsynth_audit_writes_the_table_a_privacy_officer_reads(tmp_path, small_schema, small_table):
    data, schema_path, out = tmp_path / "t.csv", tmp_path / "t.yaml", tmp_path / "audit"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    result = subprocess.run(
        [FEDSYNTH, "audit", "--data", str(data), "--schema", str(schema_path), "--epsilon", "1", "--delta", "1e-5",
         "--partition", "iid", "--clients", "2", "--trials", "100", "--out", str(out), "--set", "batch-size=32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entries = json.loads((out / "audit.json").read_text())
    assert [e["mechanism"] for e in entries] == list(AUDITS)
    for entry in entries:
        assert set(entry) >= FIELDS
        assert entry["epsilon_lower_bound"] <= entry["epsilon"] < entry["broken_epsilon_lower_bound"]
        assert entry["interval"][0] == entry["epsilon_lower_bound"]
    assert "broken variant" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"), [(["--only", "nope"], "unknown mechanism"), (["--trials", "5"], "at least 20")]
)
def test_fedsynth_audit_refuses_bad_options_in_one_line(tmp_path, args, needle):
    result = subprocess.run([FEDSYNTH, "audit", "--out", str(tmp_path / "a"), *args], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_the_distributed_audit_catches_shares_that_do_not_add_up_to_the_claim(small_schema, small_table, monkeypatch):
    config = RunConfig(batch_size=32, epsilon=1.0)
    honest = audit_distributed(small_table, small_schema, config, trials=600, confidence=0.95)
    assert "1/3 of the variance" in honest.instance  # 4 sites, SecAgg+ threshold 3: three shares counted on
    assert honest.honest.epsilon_lower_bound <= honest.epsilon
    # A site that counted on far more shares than the sum holds adds far too little noise: caught.
    monkeypatch.setattr(mechanisms, "noise_shares", lambda std, wanted, cells: 10_000)
    broken = audit_distributed(small_table, small_schema, config, trials=600, confidence=0.95)
    assert broken.honest.epsilon_lower_bound > broken.epsilon + 1.0, broken.to_json()
