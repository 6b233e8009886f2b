"""``fedsynth sweep``: privacy-fidelity trade-offs over a grid of ε, federations and seeds.

For every seed the table is split once into a training part and a holdout that no
method ever trains on. Every cell of the grid then produces one synthetic table and
scores it with ``metrics.evaluate.evaluate`` against that seed's split:

- ``fedsynth``: the federated DP-GAN, ε per site, in Flower's simulation runtime
  (``simulations.setup.prepare_simulation`` + ``simulations.runner.run_simulation``,
  as ``fedsynth simulate`` runs it);
- ``marginals``: DP independent marginals at the same ε. Every site of the same
  partition releases one-way histograms of all columns once, with Gaussian noise
  calibrated so that this release alone spends the whole ε at δ (the federation's own
  measurement step, given the whole budget); the server sums them and samples every
  column independently;
- ``central``: the same GAN on the pooled training rows (one site) at the same ε;
- ``real``: the training rows themselves, scored like a synthetic table (the
  reference: utility is then TRTR, and membership inference at its worst).

Each cell writes ``OUT/cells/<cell>/evaluation.json`` last; a cell that has one is
skipped, so an interrupted sweep continues where it stopped. A cell that fails
records its one-line error in ``error.txt`` and the sweep goes on (the next run
retries it). After every cell ``results.csv`` and ``results.md`` are rewritten;
at the end the plots.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError
from fedsynth.simulations.sweep_config import SweepConfig

SETTINGS_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"
EVALUATION = "evaluation.json"
ERROR = "error.txt"
POOLED = "pooled"  # the partition label of the central baseline

METRIC_COLUMNS = ("column_shapes", "pair_trends", "precision", "recall", "density", "coverage", "detection_auc",
                  "tstr", "trtr", "mia_auc", "exact_match_rate", "dcr_median")  # fmt: skip
RESULT_COLUMNS = ("method", "epsilon", "epsilon_max", "sites", "partition", "seed", *METRIC_COLUMNS, "run_seconds",
                  "utility_metric", "error")  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a method at one ε, federation and seed."""

    method: str  # fedsynth | marginals | central | real
    seed: int
    epsilon: float | None = None  # None: real
    partition: str | None = None  # as written in the sweep file; None: central and real
    sites: int | None = None  # None: column:NAME partitions (one site per value) and real

    @property
    def id(self) -> str:
        parts = [self.method]
        if self.epsilon is not None:
            parts.append(f"eps{self.epsilon:g}")
        if self.partition is not None:
            parts.append(re.sub(r"[^A-Za-z0-9.=-]+", "-", self.partition))
        if self.sites is not None:
            parts.append(f"sites{self.sites}")
        parts.append(f"seed{self.seed}")
        return "_".join(parts)

    def describe(self) -> str:
        parts = [self.method]
        if self.epsilon is not None:
            parts.append(f"ε={self.epsilon:g}")
        if self.partition is not None:
            parts.append(self.partition)
        if self.sites is not None:
            parts.append(f"sites={self.sites}")
        parts.append(f"seed={self.seed}")
        return " ".join(parts)


def grid_cells(config: SweepConfig) -> list[Cell]:
    """Every cell, cheap baselines first, then the GAN runs one seed after another."""
    cheap: list[Cell] = []
    gans: list[Cell] = []
    for seed in config.seeds:
        if "real" in config.baselines:
            cheap.append(Cell("real", seed))
        for eps in config.epsilons:
            federations = [(p, n) for p in config.partitions for n in _site_counts(config, p)]
            if "marginals" in config.baselines:
                cheap += [Cell("marginals", seed, eps, p, n) for p, n in federations]
            if not (config.in_gan_grid("seeds", seed) and config.in_gan_grid("epsilons", eps)):
                continue
            gans += [
                Cell("fedsynth", seed, eps, p, n)
                for p, n in federations
                if config.in_gan_grid("partitions", p) and (n is None or config.in_gan_grid("sites", n))
            ]
            if "central" in config.baselines:
                gans.append(Cell("central", seed, eps, None, 1))
    return cheap + gans


def _site_counts(config: SweepConfig, partition: str) -> list[int | None]:
    return [None] if config.partition_specs[partition].kind == "column" else list(config.sites)


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    cells: int
    done_earlier: int
    computed: int
    failed: list[str]
    out: Path
    plots: list[Path]


