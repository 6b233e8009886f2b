"""DP histograms: what each site measures, and what the server builds from them.

Each site counts its rows in fixed bins that come from the public schema alone
(categories; for numerics a point bin at the lower bound, which holds the many
exact zeros of columns such as hours or income, then equal-width bins on the
column's declared scale), adds Gaussian noise, and releases the counts: a
one-way histogram of every column and, when ``measure-pairs`` asks for them,
two-way histograms of some pairs of columns (numeric columns in coarser bins,
made by merging neighbouring one-way bins, so that the cells stay above the
noise). The release is one Gaussian mechanism on the vector of all counts, the
K one-way histograms multiplied by a public weight w (``measure-one-way-weight``)
and the P two-way ones as they are. One row adds 1 to exactly one cell of every
histogram, so it moves that vector by exactly S = sqrt(K w^2 + P); noise of
standard deviation ``noise_multiplier * S`` on every coordinate makes it a
Gaussian mechanism with that noise multiplier, charged to the site's Opacus
accountant as a history entry ``(noise_multiplier, 1.0, 1)``. Divided back by w,
a one-way count carries noise ``noise_multiplier * S / w`` and a two-way count
``noise_multiplier * S``. Adding pairs therefore costs no extra ε: it spreads
the same budget over more counts; w > 1 keeps more of it on the one-way
histograms, which every column's shape and the raking rest on. Without pairs w
changes nothing (S / w = sqrt(K)).

The server sums the sites' noisy counts into federation-wide marginals. Every
use of them is post-processing: sampling independent columns (the baseline),
calibrating the generator's output to the one-way marginals, and raking it to
the two-way ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord

from fedsynth.core.errors import ConfigError
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.tabular.codec import unwarp, warp
from fedsynth.tabular.schema import Column, Schema

DEFAULT_BINS = 32
DEFAULT_PAIR_BINS = 8
INTEGER_VALUE_BINS = 128  # integer columns with at most this many values get one bin per value
PAIR_FLOOR = 1e-4  # probability given to a two-way cell whose noisy count is at or below 0
PAIR_PREFIX = "pair:"  # key of a two-way histogram in a site's release: ``pair:A|B``


@dataclass(frozen=True)
class ColumnBins:
    """The public bins of one column; numeric edges are on the codec's warped scale."""

    column: Column
    edges: np.ndarray  # numeric: edges of the interval bins after the point bin at ``min``

    @property
    def size(self) -> int:
        return len(self.column.categories) if not self.column.is_numeric else 1 + len(self.edges) - 1


def column_bins(col: Column, bins: int = DEFAULT_BINS) -> ColumnBins:
    """Public bins for ``col``: categories, or a point bin at ``min`` plus interval bins.

    An integer column spanning at most ``max(bins, INTEGER_VALUE_BINS)`` values gets one
    bin per value: integers such as hours worked pile up on round values (40), which an
    interval bin would smear over its neighbours; bins under the noise are dropped later.
    """
    if not col.is_numeric:
        return ColumnBins(col, np.array([]))
    lo, hi = warp(col, np.array([col.min, col.max], dtype=float))
    if col.type == "integer" and col.max - col.min <= max(bins, INTEGER_VALUE_BINS):
        # ``min`` has the point bin; then one bin per whole value above it, with edges
        # half-way between values (on the raw scale, then warped).
        raw = np.arange(col.min + 0.5, col.max, 1.0)
        edges = np.concatenate([warp(col, raw), [hi]])
    else:
        edges = np.linspace(lo, hi, bins + 1)
    return ColumnBins(col, edges)


def schema_bins(schema: Schema, bins: int = DEFAULT_BINS) -> list[ColumnBins]:
    return [column_bins(col, bins) for col in schema.columns]


