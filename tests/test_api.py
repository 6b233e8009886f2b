"""The Python API: the README's example runs as written; DataFrames and dicts go in, one-line errors come out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import fedsynth
from fedsynth.client import wire_log
from fedsynth.core.errors import CheckpointError, UserError
from tests.test_federation_in_process import federate

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- python-api-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md has no marked Python API example"
    return match.group(1)


@pytest.mark.e2e
def test_the_readme_example_runs(tmp_path):
    ran = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    out = tmp_path / "api-run"
    assert (out / "report.json").is_file() and (out / "real" / "holdout.csv").is_file()
    assert any(line.startswith("True ") for line in ran.stdout.splitlines())  # approved, then ε max
    assert "Starting Flower simulation: 4 sites, 2 rounds" in ran.stdout  # the same progress as the CLI


def test_a_dataframe_without_a_schema_is_a_one_line_error_and_nothing_is_written(tmp_path, small_table):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="a DataFrame needs schema="):
        fedsynth.simulate(data=small_table, out=out)
    assert not out.exists()
    with pytest.raises(UserError, match="unknown config key 'epsilonn'"):
        fedsynth.simulate(data=small_table, schema={"columns": [{"name": "age", "type": "continuous", "min": 0,
                          "max": 100}]}, epsilonn=1.0, out=out)  # fmt: skip
    assert not out.exists()


def test_evaluate_takes_dataframes_and_a_schema_dict(small_table, small_schema):
    train, holdout = small_table.iloc[:300], small_table.iloc[300:]
    scores = fedsynth.evaluate(real=train, holdout=holdout, synthetic=small_table.sample(200, random_state=0),
                               schema=small_schema.to_dict(), target="smoker")  # fmt: skip
    assert 0 < scores["fidelity"]["column_shapes"]["score"] <= 1
    assert scores["rows"] == {"real": 300, "holdout": 100, "synthetic": 200}
    with pytest.raises(UserError, match="target 'zip'"):
        fedsynth.evaluate(real=train, holdout=holdout, synthetic=train, schema=small_schema, target="zip")


def test_generate_samples_an_approved_run_and_refuses_a_round_checkpoint(tmp_path, small_table, small_schema,
                                                                         monkeypatch):  # fmt: skip
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)
    report, _, out, _ = federate(tmp_path, small_table, small_schema, rounds=1)
    assert report["release"]["approved"]
    more = fedsynth.generate(out / "checkpoints" / "final.pt", rows=50, out=tmp_path / "more.parquet")
    assert len(more) == 50 and list(more.columns) == small_schema.names
    assert len(pd.read_parquet(tmp_path / "more.parquet")) == 50
    with pytest.raises(CheckpointError, match="carries no release decision"):
        fedsynth.generate(out / "checkpoints" / "round-001.pt", rows=50)