def run_sweep(config: SweepConfig, echo: Callable[[str], None] = print, verbose: bool = False) -> SweepOutcome:
    """Run every cell not done yet, then write the results table and the plots."""
    from fedsynth.simulations.sweep_plots import write_plots
    from fedsynth.tabular.loading import load_table

    out = Path(config.out)
    cells = grid_cells(config)
    with _sweep_folder(out, config):
        done = [c for c in cells if (out / "cells" / c.id / EVALUATION).is_file()]
        gan_left = sum(1 for c in cells if c.method in ("fedsynth", "central") and c not in done)
        echo(f"Sweep {config.source}: {len(cells)} cells ({len(done)} done earlier, {gan_left} GAN runs to go) "
             f"into {out}")  # fmt: skip
        metric = config.utility_metric
        splits: dict[int, tuple[Path, Path]] = {}
        table = None
        failed: list[str] = []
        for number, cell in enumerate(cells, start=1):
            folder = out / "cells" / cell.id
            prefix = f"[{number}/{len(cells)}] {cell.describe()}"
            if (folder / EVALUATION).is_file():
                echo(f"{prefix}: {_summary(json.loads((folder / EVALUATION).read_text()), metric)} (done earlier)")
                continue
            if cell.seed not in splits:
                if table is None:
                    table = load_table(config.data, config.schema)
                splits[cell.seed] = split_table(table, config, out, cell.seed)
            started = time.time()
            try:
                record = run_cell(cell, config, splits[cell.seed], folder, echo if verbose else None)
            except UserError as exc:
                failed.append(_fail(folder, str(exc)))
                echo(f"{prefix}: FAILED: {failed[-1]}")
            except Exception as exc:  # one broken cell must not stop the sweep
                failed.append(_fail(folder, f"{type(exc).__name__}: {exc}"))
                echo(f"{prefix}: FAILED: {failed[-1]}")
            else:
                withheld = "synthetic" in record["cell"]
                note = " [release withheld: scored the final checkpoint's samples]" if withheld else ""
                echo(f"{prefix}: {_summary(record, metric)} ({time.time() - started:.0f} s){note}")
            write_results(config, out, cells)
        frame = write_results(config, out, cells)
        plots = write_plots(frame, config, out / "plots")
    return SweepOutcome(len(cells), len(done), len(cells) - len(done) - len(failed), failed, out, plots)


@contextlib.contextmanager
def _sweep_folder(out: Path, config: SweepConfig) -> Iterator[None]:
    """Claim the sweep folder: one sweep at a time, and only one set of settings per folder."""
    from fedsynth.simulations.runner import is_alive

    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the sweep folder ({exc.strerror})") from None
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        try:
            saved = json.loads(settings_path.read_text(encoding="utf-8")).get("settings", {})
        except ValueError:
            saved = None
        if saved != json.loads(json.dumps(config.settings())):
            differ = sorted(k for k in config.settings() if (saved or {}).get(k) != config.settings()[k])
            raise UserError(f"{out}: holds a sweep with other settings ({', '.join(differ) or SETTINGS_FILE}); "
                            "choose another --out or remove that folder")  # fmt: skip
    elif any(p.name not in (LOCK_FILE,) for p in out.iterdir()):
        raise UserError(f"{out}: folder is not empty and holds no sweep; choose another --out")
    lock = out / LOCK_FILE
    if lock.is_file():
        with contextlib.suppress(ValueError, OSError):
            owner = int(lock.read_text().strip() or 0)
            if owner and owner != os.getpid() and is_alive(owner):
                raise UserError(f"{out}: in use by a running sweep (pid {owner}); wait for it or choose another --out")
    lock.write_text(str(os.getpid()))
    payload = {"settings": config.settings(), "config_file": config.source}
    settings_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


def _fail(folder: Path, message: str) -> str:
    message = " ".join(message.split())
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ERROR).write_text(message + "\n", encoding="utf-8")
    return message


def split_table(table: pd.DataFrame, config: SweepConfig, out: Path, seed: int) -> tuple[Path, Path]:
    """Split the validated table once per seed into ``train.csv`` and ``holdout.csv`` (reused when present)."""
    from fedsynth.tabular.partitioning import split_holdout
    from fedsynth.tabular.table import write_table

    folder = out / "data" / f"seed-{seed}"
    train_path, holdout_path = folder / "train.csv", folder / "holdout.csv"
    if train_path.is_file() and holdout_path.is_file():
        return train_path, holdout_path
    n_holdout = round(config.holdout * len(table))
    if n_holdout < 10 or len(table) - n_holdout < 10:
        raise UserError(f"{config.source}: 'holdout' {config.holdout:g} of {len(table)} rows leaves fewer than 10 "
                        "rows for training or holdout")  # fmt: skip
    frame = table.copy()
    for col in config.schema.columns:
        if col.type == "integer":
            frame[col.name] = frame[col.name].astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    train, held_out = split_holdout(frame, config.holdout, seed)  # the split `fedsynth simulate --holdout` makes
    write_table(train, train_path)
    write_table(held_out, holdout_path)
    return train_path, holdout_path


