"""``fedsynth sweep``: the sweep file's one-line errors, the DP-marginals baseline, and a tiny sweep end to end.

The end-to-end test runs the real command on a generated 600-row table: 4 ε × 2 heterogeneity
levels (iid, dirichlet:0.5 over 2 sites) × 2 seeds of DP-marginals baselines, the real data per
seed, and the GANs (federated on both levels, central) at ε = 8 on seed 0 (``gan-grid``): each
GAN cell starts Flower, about 15-40 s. Then it runs the command again (every cell skipped) and
once more after deleting a cell (that one recomputed, to the same numbers).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.core.errors import ConfigError
from fedsynth.simulations.sweep import Cell, dp_marginals, grid_cells
from fedsynth.simulations.sweep_config import load_sweep_config
from fedsynth.tabular.schema import dump_schema, parse_schema
from fedsynth.tabular.table import read_table
from tests.conftest import SMALL_SCHEMA
from tests.process_marks import marked_env, marked_flower_processes, new_mark

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
EXAMPLES = Path(__file__).resolve().parent.parent / "simulations" / "examples"


def mixed_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A small table with some dependence between its columns (so that utility means something)."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    age = rng.integers(18, 90, n)
    income = np.round(np.exp(9 + 0.02 * age + 0.4 * (region == "north") + rng.normal(0, 0.5, n)).clip(0, 200000), 2)
    smoker = np.where(rng.random(n) < 0.05 + 0.4 * (region == "south") + 0.003 * (90 - age), "true", "false")
    return pd.DataFrame({"age": age, "income": income, "region": region, "smoker": smoker})


@pytest.fixture
def table_files(tmp_path: Path) -> tuple[Path, Path]:
    data, schema = tmp_path / "people.csv", tmp_path / "people.yaml"
    mixed_table().to_csv(data, index=False)
    dump_schema(parse_schema(SMALL_SCHEMA, source="people.yaml"), schema)
    return data, schema


def sweep_file(path: Path, data: Path, schema: Path, body: str) -> Path:
    path.write_text(f"data: {data}\nschema: {schema}\ntarget: smoker\n{body}", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The sweep file
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("epsilon: [1, 2]\n", ["unknown key 'epsilon'", "did you mean 'epsilons'"]),
        ("epsilons: []\n", ["'epsilons' must list at least one value"]),
        ("epsilons: [1, -2]\n", ["'epsilons[1]' must be a positive number"]),
        ("epsilons: [1, yes]\n", ["'epsilons[1]' must be a number"]),
        ("partitions: [iid, 'dirichlet:x']\n", ["'partitions[1]'", "ALPHA must be a number"]),
        ("partitions: ['column:nope']\n", ["'partitions[0]'", "no column 'nope'"]),
        ("partitions: [random]\n", ["'partitions[0]'", "expected column:NAME, iid or dirichlet"]),
        ("seeds: [0, 0]\n", ["'seeds[1]' repeats 0"]),
        ("baselines: [marginals, copula]\n", ["'baselines[1]' must be one of marginals, central, real"]),
        ("run: {epsilon: 2}\n", ["'run.epsilon' is set by the sweep itself"]),
        ("run: {round: 2}\n", ["run: unknown config key 'round'", "did you mean 'rounds'"]),
        ("run: {rounds: 0}\n", ["'rounds' must be at least 1"]),
        ("holdout: 1.5\n", ["'holdout' must be a share between 0 and 1"]),
        ("epsilons: [1, 2]\ngan-grid: {epsilons: [3]}\n", ["'gan-grid.epsilons[0]' 3.0 is not in 'epsilons'"]),
        ("gan-grid: {seed: [0]}\n", ["unknown key 'gan-grid.seed'"]),
        ("max-rows: 5\n", ["'max-rows' must be at least 10"]),
    ],
)
def test_sweep_file_mistakes_are_one_line_errors(tmp_path, table_files, body, needles):
    path = sweep_file(tmp_path / "sweep.yaml", *table_files, body)
    with pytest.raises(ConfigError) as caught:
        load_sweep_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_target_is_required_for_a_table_other_than_the_default(tmp_path, table_files):
    data, schema = table_files
    path = tmp_path / "sweep.yaml"
    path.write_text(f"data: {data}\nschema: {schema}\n")
    with pytest.raises(ConfigError, match="'target' is required"):
        load_sweep_config(path)
    path.write_text(f"data: {data}\nschema: {schema}\ntarget: height\n")
    with pytest.raises(ConfigError, match="'target' 'height' is not a column"):
        load_sweep_config(path)


def test_the_command_prints_one_error_line_and_exits_2(tmp_path, table_files):
    path = sweep_file(tmp_path / "sweep.yaml", *table_files, "epsilons: []\n")
    result = subprocess.run([FEDSYNTH, "sweep", "--config", str(path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'epsilons'" in lines[0], result.stderr
    assert not (tmp_path / "outputs").exists()


def test_the_examples_parse_into_the_documented_grids():
    full = load_sweep_config(EXAMPLES / "sweep-hi.yaml")
    cells = grid_cells(full)
    methods = pd.Series([c.method for c in cells]).value_counts().to_dict()
    # 5 ε × 2 partitions × 2 seeds, central per (ε, seed), real per seed.
    assert methods == {"fedsynth": 20, "marginals": 20, "central": 10, "real": 2}
    assert full.partitions == ("column:region", "dirichlet:0.5:whi") and full.target == "whi"
    tiny = load_sweep_config(EXAMPLES / "sweep-tiny.yaml")
    methods = pd.Series([c.method for c in grid_cells(tiny)]).value_counts().to_dict()
    assert methods == {"marginals": 16, "real": 2, "fedsynth": 2, "central": 1}
    assert len(tiny.epsilons) >= 4 and len(tiny.partitions) == 2 and len(tiny.seeds) == 2


# ---------------------------------------------------------------------------------------------------------------------
# The DP-marginals baseline
# ---------------------------------------------------------------------------------------------------------------------
def test_dp_marginals_spend_the_whole_budget_in_one_release_and_follow_the_data(tmp_path, table_files):
    config = load_sweep_config(sweep_file(tmp_path / "sweep.yaml", *table_files, "partitions: [iid]\nsites: [3]\n"))
    train = read_table(table_files[0], config.schema)
    for epsilon in (0.5, 2.0):
        synthetic, spent, sites = dp_marginals(train, Cell("marginals", 0, epsilon, "iid", 3), config)
        assert sites == 3 and len(synthetic) == len(train)
        assert 0.9 * epsilon <= spent <= epsilon * 1.001  # the whole ε at δ, from Opacus's accountant
    synthetic, _, _ = dp_marginals(train, Cell("marginals", 0, 100.0, "iid", 3), config)
    real = train["region"].value_counts(normalize=True)
    assert (synthetic["region"].value_counts(normalize=True) - real).abs().max() < 0.08
    again, _, _ = dp_marginals(train, Cell("marginals", 0, 100.0, "iid", 3), config)
    pd.testing.assert_frame_equal(synthetic, again)  # seeded by the cell


# ---------------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------------
MARK = new_mark("FEDSYNTH_SWEEP_TEST")  # in the environment of every process our sweeps start


def our_flower_processes() -> set[int]:
    """Live Flower and Ray processes started by this test's sweeps (others may run Flower on this machine too)."""
    return marked_flower_processes(MARK)


