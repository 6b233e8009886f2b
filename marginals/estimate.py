"""What the coordinator builds from the sites' noisy histograms (post-processing only: free).

A site's DP row count from its own one-way totals; the federation-wide one-way marginals pooled
from every site's noisy counts; two-way marginals made consistent with them; and ``Marginals``,
which holds them all and samples independent columns (the baseline) or serves calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.marginals.bins import (
    DEFAULT_BINS,
    DEFAULT_PAIR_BINS,
    PAIR_PREFIX,
    ColumnBins,
    PairBins,
    fine_to_coarse,
    pair_layout,
    parse_pairs,
    schema_bins,
)
from fedsynth.marginals.cliques import Clique, Target, model_layout
from fedsynth.tabular.codec import column_values, unwarp
from fedsynth.tabular.schema import Schema

PAIR_FLOOR = 1e-4  # probability given to a two-way cell whose noisy count is at or below 0


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


def one_way_distributions(
    layout: list[ColumnBins], sums: list[np.ndarray], noise_std: float
) -> tuple[list[np.ndarray], float]:
    """Every column's probability vector from its noisy one-way counts, and the DP row count (their
    median total): numeric bins below twice the noise and categories at or below 0 dropped."""
    total = float(np.median([max(s.sum(), 1.0) for s in sums]))
    probabilities = []
    for spec, counts in zip(layout, sums, strict=True):
        # A numeric bin under twice the noise is most likely empty (long tails have many).
        # A category is a value the schema declares: dropping a rare one loses it for good,
        # while keeping a noisy count above 0 costs at most a small share; so keep it.
        values = counts[: spec.value_size]
        cleaned = np.where(values > (2.0 * noise_std if spec.column.is_numeric else 0.0), values, 0.0)
        if cleaned.sum() <= 0:  # all noise: fall back to uniform rather than invent a mode
            cleaned = np.ones_like(values)
        shares = cleaned / cleaned.sum()
        if spec.missing_bin is not None:
            # The missing rate is the missing count over the DP row count, not over the floored bins
            # (flooring many small numeric bins would inflate it).
            rate = float(np.clip(counts[spec.missing_bin] / total, 0.0, 1.0))
            shares = np.concatenate([shares * (1.0 - rate), [rate]])
        probabilities.append(shares)
    return probabilities, total


@dataclass
class PairMarginal:
    """A federation-wide DP two-way marginal: a joint probability matrix over ``bins``' cells."""

    bins: PairBins
    probabilities: np.ndarray


