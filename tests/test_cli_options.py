"""The real ``fedsynth`` command's options: a number given is checked, a number left out takes the real default.

Every refusal here happens while the options are checked, before any data is read or Flower starts: the
runs point --data at a file that does not exist, so a regression that let an option through would end in a
"not found" error (and fail the test) instead of starting a federation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fedsynth
from fedsynth.core.config import RunConfig
from fedsynth.tabular.partitioning import DEFAULT_SITES

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
TIMEOUT = 30
DEFAULTS = RunConfig()


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal keeps each option of --help on one line.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "COLUMNS": "250", "TERMINAL_WIDTH": "250"}
    return subprocess.run(
        [FEDSYNTH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one stderr line 'error: ...' holding every needle, no traceback, no federation started."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Starting Flower" not in result.stdout and "Resuming" not in result.stdout, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


MISSING_DATA = ("--data", "missing.csv", "--schema", "missing.yaml")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--rounds", "0", "'rounds' must be at least 1"),
        ("--rounds", "-3", "'rounds' must be at least 1"),
        ("--clients", "0", "--clients must be at least 1"),
        ("--clients", "-1", "--clients must be at least 1"),
        ("--local-steps", "0", "'local-steps' must be at least 1"),
        ("--epsilon", "0", "'epsilon' must be a positive number"),
        ("--delta", "0", "'delta' must be between 0 and 1"),
        ("--rows", "-1", "'rows' must not be negative"),
        ("--seed", "-1", "'seed' must not be negative"),
    ],
)
def test_simulate_refuses_a_zero_or_negative_number(tmp_path, option, value, needle):
    out = tmp_path / "out"
    result = _run(tmp_path, "simulate", *MISSING_DATA, option, value, "--out", str(out))
    _assert_refused(result, needle, f"got {value}")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_simulate_clients_zero_says_to_leave_it_out(tmp_path):
    """An explicit --clients 0 is not "one site per value": the message says how to get that."""
    out = tmp_path / "out"
    line = _assert_refused(_run(tmp_path, "simulate", *MISSING_DATA, "--clients", "0", "--out", str(out)), "--clients")
    assert "leave it out" in line and "one site per value" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [("--clients", "0", "--clients must be at least 1"), ("--epsilon", "0", "'epsilon'"), ("--delta", "0", "'delta'")],
)
def test_audit_refuses_a_zero(tmp_path, option, value, needle):
    out = tmp_path / "audit"
    _assert_refused(_run(tmp_path, "audit", *MISSING_DATA, option, value, "--out", str(out)), needle)
    assert not out.exists()


def test_resume_refuses_rounds_zero_and_options_it_would_ignore(tmp_path):
    out = tmp_path / "out"
    _assert_refused(_run(tmp_path, "simulate", "--resume", "--rounds", "0", "--out", str(out)), "--rounds", "got 0")
    line = _assert_refused(
        _run(tmp_path, "simulate", "--resume", "--epsilon", "2", "--clients", "3", "--out", str(out)), "--resume"
    )
    assert "--epsilon" in line and "--clients" in line
    assert not out.exists()


def _option_help(help_text: str) -> dict[str, str]:
    """Each option's help row, by option name (continuation rows joined)."""
    rows: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        body = line.strip().strip("│").strip()
        match = re.match(r"(--[a-z-]+)\b", body)
        if match:
            current = match.group(1)
            rows[current] = body
        elif current and body and not line.lstrip().startswith("╰"):
            rows[current] += " " + body
    return rows


def test_simulate_help_shows_the_real_defaults(tmp_path):
    result = _run(tmp_path, "simulate", "--help")
    assert result.returncode == 0, result.stderr
    rows = _option_help(result.stdout)
    expected = {"--rounds": DEFAULTS.rounds, "--local-steps": DEFAULTS.local_steps, "--epsilon": DEFAULTS.epsilon,
                "--delta": DEFAULTS.delta, "--rows": DEFAULTS.rows, "--seed": DEFAULTS.seed}  # fmt: skip
    assert (DEFAULTS.rounds, DEFAULTS.epsilon, DEFAULTS.delta) == (10, 1.0, 1e-5)
    for option, value in expected.items():
        assert f"default: {value}" in rows[option], (option, rows[option])
    assert re.search(r"default: 10\b", rows["--rounds"]), rows["--rounds"]
    assert re.search(r"default: 1(\.0)?\b", rows["--epsilon"]), rows["--epsilon"]
    assert "default: 1e-05" in rows["--delta"], rows["--delta"]
    assert f"else {DEFAULT_SITES}" in rows["--clients"] and "one per value" in rows["--clients"], rows["--clients"]
    assert f"default: {DEFAULTS.partition}" in rows["--partition"], rows["--partition"]
    for option in ("--rounds", "--local-steps", "--epsilon", "--delta", "--clients", "--rows", "--seed"):
        assert "-1" not in rows[option].removeprefix(option), (option, rows[option])
        assert "default: 0]" not in rows[option] and "default: 0.0" not in rows[option], (option, rows[option])


def test_audit_help_shows_the_real_defaults(tmp_path):
    result = _run(tmp_path, "audit", "--help")
    assert result.returncode == 0, result.stderr
    rows = _option_help(result.stdout)
    assert f"default: {DEFAULTS.epsilon}" in rows["--epsilon"], rows["--epsilon"]
    assert f"default: {DEFAULTS.delta}" in rows["--delta"], rows["--delta"]
    assert f"default: {DEFAULTS.seed}" in rows["--seed"], rows["--seed"]
    for option in ("--epsilon", "--delta", "--clients", "--seed"):
        assert "-1" not in rows[option].removeprefix(option) and "default: 0.0" not in rows[option], rows[option]


@pytest.mark.parametrize(("args", "suggestion"), [(["simulat"], "'simulate'"), (["schema", "chek"], "'check'")])
def test_unknown_command_is_suggested_once(tmp_path, args, suggestion):
    result = _run(tmp_path, *args)
    assert result.returncode == 2
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    assert text.count("Did you mean") == 1, text
    assert text.count(suggestion) == 1, text


def test_version(tmp_path):
    result = _run(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fedsynth {fedsynth.__version__}"
    assert result.stderr == ""