def run_sweep_command(config: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.time()
    env = marked_env(MARK)
    result = subprocess.run([FEDSYNTH, "sweep", "--config", str(config), "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert not our_flower_processes(), "a Flower process was left running"
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result, time.time() - started


@pytest.mark.e2e
def test_a_tiny_sweep_runs_resumes_and_recomputes_a_deleted_cell(tmp_path, table_files):
    config = sweep_file(tmp_path / "sweep.yaml", *table_files, """\
epsilons: [1, 2, 4, 8]
sites: [2]
partitions: [iid, "dirichlet:0.5"]
seeds: [0, 1]
baselines: [marginals, central, real]
gan-grid: {epsilons: [8], seeds: [0], partitions: ["dirichlet:0.5"]}
max-rows: 200
run: {rounds: 1, local-steps: 2, batch-size: 32, reproducible-noise: true, select-rounds: "1"}
""")  # fmt: skip
    # Reproducible noise (NOT DP; a research option) so that a recomputed cell can be compared number for number.
    out = tmp_path / "sweep-out"
    first, _ = run_sweep_command(config, out)
    assert "[19/20] fedsynth ε=8 dirichlet:0.5 sites=2 seed=0: shapes " in first.stdout, first.stdout
    assert "[20/20] central ε=8 sites=1 seed=0: shapes " in first.stdout, first.stdout

    # The split: disjoint train and holdout per seed; the GANs trained on the train part only.
    for seed in (0, 1):
        train = pd.read_csv(out / "data" / f"seed-{seed}" / "train.csv")
        holdout = pd.read_csv(out / "data" / f"seed-{seed}" / "holdout.csv")
        assert (len(train), len(holdout)) == (480, 120)
    gan = out / "cells" / "fedsynth_eps8_dirichlet-0.5_sites2_seed0"
    report = json.loads((gan / "report.json").read_text())
    assert report["config"]["data"] == str(out / "data" / "seed-0" / "train.csv")
    assert abs(sum(s["num_examples"] for s in report["privacy"]["sites"].values()) - 480) <= 120  # DP row counts

    results = pd.read_csv(out / "results.csv")
    assert len(results) == 20 and results["error"].isna().all(), results
    assert results["method"].value_counts().to_dict() == {"marginals": 16, "real": 2, "fedsynth": 1, "central": 1}
    marginals = results[results["method"] == "marginals"]
    assert set(zip(marginals["epsilon"], marginals["partition"], marginals["seed"], strict=True)) == {
        (e, p, s) for e in (1.0, 2.0, 4.0, 8.0) for p in ("iid", "dirichlet:0.5") for s in (0, 1)
    }
    assert (marginals["sites"] == 2).all() and (marginals["epsilon_max"] <= marginals["epsilon"] * 1.001).all()
    fedsynth = results[results["method"] == "fedsynth"]
    assert list(fedsynth["partition"]) == ["dirichlet:0.5"] and (fedsynth["sites"] == 2).all()
    assert ((fedsynth["epsilon_max"] > 0) & (fedsynth["epsilon_max"] <= 8)).all()
    central = results[results["method"] == "central"].iloc[0]
    assert (central["sites"], central["partition"], central["epsilon"]) == (1, "pooled", 8.0)
    real = results[results["method"] == "real"]
    assert real["epsilon"].isna().all() and (real["tstr"] == real["trtr"]).all()
    scored = results[["column_shapes", "pair_trends", "detection_auc", "tstr", "mia_auc"]]
    assert scored.notna().all().all() and ((scored >= 0) & (scored <= 1)).all().all()
    assert (results["utility_metric"] == "roc_auc").all()
    summary = (out / "results.md").read_text()
    assert "| fedsynth | dirichlet:0.5 | 2 | 8 |" in summary and " ± " in summary
    for name in ("fidelity_vs_epsilon.png", "utility_vs_epsilon.png", "mia_vs_epsilon.png"):
        png = (out / "plots" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name

    # Run again: every cell is done, nothing is recomputed, no Flower starts.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/evaluation.json")}
    second, seconds = run_sweep_command(config, out)
    assert second.stdout.count("(done earlier)") == 20, second.stdout
    assert "20 cells (20 done earlier, 0 GAN runs to go)" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/evaluation.json")} == stamps
    assert seconds < 60, f"a sweep with every cell done took {seconds:.0f} s"

    # Delete one cell: only it is computed again, to the same numbers (every step is seeded, the noise too).
    deleted = "marginals_eps2_dirichlet-0.5_sites2_seed1"
    shutil.rmtree(out / "cells" / deleted)
    third, _ = run_sweep_command(config, out)
    assert third.stdout.count("(done earlier)") == 19, third.stdout
    assert "marginals ε=2 dirichlet:0.5 sites=2 seed=1: shapes" in third.stdout
    assert (out / "cells" / deleted / "evaluation.json").is_file()
    again = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(again.drop(columns="run_seconds"), results.drop(columns="run_seconds"))
