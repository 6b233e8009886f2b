"""The real ``fedsynth`` command on user mistakes: exit 2, one 'error:' line naming the file or field, no traceback.

Every case here fails during validation, before any Flower process could start.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsynth.tabular.schema import load_schema
from fedsynth.tabular.table import read_table

# fedsynth/cli.py has no ``if __name__ == "__main__"`` guard, so ``python -m fedsynth.cli`` would do
# nothing: run the console script installed next to this interpreter.
FEDSYNTH = Path(sys.executable).parent / "fedsynth"

SCHEMA_TEXT = """\
columns:
  - {name: age, type: integer, min: 0, max: 120}
  - {name: region, type: categorical, categories: [north, south]}
  - {name: smoker, type: boolean}
"""


def _run(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(
        [str(FEDSYNTH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, stderr exactly one 'error:' line containing every needle, no traceback anywhere."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SCHEMA_TEXT)
    return path


def _csv(path: Path, *rows: str, header: str = "age,region,smoker") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_console_script_exists():
    assert FEDSYNTH.is_file() and os.access(FEDSYNTH, os.X_OK)


# --- schema check --------------------------------------------------------------------------------


def test_schema_check_bad_schema(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns:\n  - {name: age, type: integer, min: 50, max: 10}\n")
    line = _assert_user_error(_run(tmp_path, "schema", "check", str(bad)), str(bad), "column 'age'", "'min'")
    assert "valid" not in line


def test_schema_check_typo_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("columns:\n  - {name: income, type: continuous, min: 0, maxx: 10}\n")
    _assert_user_error(_run(tmp_path, "schema", "check", str(bad)), str(bad), "column 'income'", "maxx")


def test_schema_check_missing_schema_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    _assert_user_error(_run(tmp_path, "schema", "check", str(missing)), str(missing), "not found")


def test_schema_check_good_schema_and_data(tmp_path, schema_file):
    data = _csv(tmp_path / "good.csv", "30,north,yes", "40,south,no")
    result = _run(tmp_path, "schema", "check", str(schema_file), "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "2 rows match the schema" in result.stdout


def test_schema_check_data_with_unknown_category(tmp_path, schema_file):
    data = _csv(tmp_path / "bad.csv", "30,north,yes", "40,west,no")
    result = _run(tmp_path, "schema", "check", str(schema_file), "--data", str(data))
    _assert_user_error(result, str(data), "column 'region'", "row 2", "'west'")


# --- simulate: mistakes caught before any Flower process ------------------------------------------


def test_simulate_rejects_nan_in_data_before_starting_flower(tmp_path, schema_file):
    data = _csv(tmp_path / "nan.csv", "30,north,yes", "NaN,south,no", "50,north,no")
    started = time.monotonic()
    result = _run(tmp_path, "simulate", "--data", str(data), "--schema", str(schema_file), "--out", str(tmp_path / "o"))
    elapsed = time.monotonic() - started
    _assert_user_error(result, str(data), "column 'age'", "row 2", "NaN")
    assert "Starting Flower simulation" not in result.stdout
    assert elapsed < 30, f"validation took {elapsed:.1f}s: did a simulation start?"


def test_simulate_rejects_config_typo(tmp_path):
    result = _run(tmp_path, "simulate", "--set", "epsilonn=2", "--out", str(tmp_path / "o"))
    _assert_user_error(result, "'epsilonn'", "did you mean 'epsilon'")
    assert "Starting Flower simulation" not in result.stdout


def test_simulate_rejects_bad_set_value(tmp_path):
    result = _run(tmp_path, "simulate", "--set", "accountant=foo", "--out", str(tmp_path / "o"))
    _assert_user_error(result, "'accountant'", "'foo'")


def test_simulate_validation_failure_leaves_no_output_folder(tmp_path):
    """A run refused at validation should not leave an empty output folder behind."""
    out = tmp_path / "never"
    result = _run(tmp_path, "simulate", "--set", "epsilonn=2", "--out", str(out))
    _assert_user_error(result, "'epsilonn'")
    assert not out.exists()
    assert not (tmp_path / "outputs").exists()


def test_simulate_refuses_non_empty_out_without_overwrite(tmp_path):
    out = tmp_path / "previous-run"
    out.mkdir()
    keep = out / "synthetic.csv"
    keep.write_text("a,b\n1,2\n")
    before = (keep.read_bytes(), keep.stat().st_mtime_ns)
    result = _run(tmp_path, "simulate", "--out", str(out))
    _assert_user_error(result, str(out.resolve()), "--overwrite")
    assert (keep.read_bytes(), keep.stat().st_mtime_ns) == before
    assert sorted(p.name for p in out.iterdir()) == ["synthetic.csv"]


def test_simulate_refuses_out_that_is_a_file(tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("keep me")
    _assert_user_error(_run(tmp_path, "simulate", "--out", str(out)), str(out.resolve()), "not a folder")
    assert out.read_text() == "keep me"


def test_simulate_csv_without_schema(tmp_path):
    data = _csv(tmp_path / "d.csv", "30,north,yes")
    _assert_user_error(_run(tmp_path, "simulate", "--data", str(data), "--out", str(tmp_path / "o")),
                       str(data), "--schema")  # fmt: skip


# --- generate ------------------------------------------------------------------------------------


def test_generate_corrupt_checkpoint(tmp_path):
    checkpoint = tmp_path / "corrupt.pt"
    checkpoint.write_bytes(random.Random(0).randbytes(4096))
    out = tmp_path / "synthetic.csv"
    result = _run(tmp_path, "generate", "--checkpoint", str(checkpoint), "--rows", "10", "--out", str(out))
    _assert_user_error(result, str(checkpoint), "checkpoint")
    assert not out.exists()
    assert not list(tmp_path.glob(".*partial"))


def test_generate_missing_checkpoint(tmp_path):
    checkpoint = tmp_path / "missing.pt"
    result = _run(tmp_path, "generate", "--checkpoint", str(checkpoint), "--rows", "10", "--out",
                  str(tmp_path / "x.csv"))  # fmt: skip
    _assert_user_error(result, str(checkpoint), "not found")


def test_generate_refuses_existing_out_without_overwrite(tmp_path):
    checkpoint = tmp_path / "corrupt.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    out = tmp_path / "synthetic.csv"
    out.write_text("age\n1\n")
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    result = _run(tmp_path, "generate", "--checkpoint", str(checkpoint), "--rows", "10", "--out", str(out))
    _assert_user_error(result, str(out), "--overwrite")
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before


def test_generate_rejects_zero_rows(tmp_path):
    result = _run(tmp_path, "generate", "--checkpoint", "x.pt", "--rows", "0", "--out", str(tmp_path / "x.csv"))
    _assert_user_error(result, "--rows")


# --- schema draft ----------------------------------------------------------------------------------


def _draft(tmp_path: Path, csv_text: str) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    data = tmp_path / "private.csv"
    data.write_text(csv_text)
    out = tmp_path / "draft.yaml"
    result = _run(tmp_path, "schema", "draft", str(data), "--out", str(out))
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    return data, out, result


def test_schema_draft_warns_and_validates_its_own_table(tmp_path):
    data, out, result = _draft(
        tmp_path,
        "age,income,region,smoker,kids\n"
        "34,52000.5,north,yes,0\n61,1250.25,south,no,2\n18,990.0,east,yes,1\n45,73000.75,north,no,3\n",
    )
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and text.startswith("#")
    assert any("READ FROM THE DATA" in line and "private" in line for line in header)
    assert str(data) in header[0]
    assert "private" in result.stderr  # the command warns as well
    schema = load_schema(out)
    assert schema.names == ["age", "income", "region", "smoker", "kids"]
    assert schema.column("age").type == "integer"
    assert schema.column("income").type == "continuous"
    assert set(schema.column("region").categories) == {"north", "south", "east"}
    assert set(schema.column("smoker").categories) == {"yes", "no"}
    table = read_table(data, schema)
    assert len(table) == 4
    for col in schema.columns:
        if col.is_numeric:
            assert col.min <= table[col.name].min() and table[col.name].max() <= col.max


def test_schema_draft_of_true_false_column_validates_its_own_table(tmp_path):
    data, out, _ = _draft(tmp_path, "age,member\n30,True\n40,False\n50,True\n")
    read_table(data, load_schema(out))


def test_schema_draft_of_two_valued_decimal_column_validates_its_own_table(tmp_path):
    data, out, _ = _draft(tmp_path, "age,dose\n30,1.0\n40,2.0\n50,1.0\n")
    read_table(data, load_schema(out))


def test_schema_draft_refuses_existing_out(tmp_path):
    data = _csv(tmp_path / "d.csv", "30,north,yes")
    out = tmp_path / "draft.yaml"
    out.write_text("mine")
    _assert_user_error(_run(tmp_path, "schema", "draft", str(data), "--out", str(out)), str(out), "--overwrite")
    assert out.read_text() == "mine"


def test_schema_draft_missing_data(tmp_path):
    missing = tmp_path / "absent.csv"
    _assert_user_error(_run(tmp_path, "schema", "draft", str(missing), "--out", str(tmp_path / "d.yaml")),
                       str(missing), "not found")  # fmt: skip
