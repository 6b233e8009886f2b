"""What each part of the fidelity engine adds, at ε = 1, 4 and 10 per site (HI, 4 region sites).

Variants (``benchmarks/fidelity/engine/hi-*.yaml``), each a ``fedsynth sweep`` on the same splits:

- ``default``: adaptive selection of 2-, 3- and small 4-way marginals, the release sampled from an ``mbi``
  graphical model (and the DP independent-marginals baseline);
- ``generator``: the same measurements, but the released rows are the GAN's, calibrated and raked to
  them (``release-from=generator``): what the GAN adds over the marginal model;
- ``no-selection``: ``select-rounds=0``: the model of the one-way histograms alone: what selection adds;
- ``previous``: the engine before it (GAN rows calibrated to one-way histograms, half of ε measured).

    python benchmarks/engine_ablation.py [--only default,generator]

Resumable (the sweeps skip finished cells). Prints one table: variant × ε, the sweep's metrics.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent / "fidelity" / "engine"
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
VARIANTS = ("default", "generator", "no-selection", "previous")
SHOWN = ("column_shapes", "pair_trends", "tstr", "coverage", "run_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    rows = []
    for variant in [v.strip() for v in args.only.split(",") if v.strip()]:
        config = HERE / f"hi-{variant}.yaml"
        if not args.report_only:
            subprocess.run([FEDSYNTH, "sweep", "--config", str(config)], check=False)
        results = Path(f"outputs/engine-hi-{variant}") / "results.csv"
        if results.is_file():
            frame = pd.read_csv(results)
            frame["variant"] = [variant if m == "fedsynth" else "DP independent marginals" for m in frame["method"]]
            rows.append(frame)
    if not rows:
        print("no results yet")
        return
    table = pd.concat(rows).groupby(["variant", "epsilon"])[list(SHOWN)].mean().round(4)
    print(table.to_string())


if __name__ == "__main__":
    main()