def run_cell(
    cell: Cell, config: SweepConfig, split: tuple[Path, Path], folder: Path, echo: Callable[[str], None] | None
) -> dict[str, Any]:
    """Produce the cell's synthetic table, score it, and write ``evaluation.json`` (last)."""
    from fedsynth.metrics.evaluate import evaluate
    from fedsynth.metrics.evaluation_report import write_json
    from fedsynth.tabular.table import read_table, validate_frame

    if folder.exists():  # an unfinished or failed earlier attempt: start clean
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    train = read_table(split[0], config.schema)
    holdout = read_table(split[1], config.schema)
    started = time.time()
    epsilon_max: float | None = None
    sites = cell.sites
    extra: dict[str, Any] = {}
    if cell.method == "real":
        synthetic = train
    elif cell.method == "marginals":
        synthetic, epsilon_max, sites = dp_marginals(train, cell, config)
        synthetic = validate_frame(synthetic, config.schema, source=f"{cell.id} synthetic")
        _write_csv(synthetic, config, folder / "synthetic.csv")
    else:
        report, sites = _run_gan(cell, config, split[0], folder, echo)
        privacy = report["privacy"]
        # A reproducible-noise run is NOT DP (results.md says so); its figure is what the accountant would give.
        epsilon_max = (
            privacy["epsilon_max"]
            if privacy.get("differentially_private", True)
            else (privacy["epsilon_if_noise_were_secret"])
        )
        release = report.get("release") or {}
        if (folder / "synthetic.csv").is_file():
            synthetic = read_table(folder / "synthetic.csv", config.schema)
        else:  # the run's release gate withheld the table: score what the final model samples
            synthetic = _sample_final(folder, config, cell, len(train))
            source = "the final checkpoint (the run withheld its release: "
            source += "; ".join(str(r) for r in release.get("reasons", [])) or "no reason given"
            extra["synthetic"] = source + ")"
    run_seconds = time.time() - started
    evaluation = evaluate(train, holdout, synthetic, config.schema, target=config.target, seed=cell.seed,
                          max_rows=config.max_rows)  # fmt: skip
    record = {
        "cell": {
            "id": cell.id,
            "method": cell.method,
            "epsilon": cell.epsilon,
            "epsilon_max": epsilon_max,
            "sites": sites,
            "partition": POOLED if cell.method == "central" else cell.partition,
            "seed": cell.seed,
            "run_seconds": run_seconds,
            **extra,
        },
        "evaluation": evaluation,
    }
    write_json(record, folder / EVALUATION)
    return record


def _sample_final(folder: Path, config: SweepConfig, cell: Cell, default_rows: int) -> pd.DataFrame:
    """Sample the run's final model (with its DP calibration) as the server does: post-processing, no privacy cost."""
    from fedsynth.server.checkpoints import calibration_of, load_checkpoint
    from fedsynth.server.synthesis import sample_table
    from fedsynth.tabular.table import validate_frame

    final = folder / "checkpoints" / "final.pt"
    if not final.is_file():
        raise UserError(f"{folder}: the run wrote neither synthetic.csv nor {final.name}")
    payload = load_checkpoint(final)
    rows = config.run_config.rows or default_rows
    table = sample_table(payload["record"], payload["schema"], payload["shape"], rows, seed=cell.seed,
                         marginals=calibration_of(payload))  # fmt: skip
    table = validate_frame(table, config.schema, source=f"{final} samples")
    _write_csv(table, config, folder / "synthetic.sampled.csv")
    return table


def _write_csv(frame: pd.DataFrame, config: SweepConfig, path: Path) -> None:
    from fedsynth.tabular.table import write_table

    frame = frame.copy()
    for col in config.schema.columns:
        if col.type == "integer":
            frame[col.name] = frame[col.name].astype(np.int64)
    write_table(frame, path)


def cell_run_config(cell: Cell, config: SweepConfig, train_path: Path, folder: Path) -> RunConfig:
    """The run configuration of a GAN cell: the sweep's ``run`` keys plus the cell's grid position."""
    mapping = {**RunConfig().to_mapping(), **config.run}
    mapping.update({"data": str(train_path), "schema": config.schema_path, "epsilon": cell.epsilon,
                    "seed": cell.seed, "out": str(folder)})  # fmt: skip
    if cell.method == "central":
        mapping.update({"partition": "iid", "clients": 1, "min-sites": 1, "min-replies": 1})
    else:
        assert cell.partition is not None
        mapping.update({"partition": cell.partition, "clients": cell.sites or 0})
    return RunConfig.from_mapping(mapping, source=f"{config.source}: cell {cell.id}")