@dataclass
class Marginals:
    """Federation-wide DP marginals: one probability vector per column, and the measured pairs."""

    layout: list[ColumnBins]
    probabilities: list[np.ndarray]
    total_rows: float
    pairs: list[PairMarginal] = field(default_factory=list)
    pair_bins: int = DEFAULT_PAIR_BINS
    rake_mix: float = 0.0  # share of raking candidates recombined column by column (``rake-mix``)
    cliques: list[Target] = field(default_factory=list)  # adaptively selected 2- to 4-way marginals (coarse bins)
    release_from: str = "generator"  # ``release-from``: a sampling setting, not part of the release
    one_way_counts: list[np.ndarray] = field(default_factory=list)  # the summed noisy one-way counts (estimation)
    one_way_std: float = 0.0  # their noise std per count

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
        probabilities, total = one_way_distributions(layout, sums, noise_std)
        measured = []
        for pair, counts in zip(pairs or [], pair_sums or [], strict=True):
            rows = np.bincount(fine_to_coarse(layout[pair.i], pair.first), probabilities[pair.i], pair.shape[0])
            cols = np.bincount(fine_to_coarse(layout[pair.j], pair.second), probabilities[pair.j], pair.shape[1])
            measured.append(PairMarginal(pair, consistent_pair(counts, rows, cols)))
        counts = [np.asarray(c, dtype=float) for c in sums]
        return cls(layout, probabilities, total, measured, pair_bins, one_way_counts=counts, one_way_std=noise_std)

    def add_one_way_measurement(self, counts: list[np.ndarray], noise_std: float) -> None:
        """Fold a second, independent noisy measurement of every one-way histogram (the same fine bins)
        into the one-way counts: the inverse-variance weighted mean, the GLS estimate of counts measured
        twice, whose noise std is 1/sqrt(1/σ₁² + 1/σ₂²); the one-way marginals are derived again.
        ``measure-pairs`` tables keep the margins they were made consistent with. Post-processing only."""
        if not self.one_way_counts or not self.one_way_std > 0 or not noise_std > 0:
            raise ValueError("a second one-way measurement needs a first one and both noise scales")
        first, second = 1.0 / self.one_way_std**2, 1.0 / noise_std**2
        self.one_way_counts = [(a * first + np.asarray(b, dtype=float) * second) / (first + second)
                               for a, b in zip(self.one_way_counts, counts, strict=True)]  # fmt: skip
        self.one_way_std = float((first + second) ** -0.5)
        self.probabilities, self.total_rows = one_way_distributions(self.layout, self.one_way_counts, self.one_way_std)

    def to_state(self) -> dict:
        state: dict[str, Any] = {
            "probabilities": [p.tolist() for p in self.probabilities],
            "total_rows": self.total_rows,
        }
        state["release_from"] = self.release_from
        if self.cliques:
            state["model_bins"] = self.pair_bins
            names = [spec.column.name for spec in self.layout]
            state["cliques"] = [
                {"columns": [names[i] for i in t.clique.columns], "probabilities": t.probabilities.tolist(),
                 "counts": None if t.counts is None else t.counts.tolist(), "noise_std": t.noise_std}
                for t in self.cliques
            ]  # fmt: skip
        if self.one_way_counts:
            state["one_way_counts"] = [c.tolist() for c in self.one_way_counts]
            state["one_way_std"] = self.one_way_std
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
        cliques = []
        if state.get("cliques"):
            pair_bins = int(state["model_bins"])
            coarse = model_layout(layout, pair_bins)
            for entry in state["cliques"]:
                columns = tuple(schema.names.index(name) for name in entry["columns"])
                clique = Clique(columns, tuple(coarse[i].size for i in columns))
                counts = entry.get("counts")
                cliques.append(Target(clique, np.asarray(entry["probabilities"], dtype=float),
                                      None if counts is None else np.asarray(counts, dtype=float),
                                      float(entry.get("noise_std", 0.0))))  # fmt: skip
        release_from = str(state.get("release_from", "generator"))
        counts = [np.asarray(c, dtype=float) for c in state.get("one_way_counts", [])]
        return cls(layout, probabilities, float(state["total_rows"]), pairs, pair_bins, rake_mix, cliques, release_from,
                   counts, float(state.get("one_way_std", 0.0)))  # fmt: skip

    # Uses (post-processing) ------------------------------------------------------
    def missing_rate(self, index: int) -> float:
        """The DP share of missing cells in column ``index`` (0 for a column that is never missing)."""
        spec = self.layout[index]
        return float(self.probabilities[index][spec.missing_bin]) if spec.missing_bin is not None else 0.0

    def value_probabilities(self, index: int) -> np.ndarray:
        """Column ``index``'s marginal over its present values (the missing bin left out, renormalised)."""
        p = self.probabilities[index][: self.layout[index].value_size]
        return p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))

    def sample_column(self, index: int, n: int, rng: np.random.Generator) -> np.ndarray | pd.Series:
        """Independent draws from one column's marginal, inside the schema's domain (NaN where missing)."""
        spec, p = self.layout[index], self.probabilities[index]
        col = spec.column
        picks = rng.choice(len(p), size=n, p=p)
        missing = picks == spec.missing_bin if spec.missing_bin is not None else None
        picks = np.minimum(picks, spec.value_size - 1)  # a missing draw's value is discarded below
        if not col.is_numeric:
            return column_values(col, np.asarray(col.categories, dtype=object)[picks], missing)
        values = np.full(n, float(col.min))
        interval = picks > 0
        lo, hi = spec.edges[picks[interval] - 1], spec.edges[picks[interval]]
        values[interval] = unwarp(col, rng.uniform(lo, hi))
        values = np.clip(values, col.min, col.max)
        return column_values(col, np.round(values) if col.type == "integer" else values, missing)

    def sample_independent(self, n: int, seed: int = 0) -> pd.DataFrame:
        """The DP independent-marginals baseline: every column drawn on its own."""
        rng = np.random.default_rng(seed)
        data = {spec.column.name: self.sample_column(i, n, rng) for i, spec in enumerate(self.layout)}
        return pd.DataFrame(data)

    def quantile_map(self, index: int, values: np.ndarray) -> np.ndarray:
        """Move numeric values onto the DP marginal, keeping their order (rank-preserving); NaN stays NaN.

        The present values follow the marginal of the present values (``value_probabilities``).
        """
        values = np.asarray(values, dtype=float)
        missing = np.isnan(values)
        if missing.any():
            out = values.copy()
            out[~missing] = self.quantile_map(index, values[~missing])
            return out
        spec, p = self.layout[index], self.value_probabilities(index)
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
