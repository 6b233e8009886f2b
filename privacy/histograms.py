"""DP one-way histograms: what each site measures, and what the server builds from them.

Each site counts its rows in fixed bins that come from the public schema alone
(categories; for numerics a point bin at the lower bound, which holds the many
exact zeros of columns such as hours or income, then equal-width bins on the
column's declared scale), adds Gaussian noise, and releases the counts. One row
adds 1 to exactly one bin of every column, so the L2 sensitivity of the whole
release is sqrt(number of columns); with noise standard deviation
``noise_multiplier * sqrt(columns)`` the release is one Gaussian mechanism with
that noise multiplier, charged to the site's Opacus accountant as a history
entry ``(noise_multiplier, 1.0, 1)``.

The server sums the sites' noisy counts into federation-wide marginals. Every
use of them is post-processing: sampling independent columns (the baseline),
and calibrating the generator's output to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tabular.codec import unwarp, warp
from tabular.schema import Column, Schema

DEFAULT_BINS = 32


@dataclass(frozen=True)
class ColumnBins:
    """The public bins of one column; numeric edges are on the codec's warped scale."""

    column: Column
    edges: np.ndarray  # numeric: edges of the interval bins after the point bin at ``min``

    @property
    def size(self) -> int:
        return len(self.column.categories) if not self.column.is_numeric else 1 + len(self.edges) - 1


def column_bins(col: Column, bins: int = DEFAULT_BINS) -> ColumnBins:
    """Public bins for ``col``: categories, or a point bin at ``min`` plus interval bins."""
    if not col.is_numeric:
        return ColumnBins(col, np.array([]))
    lo, hi = warp(col, np.array([col.min, col.max], dtype=float))
    if col.type == "integer" and col.max - col.min <= bins:
        # ``min`` has the point bin; then one bin per whole value above it, with edges
        # half-way between values (on the raw scale, then warped).
        raw = np.arange(col.min + 0.5, col.max, 1.0)
        edges = np.concatenate([warp(col, raw), [hi]])
    else:
        edges = np.linspace(lo, hi, bins + 1)
    return ColumnBins(col, edges)


def schema_bins(schema: Schema, bins: int = DEFAULT_BINS) -> list[ColumnBins]:
    return [column_bins(col, bins) for col in schema.columns]


def count(frame: pd.DataFrame, layout: list[ColumnBins]) -> list[np.ndarray]:
    """Exact counts per bin for every column (private: never released as such)."""
    out = []
    for spec in layout:
        col = spec.column
        if not col.is_numeric:
            index = {c: i for i, c in enumerate(col.categories)}
            codes = frame[col.name].map(index).to_numpy(dtype=np.int64)
            out.append(np.bincount(codes, minlength=spec.size).astype(float))
            continue
        values = frame[col.name].to_numpy(dtype=float)
        at_min = values <= col.min
        warped = warp(col, values[~at_min])
        # Interval bins are right-closed, (e_i, e_i+1], so min itself only lands in the point bin.
        idx = np.clip(np.searchsorted(spec.edges, warped, side="left") - 1, 0, len(spec.edges) - 2)
        interval = np.bincount(idx, minlength=len(spec.edges) - 1).astype(float)
        out.append(np.concatenate([[float(at_min.sum())], interval]))
    return out


def release_noise_std(noise_multiplier: float, num_columns: int) -> float:
    """Standard deviation of the noise on each count, for L2 sensitivity sqrt(columns)."""
    return noise_multiplier * math.sqrt(num_columns)


def add_noise(counts: list[np.ndarray], noise_std: float, rng: np.random.Generator) -> list[np.ndarray]:
    return [c + rng.normal(0.0, noise_std, size=c.shape) for c in counts]


@dataclass
class Marginals:
    """Federation-wide DP marginals: one probability vector per column."""

    layout: list[ColumnBins]
    probabilities: list[np.ndarray]
    total_rows: float

    @classmethod
    def from_noisy_counts(cls, layout: list[ColumnBins], sums: list[np.ndarray], noise_std: float) -> Marginals:
        """Post-process summed noisy counts: drop bins below the noise level, normalise."""
        probabilities = []
        for counts in sums:
            cleaned = np.where(counts > 2.0 * noise_std, counts, 0.0)
            if cleaned.sum() <= 0:  # all noise: fall back to uniform rather than invent a mode
                cleaned = np.ones_like(counts)
            probabilities.append(cleaned / cleaned.sum())
        total = float(np.median([max(s.sum(), 1.0) for s in sums]))
        return cls(layout, probabilities, total)

    def to_state(self) -> dict:
        return {"probabilities": [p.tolist() for p in self.probabilities], "total_rows": self.total_rows}

    @classmethod
    def from_state(cls, schema: Schema, state: dict, bins: int = DEFAULT_BINS) -> Marginals:
        layout = schema_bins(schema, bins)
        probabilities = [np.asarray(p, dtype=float) for p in state["probabilities"]]
        return cls(layout, probabilities, float(state["total_rows"]))

    # Uses (post-processing) ------------------------------------------------------
    def sample_column(self, index: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """Independent draws from one column's marginal, inside the schema's domain."""
        spec, p = self.layout[index], self.probabilities[index]
        col = spec.column
        picks = rng.choice(len(p), size=n, p=p)
        if not col.is_numeric:
            return np.asarray(col.categories, dtype=object)[picks]
        values = np.full(n, float(col.min))
        interval = picks > 0
        lo, hi = spec.edges[picks[interval] - 1], spec.edges[picks[interval]]
        values[interval] = unwarp(col, rng.uniform(lo, hi))
        values = np.clip(values, col.min, col.max)
        return np.round(values) if col.type == "integer" else values

    def sample_independent(self, n: int, seed: int = 0) -> pd.DataFrame:
        """The DP independent-marginals baseline: every column drawn on its own."""
        rng = np.random.default_rng(seed)
        data = {spec.column.name: self.sample_column(i, n, rng) for i, spec in enumerate(self.layout)}
        frame = pd.DataFrame(data)
        for spec in self.layout:
            if spec.column.type == "integer":
                frame[spec.column.name] = frame[spec.column.name].astype(np.int64)
        return frame

    def quantile_map(self, index: int, values: np.ndarray) -> np.ndarray:
        """Move numeric values onto the DP marginal, keeping their order (rank-preserving)."""
        spec, p = self.layout[index], self.probabilities[index]
        col = spec.column
        n = len(values)
        if n == 0:
            return values
        ranks = (np.argsort(np.argsort(values, kind="stable"), kind="stable") + 0.5) / n
        cdf = np.cumsum(p)
        out = np.full(n, float(col.min))
        interval = ranks > p[0]
        # Inverse of the piecewise-linear CDF over the interval bins.
        knots_p = np.concatenate([[p[0]], cdf[1:]])
        knots_x = spec.edges
        warped = np.interp(ranks[interval], knots_p, knots_x)
        out[interval] = unwarp(col, warped)
        out = np.clip(out, col.min, col.max)
        return np.round(out) if col.type == "integer" else out
