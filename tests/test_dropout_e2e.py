"""Site dropout end to end: the real ``fedsynth`` CLI with simulated site failures.

- ``fault-rate=0.3``: about a third of the site-rounds fail on purpose; every
  round completes with the rest, the report names who failed, and ε stays in budget.
- No round blocks forever: when rounds cannot get enough updates the run stops
  after ``max-failed-rounds`` (or at the ``min-replies`` rule) with exit code 2
  and one ``error:`` line, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.simulations.runner import is_alive

pytestmark = pytest.mark.e2e
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
ROUNDS = 4
SITES = 5
EPSILON = 1.0
TAG_VAR = "FEDSYNTH_TEST_RUN"

SCHEMA_TEXT = """\
columns:
  - {name: age, type: integer, min: 0, max: 120}
  - {name: region, type: categorical, categories: [north, south, east]}
  - {name: smoker, type: boolean}
"""


def processes_of(tag: str) -> set[int]:
    """Live processes that inherited ``FEDSYNTH_TEST_RUN=tag``: the CLI's Flower and Ray children, nobody else's."""
    marker = f"{TAG_VAR}={tag}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ and is_alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def left_running(tag: str, grace: float = 15.0) -> set[int]:
    """This run's processes still alive ``grace`` seconds after the command returned."""
    deadline = time.monotonic() + grace
    while (alive := processes_of(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive


@pytest.fixture
def table(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = 400
    data, schema = tmp_path / "people.csv", tmp_path / "people.yaml"
    pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "region": rng.choice(["north", "south", "east"], n),
            "smoker": rng.choice(["yes", "no"], n),
        }
    ).to_csv(data, index=False)
    schema.write_text(SCHEMA_TEXT)
    return data, schema


def simulate(data: Path, schema: Path, out: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; afterwards, no process it started may be left running."""
    args = [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema), "--partition", "iid",
            "--clients", str(SITES), "--rounds", str(ROUNDS), "--local-steps", "3", "--epsilon", str(EPSILON),
            "--out", str(out), "--set", "batch-size=16"]  # fmt: skip
    for item in sets:
        args += ["--set", item]
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG_VAR: tag}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert not left_running(tag), "a Flower or Ray process of this run was left running"
    return result


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_thirty_percent_dropout_still_completes_every_round(table, tmp_path):
    data, schema = table
    out = tmp_path / "run"
    result = simulate(data, schema, out, "fault-rate=0.3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())

    assert report["rounds_completed"] == ROUNDS
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    failed = {r["round"]: sorted(r["failed"]) for r in rounds}
    print("\n30% dropout:", json.dumps({"rounds_completed": report["rounds_completed"], "failed": failed,
                                        "aggregated": {r["round"]: r["aggregated"] for r in rounds}}))  # fmt: skip
    assert sum(len(names) for names in failed.values()) >= 1, "fault-rate=0.3 made no site fail"
    for entry in rounds:
        assert entry["aggregated"], f"round {entry['round']} averaged nobody"
        assert not set(entry["aggregated"]) & set(entry["failed"])
        assert len(entry["aggregated"]) + len(entry["failed"]) <= SITES
        for reason in entry["failed"].values():  # one short line, not a Ray traceback
            assert "simulated failure" in reason and "\n" not in reason and len(reason) <= 300, reason

    privacy = report["privacy"]
    assert privacy["sites"], "no site reported its privacy spending"
    for name, site in privacy["sites"].items():
        assert 0 < site["epsilon"] <= EPSILON, (name, site)
        assert site["steps"] > 0
    assert privacy["epsilon_max"] <= EPSILON
    assert (out / "checkpoints" / "final.pt").is_file()  # synthetic.csv depends on the release validator


def test_rounds_without_updates_stop_after_max_failed_rounds(table, tmp_path):
    """Every site fails every round: the run stops after 2 empty rounds instead of going on or hanging."""
    data, schema = table
    out = tmp_path / "run"
    result = simulate(data, schema, out, "fault-rate=0.999", "max-failed-rounds=2")
    line = assert_one_error_line(result)
    assert "max-failed-rounds" in line, line
    assert "stopped after round 2" in line, line
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["completed_round"] == 2  # the last consistent round is saved, so --resume can continue
    assert not (out / "report.json").exists()


@pytest.mark.parametrize("rule", ["min-replies", "min-sites"])
def test_a_rule_asking_for_more_sites_than_the_simulation_has_is_refused_before_flower_starts(table, tmp_path, rule):
    data, schema = table
    out = tmp_path / "run"
    result = simulate(data, schema, out, f"{rule}=9", "max-failed-rounds=2")
    line = assert_one_error_line(result)
    assert f"'{rule}' 9 is more than the {SITES} site(s)" in line, line
    assert not out.exists()  # refused before the output folder was claimed