def bin_index(frame: pd.DataFrame, spec: ColumnBins) -> np.ndarray:
    """The bin of every row of ``frame`` in ``spec``'s column (0 is the point bin at ``min`` for numerics)."""
    col = spec.column
    if not col.is_numeric:
        index = {c: i for i, c in enumerate(col.categories)}
        return frame[col.name].map(index).to_numpy(dtype=np.int64)
    values = frame[col.name].to_numpy(dtype=float)
    at_min = values <= col.min
    out = np.zeros(len(values), dtype=np.int64)
    warped = warp(col, values[~at_min])
    # Interval bins are right-closed, (e_i, e_i+1], so min itself only lands in the point bin.
    out[~at_min] = 1 + np.clip(np.searchsorted(spec.edges, warped, side="left") - 1, 0, len(spec.edges) - 2)
    return out


def count(frame: pd.DataFrame, layout: list[ColumnBins]) -> list[np.ndarray]:
    """Exact counts per bin for every column (private: never released as such)."""
    return [np.bincount(bin_index(frame, spec), minlength=spec.size).astype(float) for spec in layout]


# Two-way histograms ---------------------------------------------------------------------------------
def parse_pairs(spec: str, schema: Schema, key: str = "measure-pairs") -> list[tuple[int, int]]:
    """The column pairs ``spec`` names, as schema indices ``(i, j)`` with ``i < j``, in schema order.

    ``spec`` is a comma-separated list of ``A:B``; ``A:*`` pairs A with every other
    column, ``*:*`` is every pair; "" is none. A mistake is a one-line ``ConfigError``
    naming ``key``.
    """
    names = schema.names
    pairs: set[tuple[int, int]] = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        sides = [side.strip() for side in token.split(":")]
        if len(sides) != 2 or not all(sides):
            raise ConfigError(f"run config: '{key}' entry '{token}' must be COLUMN:COLUMN (or COLUMN:*), got {spec!r}")
        for side in sides:
            if side != "*" and side not in names:
                raise ConfigError(f"run config: '{key}' names '{side}', not a schema column ({', '.join(names)})")
        a, b = sides
        firsts = range(len(names)) if a == "*" else [names.index(a)]
        seconds = range(len(names)) if b == "*" else [names.index(b)]
        if a == b != "*":
            raise ConfigError(f"run config: '{key}' pairs column '{a}' with itself")
        pairs.update((min(i, j), max(i, j)) for i in firsts for j in seconds if i != j)
    return sorted(pairs)


def coarse_bins(spec: ColumnBins, max_bins: int) -> ColumnBins:
    """``spec`` with neighbouring interval bins merged into at most ``max_bins`` (point bin and categories kept).

    The coarse edges are a subset of the fine ones, so every fine bin lies inside one coarse bin.
    """
    if not spec.column.is_numeric:
        return spec
    intervals = len(spec.edges) - 1
    step = max(1, math.ceil(intervals / max_bins))
    picks = list(range(0, intervals + 1, step))
    if picks[-1] != intervals:
        picks.append(intervals)
    return ColumnBins(spec.column, spec.edges[picks])


def fine_to_coarse(fine: ColumnBins, coarse: ColumnBins) -> np.ndarray:
    """For every bin of ``fine``, the bin of ``coarse`` that holds it."""
    if not fine.column.is_numeric:
        return np.arange(fine.size)
    inside = np.searchsorted(coarse.edges, fine.edges[1:], side="left") - 1
    return np.concatenate([[0], 1 + np.clip(inside, 0, len(coarse.edges) - 2)])


@dataclass(frozen=True)
class PairBins:
    """The public cells of one two-way histogram: columns ``first`` x ``second`` (schema indices ``i < j``)."""

    i: int
    j: int
    first: ColumnBins
    second: ColumnBins

    @property
    def shape(self) -> tuple[int, int]:
        return self.first.size, self.second.size

    @property
    def key(self) -> str:
        return f"{PAIR_PREFIX}{self.first.column.name}|{self.second.column.name}"

    @property
    def columns(self) -> list[str]:
        return [self.first.column.name, self.second.column.name]


def pair_layout(layout: list[ColumnBins], pairs: list[tuple[int, int]], max_bins: int) -> list[PairBins]:
    """Two-way cells for ``pairs`` of the one-way ``layout``, numeric columns coarsened to ``max_bins``."""
    return [PairBins(i, j, coarse_bins(layout[i], max_bins), coarse_bins(layout[j], max_bins)) for i, j in pairs]


