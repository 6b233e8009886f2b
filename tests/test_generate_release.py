"""``fedsynth generate`` never writes what the run's release decision and policy forbid.

The runs are whole federations driven in-process (``tests.test_federation_in_process.federate``); the
command is the installed CLI, on the run's own ``checkpoints/final.pt``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedsynth.client import wire_log
from tests.test_federation_in_process import federate

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")

FORBIDS_INCOME = """\
allowed_jurisdictions: [north, south, east]
release:
  no_copies: true
  forbidden_columns: [income]
"""

WITHHOLDS = """\
allowed_jurisdictions: [north, south, east]
release:
  no_copies: true
  min_distance: 50.0
  forbidden_columns: [income]
"""


@pytest.fixture(autouse=True)
def _no_wire_log(monkeypatch):
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)


def generate(checkpoint: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([FEDSYNTH, "generate", "--checkpoint", str(checkpoint), "--rows", "300", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_generate_leaves_out_the_columns_the_policy_forbids(tmp_path, small_table, small_schema):
    policy = tmp_path / "policy.yaml"
    policy.write_text(FORBIDS_INCOME)
    # The GAN's rows: with income forbidden only age, region and smoker are compared, and the marginal
    # model reproduces those few real combinations often enough for no_copies to withhold the table.
    report, _, out, _ = federate(tmp_path, small_table, small_schema, policy=str(policy), rounds=1,
                                 **{"release-from": "generator"})  # fmt: skip
    assert report["release"]["approved"], report["release"]["reasons"]
    assert "income" not in pd.read_csv(out / "synthetic.csv").columns
    more = tmp_path / "more.csv"
    ran = generate(out / "checkpoints" / "final.pt", more)
    assert ran.returncode == 0, ran.stderr[-2000:]
    written = pd.read_csv(more)
    assert "income" not in written.columns and list(written.columns) == ["age", "region", "smoker"]
    assert len(written) == 300 and "left out: income" in ran.stdout


def test_generate_refuses_a_withheld_release_and_a_round_checkpoint(tmp_path, small_table, small_schema):
    policy = tmp_path / "policy.yaml"
    policy.write_text(WITHHOLDS)  # every real row is closer than 50 to a released row: the gate withholds
    report, _, out, _ = federate(tmp_path, small_table, small_schema, policy=str(policy), rounds=1)
    assert not report["release"]["approved"] and not (out / "synthetic.csv").exists()
    for checkpoint, needle in ((out / "checkpoints" / "final.pt", "release was withheld"),
                               (out / "checkpoints" / "round-001.pt", "carries no release decision")):  # fmt: skip
        more = tmp_path / "more.csv"
        ran = generate(checkpoint, more)
        assert ran.returncode != 0 and needle in ran.stderr and "Traceback" not in ran.stderr, ran.stderr[-2000:]
        assert len(ran.stderr.strip().splitlines()) == 1
        assert not more.exists()
