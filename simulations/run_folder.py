"""A simulation's output folder: refuse one that would lose earlier results, prepare it, keep real rows apart.

Shared by the command line (``fedsynth simulate``) and the Python API (``fedsynth.simulate``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fedsynth.core.errors import UserError

if TYPE_CHECKING:  # the setup imports torch and Flower; a refusal of the output folder must stay quick
    from fedsynth.simulations.setup import SimulationPlan

# What a run writes into its output folder; overwrite removes exactly these.
RUN_OUTPUTS = (
    "synthetic.csv",
    "synthetic.parquet",
    "report.json",
    "report.md",
    "report.html",
    "config.json",
    "checkpoints",
    "plots",
    "real",
)
REAL_FOLDER = "real"  # real rows (holdout split, an API caller's DataFrame): never published with the table


def check_out(out: Path, overwrite: bool) -> Path:
    """Refuse an output folder that would lose earlier results, creating nothing."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output folder is not empty; pass --overwrite or choose another --out")
    return out


def make_out(out: Path, overwrite: bool = False) -> Path:
    """Create the output folder (clearing an earlier run's outputs on overwrite) and prove it is writable."""
    if overwrite:
        for name in RUN_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fedsynth-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: output folder is not writable ({exc.strerror})") from None
    return out


def real_folder(out: Path) -> Path:
    """``OUT/real/``, created with a note that it holds real rows."""
    real = out / REAL_FOLDER
    real.mkdir(exist_ok=True)
    (real / "README.txt").write_text(
        "REAL rows, kept here for the run itself and for `fedsynth evaluate`.\n"
        "train.csv: the rows the simulated sites trained on; holdout.csv: rows no site saw;\n"
        "data.parquet: a table passed to fedsynth.simulate as a DataFrame.\n"
        "Never publish this folder with the synthetic table.\n",
        encoding="utf-8",
    )
    return real


def write_real_split(plan: SimulationPlan, out: Path) -> None:
    """With a holdout: the real rows the sites got and the rows held out, for ``fedsynth evaluate``."""
    from fedsynth.tabular.table import write_table

    if plan.held_out is None or len(plan.held_out) == 0:
        return
    real = real_folder(out)
    write_table(plan.training, real / "train.csv")
    write_table(plan.held_out, real / "holdout.csv")