def count_pairs(frame: pd.DataFrame, pairs: list[PairBins]) -> list[np.ndarray]:
    """Exact two-way counts (private: never released as such); each a ``shape`` matrix."""
    out = []
    for pair in pairs:
        rows, cols = pair.shape
        cell = bin_index(frame, pair.first) * cols + bin_index(frame, pair.second)
        out.append(np.bincount(cell, minlength=rows * cols).astype(float).reshape(rows, cols))
    return out


def one_way_weight(setting: str, one_way: int, two_way: int) -> float:
    """The weight of the one-way histograms in a release of ``one_way`` one-way and ``two_way`` two-way ones.

    ``setting`` is ``measure-one-way-weight``: a number, or "auto" for (two_way / one_way)^(1/3),
    at least 1. Why that: a histogram's error grows with the noise on its counts, which is
    z S / w for a one-way count and z S for a two-way one, S = sqrt(K w^2 + P). Minimising the
    sum of the two, sqrt(K w^2 + P) (1/w + 1), gives K w^3 = P. Many pairs per column (HI,
    all 78 pairs of 13 columns: 1.82) call for a heavier weight; about as many pairs as
    columns (the target with every column) for none.
    """
    if setting != "auto":
        return float(setting)
    if one_way == 0 or two_way == 0:
        return 1.0
    return max(1.0, (two_way / one_way) ** (1.0 / 3.0))


def release_noise_std(
    noise_multiplier: float, one_way: int, two_way: int = 0, weight: float = 1.0
) -> tuple[float, float]:
    """Noise standard deviation on each (one-way, two-way) count of a release.

    One row moves the released vector (``weight`` x each of the ``one_way`` histograms,
    then the ``two_way`` ones) by exactly S = sqrt(one_way x weight^2 + two_way). Noise
    ``noise_multiplier`` x S on every coordinate, divided back by the weight for the
    one-way counts, gives (noise_multiplier x S / weight, noise_multiplier x S).
    """
    sensitivity = math.sqrt(one_way * weight**2 + two_way)
    return noise_multiplier * sensitivity / weight, noise_multiplier * sensitivity


def release_record(layout: list[ColumnBins], pairs: list[PairBins], noisy: list[np.ndarray]) -> ArrayRecord:
    """A site's release as a Flower record: one array per column name, one per ``pair:A|B``."""
    keys = [spec.column.name for spec in layout] + [pair.key for pair in pairs]
    if len(keys) != len(noisy):
        raise ValueError(f"{len(noisy)} histograms for {len(keys)} names")
    return ArrayRecord({key: Array(np.asarray(values, dtype=float)) for key, values in zip(keys, noisy, strict=True)})


