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

Missing cells (``nullable`` columns) count as one more value: below every number for the KS
statistic, one more category for TV and the contingency tables; a correlation uses the rows
where both columns are present. So a missing rate that is off lowers the scores.

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
    """1 - the two-sample Kolmogorov-Smirnov statistic (a missing value counts as −inf)."""
    real, synthetic = (np.nan_to_num(np.asarray(v, dtype=float), nan=-np.inf) for v in (real, synthetic))
    statistic = ks_2samp(real, synthetic, method="asymp").statistic
    return 1.0 - float(statistic)


def tv_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """1 - the total variation distance between the value frequencies of two discrete columns."""
    p = real.value_counts(normalize=True, dropna=False)
    p, q = p.align(synthetic.value_counts(normalize=True, dropna=False), fill_value=0.0)
    return 1.0 - 0.5 * float(np.abs(p - q).sum())


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r over the rows where both are present, taken as 0 when either column is constant
    there (it has no linear association)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if len(x) == 0 or np.ptp(x) == 0 or np.ptp(y) == 0:
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
    p = real.value_counts(normalize=True, dropna=False)
    q = synthetic.value_counts(normalize=True, dropna=False)
    p, q = p.align(q, fill_value=0.0)
    return 1.0 - 0.5 * float(np.abs(p - q).sum())


def quantile_bins(real: np.ndarray, values: np.ndarray, n_bins: int = N_QUANTILE_BINS) -> np.ndarray:
    """Bin index of each of ``values`` for ``n_bins`` quantile bins of ``real`` (tied edges merge); a missing
    value gets bin -1."""
    real = np.asarray(real, dtype=float)
    real = real[~np.isnan(real)]
    inner = np.unique(np.quantile(real, np.linspace(0, 1, n_bins + 1)[1:-1])) if len(real) else np.array([])
    values = np.asarray(values, dtype=float)
    return np.where(np.isnan(values), -1, np.searchsorted(inner, values, side="right"))


def _floats(series: pd.Series) -> np.ndarray:
    """A numeric column as floats, missing cells (NaN or pandas' NA) as NaN."""
    return pd.to_numeric(series).to_numpy(dtype=float, na_value=np.nan)


def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Per-column KS complement (numeric) or TV complement (discrete), and their mean as ``score``."""
    columns: dict[str, dict[str, Any]] = {}
    for col in schema.columns:
        if col.is_numeric:
            score = ks_complement(_floats(real[col.name]), _floats(synthetic[col.name]))
            columns[col.name] = {"metric": "ks_complement", "score": score}
        else:
            columns[col.name] = {"metric": "tv_complement", "score": tv_complement(real[col.name], synthetic[col.name])}
    return {"score": float(np.mean([c["score"] for c in columns.values()])), "columns": columns}


def _pair_trend(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, a: str, b: str) -> dict[str, Any]:
    col_a, col_b = schema.column(a), schema.column(b)
    if col_a.is_numeric and col_b.is_numeric:
        r_real = pearson(_floats(real[a]), _floats(real[b]))
        r_syn = pearson(_floats(synthetic[a]), _floats(synthetic[b]))
        return {"metric": "correlation_similarity", "score": correlation_similarity(r_real, r_syn),
                "real": r_real, "synthetic": r_syn}  # fmt: skip
    real_pair = real[[a, b]].copy()
    syn_pair = synthetic[[a, b]].copy()
    for col in (col_a, col_b):
        if col.is_numeric:  # discretise on the real data's quantiles
            real_values = _floats(real[col.name])
            real_pair[col.name] = quantile_bins(real_values, real_values)
            syn_pair[col.name] = quantile_bins(real_values, _floats(synthetic[col.name]))
    return {"metric": "contingency_similarity", "score": contingency_similarity(real_pair, syn_pair)}


def pair_trends(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Similarity of every column pair (keys ``"a|b"``) and their mean as ``score`` (None for one column)."""
    pairs = {f"{a}|{b}": _pair_trend(real, synthetic, schema, a, b) for a, b in combinations(schema.names, 2)}
    score = float(np.mean([p["score"] for p in pairs.values()])) if pairs else None
    return {"score": score, "pairs": pairs}
