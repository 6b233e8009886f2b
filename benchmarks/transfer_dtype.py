"""What float16 transfer does to the synthetic table: the default run with float32 and with float16 updates.

Runs ``fedsynth sweep`` twice (``benchmarks/transfer/hi-float32.yaml`` and
``hi-float16.yaml``: HI split into its 4 regions, ε=1 per site, the default
configuration otherwise, 3 seeds, a 20% holdout no run trained on) and prints,
per transfer type, the mean ± std over seeds of the fidelity metrics, the
differences float16 − float32, and the bytes one update travels in (the
parameters × 4 or × 2). Resumable, as the sweeps are.

    python benchmarks/transfer_dtype.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from fedsynth.core.config import RunConfig
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.datasets import DEFAULT_DATA, resolve_schema_path
from fedsynth.tabular.schema import load_schema

HERE = Path(__file__).resolve().parent / "transfer"
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
METRICS = ("column_shapes", "pair_trends", "tstr", "coverage", "detection_auc", "run_seconds")


def parameter_count() -> int:
    codec = TableCodec(load_schema(resolve_schema_path(DEFAULT_DATA, "")))
    generator, discriminator = build_gan(codec, GanShape.for_run(RunConfig(), codec.dim))
    return sum(p.numel() for net in (generator, discriminator) for p in net.parameters())


def main() -> None:
    means = {}
    for dtype in ("float32", "float16"):
        subprocess.run([FEDSYNTH, "sweep", "--config", str(HERE / f"hi-{dtype}.yaml")], check=False)
        results = pd.read_csv(Path(f"outputs/transfer-hi-{dtype}") / "results.csv")
        results = results[results["error"].isna()] if "error" in results else results
        means[dtype] = results[list(METRICS)].mean()
        stds = results[list(METRICS)].std()
        cells = "  ".join(f"{m} {means[dtype][m]:.3f}±{stds[m]:.3f}" for m in METRICS)
        print(f"{dtype}: {len(results)} seeds  {cells}")
    diff = means["float16"] - means["float32"]
    print("float16 - float32: " + "  ".join(f"{m} {diff[m]:+.3f}" for m in METRICS))
    params = parameter_count()
    print(f"update size: {params:,} parameters; float32 {4 * params:,} B, float16 {2 * params:,} B (x0.50)")


if __name__ == "__main__":
    main()