def _run_gan(
    cell: Cell, config: SweepConfig, train_path: Path, folder: Path, echo: Callable[[str], None] | None
) -> tuple[dict[str, Any], int]:
    from fedsynth.simulations.runner import run_simulation
    from fedsynth.simulations.setup import prepare_simulation

    quiet = echo or (lambda _line: None)
    plan = prepare_simulation(cell_run_config(cell, config, train_path, folder), echo=lambda s: quiet(f"  {s}"))
    result = run_simulation(plan.config, plan.num_sites, echo=lambda s: quiet(f"  {s}"), verbose=False)
    report_path = folder / "report.json"
    if not report_path.is_file():
        reason = result.errors[-1] if result.errors else f"flwr exited with code {result.returncode}"
        raise UserError(f"simulation did not finish: {reason}")
    return json.loads(report_path.read_text(encoding="utf-8")), plan.num_sites


def dp_marginals(train: pd.DataFrame, cell: Cell, config: SweepConfig) -> tuple[pd.DataFrame, float, int]:
    """The DP independent-marginals baseline: (synthetic table, ε spent per site, number of sites).

    Every site of the cell's partition releases its one-way histograms once, with the
    Gaussian noise multiplier that spends the whole ε at δ on that single release
    (L2 sensitivity sqrt(columns), as in the federation's measurement step).
    """
    from fedsynth.marginals.bins import schema_bins
    from fedsynth.marginals.estimate import Marginals
    from fedsynth.marginals.release import release_histograms
    from fedsynth.privacy.budget import epsilon_of, measurement_noise
    from fedsynth.privacy.secret_noise import NoiseSource
    from fedsynth.tabular.partitioning import num_sites, partition_table

    assert cell.epsilon is not None and cell.partition is not None
    run = config.run_config
    spec = config.partition_specs[cell.partition]
    sites_count = num_sites(spec, train, cell.sites or 0)
    sites = partition_table(train, spec, sites_count, cell.seed)
    noise = measurement_noise(cell.epsilon, run.delta, 1.0, run.accountant)  # the whole ε on one release
    layout = schema_bins(config.schema, run.histogram_bins)
    source = NoiseSource.for_run(run.reproducible_noise, cell.id, "dp-marginals")
    sums = [np.zeros(spec_.size) for spec_ in layout]
    std = 0.0
    for _name, frame in sites:
        if len(frame) == 0:
            continue
        release = release_histograms(frame, layout, [], noise, 1.0, source)  # one-way only: sensitivity sqrt(K)
        std = release.one_way_std
        for i, noisy in enumerate(release.one_way):
            sums[i] += noisy
    marginals = Marginals.from_noisy_counts(layout, sums, std * math.sqrt(len(sites)))
    synthetic = marginals.sample_independent(len(train), seed=cell.seed)
    return synthetic, epsilon_of([(noise, 1.0, 1)], run.delta, run.accountant), sites_count


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
def result_row(record: dict[str, Any], metric: str) -> dict[str, Any]:
    """One results.csv row from a cell's evaluation.json."""
    cell, ev = record["cell"], record["evaluation"]
    fidelity, privacy, utility = ev["fidelity"], ev["privacy"], ev.get("utility") or {}
    return {
        "method": cell["method"],
        "epsilon": cell["epsilon"],
        "epsilon_max": cell["epsilon_max"],
        "sites": cell["sites"],
        "partition": cell["partition"],
        "seed": cell["seed"],
        "column_shapes": fidelity["column_shapes"]["score"],
        "pair_trends": fidelity["pair_trends"]["score"],
        **{k: fidelity["prdc"][k] for k in ("precision", "recall", "density", "coverage")},
        "detection_auc": fidelity["detection"]["auc"],
        "tstr": (utility.get("tstr") or {}).get(metric),
        "trtr": (utility.get("trtr") or {}).get(metric),
        "mia_auc": privacy["mia_auc"],
        "exact_match_rate": privacy["exact_match_rate"],
        "dcr_median": privacy["dcr_train"]["median"],
        "run_seconds": cell["run_seconds"],
        "utility_metric": metric,
        "error": None,
    }


