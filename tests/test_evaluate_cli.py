"""``fedsynth evaluate`` as a user runs it: a JSON report with every section, one-line errors, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FEDSYNTH = Path(sys.executable).parent / "fedsynth"

SCHEMA_TEXT = """\
columns:
  - {name: age, type: integer, min: 0, max: 120}
  - {name: income, type: continuous, min: 0, max: 200000, transform: log}
  - {name: region, type: categorical, categories: [north, south]}
  - {name: smoker, type: boolean}
"""


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(
        [str(FEDSYNTH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _table(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    pd.DataFrame(
        {
            "age": age,
            "income": np.round(np.exp(8 + age / 30 + rng.normal(0, 0.5, n)), 2),
            "region": rng.choice(["north", "south"], n),
            "smoker": np.where(rng.random(n) < 0.3, "yes", "no"),
        }
    ).to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "schema.yaml").write_text(SCHEMA_TEXT)
    return {
        "--schema": str(tmp_path / "schema.yaml"),
        "--real": str(_table(tmp_path / "train.csv", 300, 0)),
        "--holdout": str(_table(tmp_path / "holdout.csv", 150, 1)),
        "--synthetic": str(_table(tmp_path / "synthetic.csv", 300, 2)),
    }


def _args(files: dict[str, str], **extra: str) -> list[str]:
    pairs = {**files, **{f"--{k.replace('_', '-')}": v for k, v in extra.items()}}
    return ["evaluate", *[item for pair in pairs.items() for item in pair]]


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_writes_json_report_and_summary(tmp_path, files):
    out = tmp_path / "report.json"
    result = _run(tmp_path, *_args(files, target="smoker", out=str(out), max_rows="200"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert set(report) >= {"fidelity", "utility", "privacy", "rows"}
    assert set(report["fidelity"]) >= {"column_shapes", "pair_trends", "prdc", "detection"}
    assert report["utility"]["target"] == "smoker"
    assert report["rows"] == {"real": 300, "holdout": 150, "synthetic": 300}
    assert "column shapes" in result.stdout and "membership inference" in result.stdout
    assert str(out) in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no leftover temp file


def test_unknown_target_is_a_one_line_error(tmp_path, files):
    out = tmp_path / "report.json"
    result = _run(tmp_path, *_args(files, target="salary", out=str(out)))
    _assert_one_line_error(result, "'salary'", "--target")
    assert not out.exists()


def test_refuses_to_overwrite_without_flag(tmp_path, files):
    out = tmp_path / "report.json"
    out.write_text("keep me")
    _assert_one_line_error(_run(tmp_path, *_args(files, out=str(out))), str(out), "--overwrite")
    assert out.read_text() == "keep me"


def test_bad_data_file_is_a_one_line_error(tmp_path, files):
    bad = tmp_path / "bad.csv"
    bad.write_text("age,income,region,smoker\n30,100,west,yes\n")
    result = _run(tmp_path, *_args({**files, "--synthetic": str(bad)}))
    _assert_one_line_error(result, str(bad), "column 'region'", "'west'")


def test_help_says_it_reads_real_data_and_is_not_for_the_coordinator(tmp_path):
    result = _run(tmp_path, "evaluate", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "REAL data" in text
    assert "data holders and simulations" in text
    assert "coordinator" in text
