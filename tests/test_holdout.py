"""``--holdout``: a share of rows that no site sees, written out so that ``fedsynth evaluate`` can run next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedsynth.client import wire_log
from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError
from fedsynth.tabular.partitioning import split_holdout
from fedsynth.tabular.schema import dump_schema
from tests.test_federation_in_process import federate
from tests.test_layout import SHADOWS

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")


def test_the_split_is_seeded_disjoint_and_complete(small_table):
    kept, held = split_holdout(small_table, 0.25, seed=3)
    assert len(held) == 100 and len(kept) == 300
    assert sorted([*kept.index, *held.index]) == list(small_table.index)
    again, _ = split_holdout(small_table, 0.25, seed=3)
    assert kept.index.equals(again.index)
    assert not split_holdout(small_table, 0.25, seed=4)[1].index.equals(held.index)
    assert len(split_holdout(small_table, 0.0, seed=3)[1]) == 0
    with pytest.raises(ConfigError, match="'holdout' must be a share"):
        RunConfig(holdout=1.0).validate()


def test_held_out_rows_reach_no_site(tmp_path, small_table, small_schema, monkeypatch):
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)
    report, _, _, _ = federate(tmp_path, small_table, small_schema, holdout=0.25, rounds=1)
    # Every site's DP row count estimates its own rows; together they hold about 300 of the 400 rows.
    total = sum(m["num-examples"] for m in report["rounds"][0]["sites"].values())
    assert abs(total - 300) < 60, total


@pytest.mark.e2e
def test_simulate_holdout_then_evaluate(tmp_path, small_table, small_schema):
    # Run from a folder whose own models/, server.py, client/ and metrics/ would fail if imported: the
    # installed fedsynth.* modules must be the ones the CLI and Flower's processes load (tests/test_layout.py).
    for name, text in SHADOWS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    data, schema, out = tmp_path / "t.csv", tmp_path / "t.yaml", tmp_path / "run"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema)
    ran = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema), "--partition", "iid", "--clients", "2",
         "--rounds", "1", "--local-steps", "2", "--holdout", "0.25", "--out", str(out), "--set", "batch-size=32"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Holdout: 100 rows kept out of every site" in ran.stdout
    train, held = pd.read_csv(out / "real" / "train.csv"), pd.read_csv(out / "real" / "holdout.csv")
    assert (len(train), len(held)) == (300, 100) and "Never publish" in (out / "real" / "README.txt").read_text()
    real = out / "real"
    evaluated = subprocess.run(
        [FEDSYNTH, "evaluate", "--real", str(real / "train.csv"), "--holdout", str(real / "holdout.csv"),
         "--synthetic", str(out / "synthetic.csv"), "--schema", str(schema), "--out", str(tmp_path / "ev.json")],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    assert (tmp_path / "ev.json").is_file()