def collect_results(config: SweepConfig, out: Path, cells: list[Cell]) -> pd.DataFrame:
    """One row per cell of the grid that finished or failed (in grid order)."""
    metric = config.utility_metric
    rows = []
    for cell in cells:
        folder = out / "cells" / cell.id
        if (folder / EVALUATION).is_file():
            rows.append(result_row(json.loads((folder / EVALUATION).read_text(encoding="utf-8")), metric))
        elif (folder / ERROR).is_file():
            error = (folder / ERROR).read_text(encoding="utf-8").strip()
            rows.append({"method": cell.method, "epsilon": cell.epsilon, "sites": cell.sites, "seed": cell.seed,
                         "partition": POOLED if cell.method == "central" else cell.partition,
                         "utility_metric": metric, "error": error})  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    frame["sites"] = frame["sites"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def write_results(config: SweepConfig, out: Path, cells: list[Cell]) -> pd.DataFrame:
    """Rewrite ``results.csv`` and ``results.md`` from the cells' evaluation files."""
    frame = collect_results(config, out, cells)
    tmp = out / ".results.csv.partial"
    frame.to_csv(tmp, index=False)
    tmp.replace(out / "results.csv")
    tmp = out / ".results.md.partial"
    tmp.write_text(results_markdown(frame, config), encoding="utf-8")
    tmp.replace(out / "results.md")
    return frame


SUMMARY_COLUMNS = ("column_shapes", "pair_trends", "detection_auc", "tstr", "mia_auc", "dcr_median", "epsilon_max")


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (method, partition, sites, ε)."""
    ok = frame[frame["error"].isna()].copy()
    keys = ["method", "partition", "sites", "epsilon"]
    for key in keys:
        ok[key] = ok[key].astype(object).where(ok[key].notna(), "")
    grouped = ok.groupby(keys, sort=False, dropna=False)
    numbers = grouped[list(SUMMARY_COLUMNS)].agg(["mean", "std"])
    numbers.columns = [f"{a}_{b}" for a, b in numbers.columns]
    numbers["seeds"] = grouped.size()
    return numbers.reset_index()


def results_markdown(frame: pd.DataFrame, config: SweepConfig) -> str:
    metric = config.utility_metric
    lines = [
        f"# Sweep results: {config.source}",
        "",
        f"Data {config.data}, target '{config.target}' (utility: {metric}, trained on each method's table and tested "
        f"on the real holdout; for `real` that is TRTR), holdout {config.holdout:g} per seed. Mean ± standard "
        "deviation over seeds. Fidelity is measured against the holdout (1 = identical); detection AUC and "
        "membership-inference (MIA) AUC: 0.5 = indistinguishable / no leak.",
        "",
        *(
            [
                "**NOT differentially private**: this sweep ran with reproducible-noise = true (noise drawn from the "
                "seed); the ε columns are what the accountant would give with secret noise.",
                "",
            ]
            if config.run_config.reproducible_noise
            else []
        ),
        "| method | partition | sites | ε | ε spent (max) | seeds | column shapes | pair trends | detection AUC | "
        f"TSTR {metric} | MIA AUC | DCR median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in summarise(frame).to_dict("records"):

        def cell(name: str, digits: int = 3, row: dict = row) -> str:
            mean, std = row[f"{name}_mean"], row[f"{name}_std"]
            if mean is None or pd.isna(mean):
                return "n/a"
            return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")

        eps = "" if row["epsilon"] == "" else f"{row['epsilon']:g}"
        lines.append(
            f"| {row['method']} | {row['partition']} | {row['sites']} | {eps} | {cell('epsilon_max', 2)} | "
            f"{row['seeds']} | {cell('column_shapes')} | {cell('pair_trends')} | {cell('detection_auc')} | "
            f"{cell('tstr')} | {cell('mia_auc')} | {cell('dcr_median')} |"
        )
    failed = frame[frame["error"].notna()]
    if len(failed):
        lines += ["", f"{len(failed)} cell(s) failed (rerun the sweep to retry them):", ""]
        for r in failed.itertuples():
            where = " ".join(str(v) for v in (r.partition, None if pd.isna(r.sites) else f"sites={r.sites}")
                             if v is not None and not pd.isna(v))  # fmt: skip
            eps = "" if pd.isna(r.epsilon) else f" ε={r.epsilon:g}"
            lines.append(f"- {r.method}{eps} {where} seed={r.seed}: {r.error}".replace("  ", " "))
    return "\n".join(lines) + "\n"


def _summary(record: dict[str, Any], metric: str) -> str:
    ev = record["evaluation"]
    tstr = ((ev.get("utility") or {}).get("tstr") or {}).get(metric)

    def num(value: Any) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    fidelity = ev["fidelity"]
    return (f"shapes {num(fidelity['column_shapes']['score'])} pairs {num(fidelity['pair_trends']['score'])} "
            f"tstr {num(tstr)} mia {num(ev['privacy']['mia_auc'])}")  # fmt: skip