def read_release(
    record: ArrayRecord, layout: list[ColumnBins], pairs: list[PairBins]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The one-way and two-way histograms of a site's release; ``ValueError`` names a malformed one."""
    one_way, two_way = [], []
    for key, shape, out in [(s.column.name, (s.size,), one_way) for s in layout] + [
        (p.key, p.shape, two_way) for p in pairs
    ]:
        if key not in record:
            raise ValueError(f"histogram '{key}' is missing")
        values = record[key].numpy()
        if values.shape != shape or not np.all(np.isfinite(values)):
            raise ValueError(f"histogram of '{key}' has the wrong shape or non-finite values")
        out.append(values.astype(float))
    return one_way, two_way


def add_noise(counts: list[np.ndarray], noise_std: float, noise: NoiseSource) -> list[np.ndarray]:
    """Integer counts plus discrete Gaussian noise of scale ``noise_std`` on every count (one draw for all).

    The discrete Gaussian with scale σ on a count that one row moves by 1 is ρ = 1/(2σ²)-zCDP, exactly
    as the continuous Gaussian (Canonne, Kamath, Steinke 2020); over the release's one-way counts (σ =
    z S / w) and two-way counts (σ = z S) one row adds up to K w²/(2 z² S²) + P/(2 z² S²) = 1/(2 z²), the
    RDP curve of a Gaussian mechanism with noise multiplier z, which the site's accountant is charged.
    """
    if not counts:
        return []
    flat = noise.discrete_gaussian(np.concatenate([c.reshape(-1) for c in counts]), noise_std).astype(float)
    out, start = [], 0
    for c in counts:
        out.append(flat[start : start + c.size].reshape(c.shape))
        start += c.size
    return out


def estimate_rows(one_way: list[np.ndarray]) -> float:
    """A site's row count estimated from its noisy one-way histograms (post-processing: free).

    Every one-way histogram sums to the row count; its noisy total carries the noise of all its
    bins, so the totals are averaged with weights 1/bins (inverse variance). At least 1.
    """
    if not one_way:
        raise ValueError("no one-way histograms to estimate the row count from")
    weights = np.array([1.0 / c.size for c in one_way])
    totals = np.array([float(c.sum()) for c in one_way])
    return max(1.0, float((weights * totals).sum() / weights.sum()))


def consistent_pair(counts: np.ndarray, rows: np.ndarray, cols: np.ndarray, floor: float = PAIR_FLOOR) -> np.ndarray:
    """A joint distribution from noisy two-way ``counts`` whose margins are ``rows`` and ``cols``.

    Negative counts are clipped to 0, every cell where both margins are positive gets
    at least ``floor`` (so that the noise never rules a combination out), and
    iterative proportional fitting matches the margins (the one-way marginals, which
    are less noisy than sums of many two-way cells). Post-processing only.
    """
    table = np.clip(counts, 0.0, None)
    table = table / table.sum() if table.sum() > 0 else np.ones_like(table) / table.size
    table = np.where(np.outer(rows > 0, cols > 0), np.maximum(table, floor), 0.0)
    for _ in range(200):
        have = table.sum(axis=1)
        table *= np.divide(rows, have, out=np.zeros_like(rows), where=have > 0)[:, None]
        have = table.sum(axis=0)
        table *= np.divide(cols, have, out=np.zeros_like(cols), where=have > 0)[None, :]
        if np.abs(table.sum(axis=1) - rows).max() < 1e-10:
            break
    return table / table.sum()


def pooled_one_way(
    layout: list[ColumnBins],
    sums: list[np.ndarray],
    pairs: list[PairBins],
    pair_sums: list[np.ndarray],
    pair_variance_ratio: float = 1.0,
) -> list[np.ndarray]:
    """One-way counts sharpened by the two-way tables' margins (generalised least squares).

    A margin of a two-way table is a further measurement of its column's coarse one-way
    counts, with the variance of the k cells it sums (each ``pair_variance_ratio`` times
    a one-way count's variance); the one-way histogram gives the same totals with the
    variance of the n fine bins they sum. The inverse-variance weighted total of each
    coarse bin is spread evenly over its fine bins (the GLS estimate when fine bins are
    equally noisy). Post-processing of DP counts only.
    """
    out = [np.asarray(s, dtype=float).copy() for s in sums]
    for i, spec in enumerate(layout):
        margins = [(pair.first, table.sum(axis=1), table.shape[1]) for pair, table in zip(pairs, pair_sums, strict=True)
                   if pair.i == i]  # fmt: skip
        margins += [(pair.second, table.sum(axis=0), table.shape[0])
                    for pair, table in zip(pairs, pair_sums, strict=True) if pair.j == i]  # fmt: skip
        if not margins:
            continue
        mapping = fine_to_coarse(spec, margins[0][0])  # every pair coarsens a column the same way
        size = margins[0][0].size
        fine_bins = np.bincount(mapping, minlength=size).astype(float)
        direct = np.bincount(mapping, weights=out[i], minlength=size)
        # Variances in units of one one-way count's variance.
        weighted = direct / fine_bins + sum(margin / (cells * pair_variance_ratio) for _, margin, cells in margins)
        precision = 1.0 / fine_bins + sum(1.0 / (cells * pair_variance_ratio) for _, _, cells in margins)
        out[i] = out[i] + ((weighted / precision - direct) / fine_bins)[mapping]
    return out


@dataclass
class PairMarginal:
    """A federation-wide DP two-way marginal: a joint probability matrix over ``bins``' cells."""

    bins: PairBins
    probabilities: np.ndarray


@dataclass
class Marginals:
    """Federation-wide DP marginals: one probability vector per column, and the measured pairs.

    ``diagnostics`` is where post-processing (raking at sampling time) records what it
    did, for the run's report; it holds no private data.
    """

    layout: list[ColumnBins]
    probabilities: list[np.ndarray]
    total_rows: float
    pairs: list[PairMarginal] = field(default_factory=list)
    pair_bins: int = DEFAULT_PAIR_BINS
    rake_mix: float = 0.0  # share of raking candidates recombined column by column (``rake-mix``)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_noisy_counts(
        cls,
        layout: list[ColumnBins],
        sums: list[np.ndarray],
        noise_std: float,
        pairs: list[PairBins] | None = None,
        pair_sums: list[np.ndarray] | None = None,
        pair_bins: int = DEFAULT_PAIR_BINS,
        pair_noise_std: float | None = None,
    ) -> Marginals:
        """Post-process summed noisy counts: sharpen the one-way counts with the two-way margins, drop
        numeric bins below twice the noise level and categories at or below 0, normalise, and make
        every two-way table a distribution consistent with its columns' one-way marginals.

        ``noise_std`` is the noise on a one-way count, ``pair_noise_std`` on a two-way one
        (default: the same)."""
        if pairs:
            ratio = (pair_noise_std / noise_std) ** 2 if pair_noise_std is not None and noise_std > 0 else 1.0
            sums = pooled_one_way(layout, sums, pairs, pair_sums or [], ratio)
        probabilities = []
        for spec, counts in zip(layout, sums, strict=True):
            # A numeric bin under twice the noise is most likely empty (long tails have many).
            # A category is a value the schema declares: dropping a rare one loses it for good,
            # while keeping a noisy count above 0 costs at most a small share; so keep it.
            floor = 2.0 * noise_std if spec.column.is_numeric else 0.0
            cleaned = np.where(counts > floor, counts, 0.0)
            if cleaned.sum() <= 0:  # all noise: fall back to uniform rather than invent a mode
                cleaned = np.ones_like(counts)
            probabilities.append(cleaned / cleaned.sum())
        total = float(np.median([max(s.sum(), 1.0) for s in sums]))
        measured = []
        for pair, counts in zip(pairs or [], pair_sums or [], strict=True):
            rows = np.bincount(fine_to_coarse(layout[pair.i], pair.first), probabilities[pair.i], pair.shape[0])
            cols = np.bincount(fine_to_coarse(layout[pair.j], pair.second), probabilities[pair.j], pair.shape[1])
            measured.append(PairMarginal(pair, consistent_pair(counts, rows, cols)))
        return cls(layout, probabilities, total, measured, pair_bins)

    def to_state(self) -> dict:
        state: dict[str, Any] = {
            "probabilities": [p.tolist() for p in self.probabilities],
            "total_rows": self.total_rows,
        }
        if self.pairs:
            state["pair_bins"] = self.pair_bins
            state["rake_mix"] = self.rake_mix
            state["pairs"] = [
                {"columns": pair.bins.columns, "probabilities": pair.probabilities.tolist()} for pair in self.pairs
            ]
        return state

    @classmethod
    def from_state(cls, schema: Schema, state: dict, bins: int = DEFAULT_BINS) -> Marginals:
        layout = schema_bins(schema, bins)
        probabilities = [np.asarray(p, dtype=float) for p in state["probabilities"]]
        pair_bins = int(state.get("pair_bins", DEFAULT_PAIR_BINS))
        entries = state.get("pairs", [])
        spec = ",".join(":".join(entry["columns"]) for entry in entries)
        layouts = pair_layout(layout, parse_pairs(spec, schema), pair_bins)
        by_key = {p.key: p for p in layouts}
        pairs = []
        for entry in entries:
            pair = by_key[f"{PAIR_PREFIX}{entry['columns'][0]}|{entry['columns'][1]}"]
            pairs.append(PairMarginal(pair, np.asarray(entry["probabilities"], dtype=float).reshape(pair.shape)))
        rake_mix = float(state.get("rake_mix", 0.0))
        return cls(layout, probabilities, float(state["total_rows"]), pairs, pair_bins, rake_mix)

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
