"""End to end: real Flower simulation runs, outputs checked against the contract.

These start Flower's simulation runtime (a local SuperLink, Ray workers), so they
take tens of seconds each; they are marked ``e2e`` and run in CI. Each checks
that no Flower process it started is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from fedsynth.core.config import RunConfig
from fedsynth.simulations.runner import (
    APP_DIR,
    become_subreaper,
    flower_env,
    free_port,
    stop_local_superlink,
    write_flower_home,
)
from fedsynth.tabular.schema import dump_schema, load_schema
from fedsynth.tabular.table import validate_frame
from tests.process_marks import marked_env, marked_flower_processes, new_mark
from tests.test_layout import SHADOWS

pytestmark = pytest.mark.e2e
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")


MARK = new_mark("FEDSYNTH_SIMULATION_TEST")  # in the environment of every process these tests start


def flower_processes() -> set[int]:
    """Live Flower and Ray processes these tests started (other Flower runs on this machine are not ours)."""
    return marked_flower_processes(MARK)


def check_outputs(
    out: Path, schema_path: Path, rows: int | tuple[int, int], epsilon: float, rounds: int, sites: int
) -> dict:
    """``rows``: the exact count asked for, or (low, high) for the default, the sum of the sites' DP row counts."""
    schema = load_schema(schema_path)
    synthetic = pd.read_csv(out / "synthetic.csv", dtype=str, keep_default_na=False)
    assert list(synthetic.columns) == schema.names
    low, high = rows if isinstance(rows, tuple) else (rows, rows)
    assert low <= len(synthetic) <= high
    validate_frame(synthetic, schema, source="synthetic.csv")  # every value in the schema's domain
    report = json.loads((out / "report.json").read_text())
    privacy = report["privacy"]
    assert privacy["unit"] == "record"
    assert privacy["delta"] == pytest.approx(1e-5)
    assert privacy["epsilon_target"] == epsilon
    assert privacy["accountant"] in ("prv", "rdp")
    assert len(privacy["sites"]) == sites
    for site in privacy["sites"].values():
        assert 0 < site["epsilon"] <= epsilon
        assert site["steps"] > 0 and site["noise_multiplier"] > 0 and 0 < site["sample_rate"] <= 1
    assert privacy["epsilon_max"] == max(s["epsilon"] for s in privacy["sites"].values())
    assert privacy["epsilon_max"] <= epsilon
    assert report["rounds_completed"] == rounds
    assert len(report["timings"]["rounds_seconds"]) == rounds and report["timings"]["total_seconds"] > 0
    # The server's split of each round: the exchange holds the sites' own work, and the parts add up.
    for parts, seconds in zip(report["timings"]["round_parts"], report["timings"]["rounds_seconds"], strict=True):
        assert parts["exchange"] >= parts["site_seconds_max"] > 0
        inside = sum(parts[k] for k in ("exchange", "aggregate", "checkpoint", "validator", "other"))
        assert inside == pytest.approx(parts["total"]) and parts["total"] <= seconds + 0.05
    RunConfig.from_mapping(report["config"])  # everything needed to rerun, and valid
    assert (out / "checkpoints" / "final.pt").is_file()
    assert len(list((out / "checkpoints").glob("round-*.pt"))) == rounds
    return report


