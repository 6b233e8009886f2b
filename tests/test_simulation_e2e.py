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


def test_simulate_an_unseen_csv_and_generate_more(tmp_path, small_schema, small_table):
    data, schema_path, out = tmp_path / "people.csv", tmp_path / "people.yaml", tmp_path / "run"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema_path), "--partition", "iid",
         "--clients", "3", "--rounds", "2", "--local-steps", "4", "--epsilon", "2", "--rows", "123",
         "--out", str(out), "--set", "batch-size=32"],
        env=marked_env(MARK), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 2/2" in result.stdout
    report = check_outputs(out, schema_path, rows=123, epsilon=2.0, rounds=2, sites=3)
    assert report["config"]["partition"] == "iid"
    sampled = tmp_path / "more.csv"
    generated = subprocess.run(
        [FEDSYNTH, "generate", "--checkpoint", str(out / "checkpoints" / "final.pt"), "--rows", "1000",
         "--out", str(sampled)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    validate_frame(pd.read_csv(sampled, dtype=str, keep_default_na=False), small_schema)
    assert len(pd.read_csv(sampled)) == 1000
    assert not flower_processes(), "a Flower process was left running"


def test_flwr_run_dot_runs_the_same_app_with_its_defaults(tmp_path):
    """`flwr run .` on the repository root: the default HI federation, shortened to 2 rounds."""
    home = Path(tempfile.mkdtemp(prefix="fedsynth-test-flwr-"))
    port = free_port()
    become_subreaper()
    out = tmp_path / "flwr-out"
    try:
        write_flower_home(home)
        overrides = home / "overrides.toml"
        overrides.write_text(tomli_w.dumps({"rounds": 2, "local-steps": 10, "out": str(out)}))
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
    schema_path = Path(os.path.dirname(load_schema.__code__.co_filename)) / "datasets" / "hi.yaml"
    # The default row count is the sum of the sites' DP row counts (noise std about 20 per site at ε=1).
    report = check_outputs(out, schema_path, rows=(22272 - 400, 22272 + 400), epsilon=1.0, rounds=2, sites=4)
    assert sorted(report["privacy"]["sites"]) == [f"region={r}" for r in ("northcentral", "other", "south", "west")]
    assert not flower_processes(), "a Flower process was left running"
