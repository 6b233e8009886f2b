"""The public bins the DP histograms count rows in, built from the schema alone, and the counting.

Categories get one bin each. A numeric column gets a point bin at its lower bound (which holds the
many exact zeros of columns such as hours or income), then equal-width bins on its declared scale;
an integer column with few values gets one bin per value. A ``nullable`` column gets one more bin,
last, for its missing cells: the missing rate is then one more count of the same release (a row is
still counted once per histogram, so the sensitivity does not change). Two-way histograms of measured pairs
(``measure-pairs``) use coarser bins for numbers, made by merging neighbouring one-way bins, so that
the cells stay above the noise. Nothing here depends on the data: the layout is public.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.core.errors import ConfigError
from fedsynth.tabular.codec import warp
from fedsynth.tabular.schema import Column, Schema

DEFAULT_BINS = 32
DEFAULT_PAIR_BINS = 8
INTEGER_VALUE_BINS = 128  # integer columns with at most this many values get one bin per value
PAIR_PREFIX = "pair:"  # key of a two-way histogram in a site's release: ``pair:A|B``


@dataclass(frozen=True)
class ColumnBins:
    """The public bins of one column; numeric edges are on the codec's warped scale."""

    column: Column
    edges: np.ndarray  # numeric: edges of the interval bins after the point bin at ``min``

    @property
    def value_size(self) -> int:
        """Bins for present values: the categories, or the point bin plus the interval bins."""
        return len(self.column.categories) if not self.column.is_numeric else 1 + len(self.edges) - 1

    @property
    def size(self) -> int:
        """Every bin, the missing bin of a nullable column (last) included."""
        return self.value_size + (1 if self.column.nullable else 0)

    @property
    def missing_bin(self) -> int | None:
        """Index of the bin of missing cells, or None for a column that is never missing."""
        return self.value_size if self.column.nullable else None


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
    """The bin of every row of ``frame`` in ``spec``'s column (0 is the point bin at ``min`` for numerics;
    a missing cell of a nullable column is in ``spec.missing_bin``)."""
    col = spec.column
    missing = frame[col.name].isna().to_numpy() if col.nullable else np.zeros(len(frame), dtype=bool)
    out = np.full(len(frame), spec.missing_bin if spec.missing_bin is not None else 0, dtype=np.int64)
    if not col.is_numeric:
        index = {c: i for i, c in enumerate(col.categories)}
        out[~missing] = frame[col.name][~missing].map(index).to_numpy(dtype=np.int64)
        return out
    values = frame[col.name].to_numpy(dtype=float)[~missing]
    at_min = values <= col.min
    present = np.zeros(len(values), dtype=np.int64)
    warped = warp(col, values[~at_min])
    # Interval bins are right-closed, (e_i, e_i+1], so min itself only lands in the point bin.
    present[~at_min] = 1 + np.clip(np.searchsorted(spec.edges, warped, side="left") - 1, 0, len(spec.edges) - 2)
    out[~missing] = present
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
    """For every bin of ``fine``, the bin of ``coarse`` that holds it (the missing bin maps to the missing bin)."""
    if not fine.column.is_numeric:
        return np.arange(fine.size)
    inside = np.searchsorted(coarse.edges, fine.edges[1:], side="left") - 1
    mapping = np.concatenate([[0], 1 + np.clip(inside, 0, len(coarse.edges) - 2)])
    if coarse.missing_bin is not None:
        mapping = np.concatenate([mapping, [coarse.missing_bin]])
    return mapping


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