def test_simulate_an_unseen_csv_with_a_holdout_then_evaluate_and_generate_more(tmp_path, small_schema, small_table):
    # Run from a folder whose own models/, server.py, client/ and metrics/ would fail if imported: the
    # installed fedsynth.* modules must be the ones the CLI and Flower's processes load (tests/test_layout.py).
    for name, text in SHADOWS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    data, schema_path, out = tmp_path / "people.csv", tmp_path / "people.yaml", tmp_path / "run"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema_path), "--partition", "iid",
         "--clients", "3", "--rounds", "2", "--local-steps", "4", "--epsilon", "2", "--rows", "123",
         "--holdout", "0.25", "--out", str(out), "--set", "batch-size=32"],
        env=marked_env(MARK), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 2/2" in result.stdout
    report = check_outputs(out, schema_path, rows=123, epsilon=2.0, rounds=2, sites=3)
    assert report["config"]["partition"] == "iid"

    # --holdout: 100 rows no site saw, written beside the 300 the sites shared, for `fedsynth evaluate`.
    assert "Holdout: 100 rows kept out of every site" in result.stdout
    real = out / "real"
    train, held = pd.read_csv(real / "train.csv"), pd.read_csv(real / "holdout.csv")
    assert (len(train), len(held)) == (300, 100) and "Never publish" in (real / "README.txt").read_text()
    evaluated = subprocess.run(
        [FEDSYNTH, "evaluate", "--real", str(real / "train.csv"), "--holdout", str(real / "holdout.csv"),
         "--synthetic", str(out / "synthetic.csv"), "--schema", str(schema_path), "--out", str(tmp_path / "ev.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "ev.json").read_text())["rows"] == {"real": 300, "holdout": 100, "synthetic": 123}

    sampled = tmp_path / "more.csv"
    generated = subprocess.run(
        [FEDSYNTH, "generate", "--checkpoint", str(out / "checkpoints" / "final.pt"), "--rows", "1000",
         "--out", str(sampled)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    validate_frame(pd.read_csv(sampled, dtype=str, keep_default_na=False), small_schema)
    assert len(pd.read_csv(sampled)) == 1000
    assert not flower_processes(), "a Flower process was left running"


def _key_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (list items share one path): its shape, whatever the numbers."""
    if isinstance(value, dict):
        return {prefix} | {p for key, item in value.items() for p in _key_paths(item, f"{prefix}/{key}")}
    if isinstance(value, list):
        return {prefix} | {p for item in value for p in _key_paths(item, f"{prefix}[]")}
    return {prefix}


# Parts of report.json that differ between two runs of one federation: timings, the noise's effects and where
# the outputs went. Everything else must match.
_VARIES = ("timings", "out", "rows", "seconds")


def test_flwr_run_dot_runs_the_same_federation_as_fedsynth_simulate(tmp_path):
    """`flwr run .` on the repository root and `fedsynth simulate` with the same three overrides: the same sites,
    the same configuration and the same report, apart from timings and noise."""
    home = Path(tempfile.mkdtemp(prefix="fedsynth-test-flwr-"))
    port = free_port()
    become_subreaper()
    settings = {"rounds": 1, "local-steps": 5, "select-rounds": "2"}  # 2 of HI's 13 selection rounds: suite time
    by_flwr, by_simulate = tmp_path / "flwr-out", tmp_path / "simulate-out"
    try:
        write_flower_home(home)
        overrides = home / "overrides.toml"
        overrides.write_text(tomli_w.dumps({**settings, "out": str(by_flwr)}))
        env = marked_env(MARK, flower_env(home, port))
        result = subprocess.run(
            ["flwr", "run", str(APP_DIR), "local", "--run-config", str(overrides),
             "--federation-config", "num-supernodes=4 client-resources-num-cpus=1", "--stream"],
            cwd=home, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finally:
        stop_local_superlink(home, port)
        shutil.rmtree(home, ignore_errors=True)
    simulated = subprocess.run([FEDSYNTH, "simulate", "--rounds", "1", "--local-steps", "5", "--set", "select-rounds=2",
                                "--out", str(by_simulate)],
                               env=marked_env(MARK, dict(os.environ)), capture_output=True, text=True,
                               timeout=300)  # fmt: skip
    assert simulated.returncode == 0, simulated.stdout[-3000:] + simulated.stderr[-3000:]

    schema_path = Path(os.path.dirname(load_schema.__code__.co_filename)) / "datasets" / "hi.yaml"
    # The default row count is the sum of the sites' DP row counts (noise std about 20 per site at ε=1).
    reports = [check_outputs(out, schema_path, rows=(22272 - 400, 22272 + 400), epsilon=1.0, rounds=1, sites=4)
               for out in (by_flwr, by_simulate)]  # fmt: skip
    flwr_report, simulate_report = reports
    sites = [f"region={r}" for r in ("northcentral", "other", "south", "west")]
    for report in reports:
        assert sorted(report["privacy"]["sites"]) == sites
        assert sorted(report["rounds"][0]["aggregated"]) == sites
    # One configuration: every key equal but where the outputs went.
    assert {k: v for k, v in flwr_report["config"].items() if k != "out"} == {
        k: v for k, v in simulate_report["config"].items() if k != "out"
    }
    # One report: the same sections and fields, and the same words wherever the noise and the clock do not reach.
    shapes = [{p for p in _key_paths(r) if not any(part in p for part in _VARIES)} for r in reports]
    assert shapes[0] == shapes[1], shapes[0] ^ shapes[1]
    for key in ("unit", "neighbouring", "mechanism", "noise_source", "accountant", "delta", "epsilon_target"):
        assert flwr_report["privacy"][key] == simulate_report["privacy"][key], key
    for report in reports:
        assert {s["noise_multiplier"] > 0 for s in report["privacy"]["sites"].values()} == {True}
    assert not flower_processes(), "a Flower process was left running"
