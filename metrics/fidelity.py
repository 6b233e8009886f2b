"""Fidelity of marginals and pairwise dependence: column shapes and pair trends.

Definitions follow SDMetrics (DataCebo, "SDMetrics: single-table quality report")
and their use in Zhang et al., "Mixed-Type Tabular Data Synthesis with Score-based
Diffusion in Latent Space" (TabSyn, ICLR 2024):

- column shape of a numeric column: KS complement, 1 - D, where D is the two-sample
  Kolmogorov-Smirnov statistic (the largest gap between the two empirical CDFs);
- column shape of a discrete column: TV complement, 1 - TV, where TV = ½ Σ |p - q|
  is the total variation distance between the category frequencies;
- pair trend of two numeric columns: correlation similarity, 1 - |r_real - r_syn| / 2
  with Pearson's r;
- pair trend of two discrete columns: contingency similarity, 1 - TV between the two
  normalised joint contingency tables;
- pair trend of a numeric and a discrete column: the numeric column is cut into 10
  quantile bins computed on the real data, then contingency similarity.

All scores lie in [0, 1], 1 meaning identical. A constant column never yields NaN:
its Pearson correlation with anything is taken as 0, so two constant columns (or a
constant column against itself) score 1.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from fedsynth.tabular.schema import Schema

N_QUANTILE_BINS = 10


def ks_complement(real: np.ndarray, synthetic: np.ndarray) -> float:
    """1 - the two-sample Kolmogorov-Smirnov statistic."""
    statistic = ks_2samp(np.asarray(real, dtype=float), np.asarray(synthetic, dtype=float), method="asymp").statistic
    return 1.0 - float(statistic)


def tv_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """1 - the total variation distance between the value frequencies of two discrete columns."""
    p, q = real.value_counts(normalize=True).align(synthetic.value_counts(normalize=True), fill_value=0.0)
    return 1.0 - 0.5 * float(np.abs(p - q).sum())


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, taken as 0 when either column is constant (it has no linear association)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc)))
    return float(np.clip(r, -1.0, 1.0))


def correlation_similarity(real_r: float, synthetic_r: float) -> float:
    """1 - |r_real - r_syn| / 2 for two correlation coefficients."""
    return 1.0 - abs(real_r - synthetic_r) / 2.0


def contingency_similarity(real: pd.DataFrame, synthetic: pd.DataFrame) -> float:
    """1 - the total variation distance between the joint frequencies of two discrete columns."""
    p = real.value_counts(normalize=True)
    q = synthetic.value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return 1.0 - 0.5 * float(np.abs(p - q).sum())


def quantile_bins(real: np.ndarray, values: np.ndarray, n_bins: int = N_QUANTILE_BINS) -> np.ndarray:
    """Bin index of each of ``values`` for ``n_bins`` quantile bins of ``real`` (tied edges merge)."""
    inner = np.unique(np.quantile(np.asarray(real, dtype=float), np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(inner, np.asarray(values, dtype=float), side="right")


def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Per-column KS complement (numeric) or TV complement (discrete), and their mean as ``score``."""
    columns: dict[str, dict[str, Any]] = {}
    for col in schema.columns:
        if col.is_numeric:
            score = ks_complement(real[col.name].to_numpy(), synthetic[col.name].to_numpy())
            columns[col.name] = {"metric": "ks_complement", "score": score}
        else:
            columns[col.name] = {"metric": "tv_complement", "score": tv_complement(real[col.name], synthetic[col.name])}
    return {"score": float(np.mean([c["score"] for c in columns.values()])), "columns": columns}


def _pair_trend(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, a: str, b: str) -> dict[str, Any]:
    col_a, col_b = schema.column(a), schema.column(b)
    if col_a.is_numeric and col_b.is_numeric:
        r_real = pearson(real[a].to_numpy(), real[b].to_numpy())
        r_syn = pearson(synthetic[a].to_numpy(), synthetic[b].to_numpy())
        return {"metric": "correlation_similarity", "score": correlation_similarity(r_real, r_syn),
                "real": r_real, "synthetic": r_syn}  # fmt: skip
    real_pair = real[[a, b]].copy()
    syn_pair = synthetic[[a, b]].copy()
    for col in (col_a, col_b):
        if col.is_numeric:  # discretise on the real data's quantiles
            real_values = real[col.name].to_numpy()
            real_pair[col.name] = quantile_bins(real_values, real_values)
            syn_pair[col.name] = quantile_bins(real_values, synthetic[col.name].to_numpy())
    return {"metric": "contingency_similarity", "score": contingency_similarity(real_pair, syn_pair)}


def pair_trends(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Similarity of every column pair (keys ``"a|b"``) and their mean as ``score`` (None for one column)."""
    pairs = {f"{a}|{b}": _pair_trend(real, synthetic, schema, a, b) for a, b in combinations(schema.names, 2)}
    score = float(np.mean([p["score"] for p in pairs.values()])) if pairs else None
    return {"score": score, "pairs": pairs}
