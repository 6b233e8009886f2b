"""How high column shapes and pair trends can go on the fidelity benchmark's splits, without any noise.

An analysis for the fidelity issue's pair-trend target, not a method: it reads the
training rows in the clear. For each seed's split that ``benchmarks/fidelity.py``
wrote (``OUT/data/seed-K/train.csv`` and ``holdout.csv``), it scores against the
holdout, as the benchmark does:

- ``real train``: the training rows themselves, the ceiling of any generator;
- ``exact independent``: the training rows with every column shuffled on its own,
  the ceiling of independent marginals (dependence removed, marginals exact);
- ``independent, public bins``: independent draws from the exact (noise-free) one-way
  histograms in the schema's bins, i.e. DP marginals without noise: what the binning
  itself costs;
- ``raked, public bins``: independent draws raked (IPF) to the exact one-way and
  two-way histograms of the sweep's ``measure-pairs`` and ``measure-pair-bins``,
  i.e. fedsynth's measurement and raking without noise and without a generator.

The gap between the last two rows and ``real train`` is what the binning leaves out;
pair trends at ε=1 cannot exceed the raked row by more than the generator adds.

    python benchmarks/fidelity_ceiling.py [--only hi|medexp] [--pairs "*:*"] [--pair-bins 8]

``--pairs`` and ``--pair-bins`` replace the sweep's settings for the raked row: how far
would measuring other pairs, or finer cells, go if there were no noise at all?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.core.config import RunConfig
from fedsynth.marginals.bins import count, count_pairs, pair_layout, parse_pairs, schema_bins
from fedsynth.marginals.calibration import OVERSAMPLE, rake
from fedsynth.marginals.estimate import Marginals
from fedsynth.metrics.fidelity import column_shapes, pair_trends
from fedsynth.tabular.schema import Schema, load_schema
from fedsynth.tabular.table import validate_frame

SWEEPS = {"hi": "outputs/fidelity-hi", "medexp": "outputs/fidelity-medexp"}


def noise_free(train: pd.DataFrame, schema: Schema, run: RunConfig, seed: int) -> dict[str, pd.DataFrame]:
    """Independent draws from exact one-way histograms, and the same draws raked to exact pairs."""
    layout = schema_bins(schema, run.histogram_bins)
    pairs = pair_layout(layout, parse_pairs(run.measure_pairs, schema), run.measure_pair_bins)
    one_way = count(train, layout)
    independent = Marginals.from_noisy_counts(layout, one_way, 0.0)
    out = {"independent, public bins": independent.sample_independent(len(train), seed=seed)}
    if pairs:
        marginals = Marginals.from_noisy_counts(
            layout, one_way, 0.0, pairs, count_pairs(train, pairs), run.measure_pair_bins
        )
        candidates = marginals.sample_independent(OVERSAMPLE * len(train), seed=seed)
        out["raked, public bins"], _ = rake(candidates, marginals, len(train), np.random.default_rng(seed))
    return out


def report(name: str, out: Path, overrides: dict[str, object]) -> None:
    settings = json.loads((out / "sweep.json").read_text())["settings"]
    schema = load_schema(settings["schema"])
    run = RunConfig.from_mapping({**settings["run"], **overrides})
    scores: dict[str, list[tuple[float, float]]] = {}
    for split in sorted((out / "data").glob("seed-*")):
        seed = int(split.name.split("-")[1])
        train = validate_frame(pd.read_csv(split / "train.csv", dtype=str, keep_default_na=False), schema)
        holdout = validate_frame(pd.read_csv(split / "holdout.csv", dtype=str, keep_default_na=False), schema)
        rng = np.random.default_rng(seed)
        tables = {
            "real train": train,
            "exact independent": pd.DataFrame({c: rng.permutation(train[c].to_numpy()) for c in train.columns}),
            **noise_free(train, schema, run, seed),
        }
        for label, table in tables.items():
            shapes = column_shapes(holdout, table, schema)["score"]
            trends = pair_trends(holdout, table, schema)["score"]
            scores.setdefault(label, []).append((shapes, trends))
    seeds = len(next(iter(scores.values())))
    print(f"\n== {name}: noise-free ceilings against the holdout, mean over {seeds} seeds ==")
    print(f"   (pairs: {run.measure_pairs or 'none'}, {run.measure_pair_bins} bins per numeric column in pairs)")
    for label, values in scores.items():
        shapes, trends = np.mean(values, axis=0)
        print(f"{label:<28} column_shapes {shapes:.3f}  pair_trends {trends:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SWEEPS))
    parser.add_argument("--pairs", help="measure-pairs for the raked row (default: the sweep's)")
    parser.add_argument("--pair-bins", type=int, help="measure-pair-bins for the raked row (default: the sweep's)")
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    if args.pairs is not None:
        overrides["measure-pairs"] = args.pairs
    if args.pair_bins is not None:
        overrides["measure-pair-bins"] = args.pair_bins
    for name, out in SWEEPS.items():
        if args.only and name != args.only:
            continue
        if not (Path(out) / "sweep.json").is_file():
            raise SystemExit(f"{out}/sweep.json not found: run python benchmarks/fidelity.py first")
        report(name, Path(out), overrides)


if __name__ == "__main__":
    main()
