"""A reversible codec between table rows and the networks' vector space.

Built from the public schema alone: numeric columns are scaled from their
declared bounds to [-1, 1] (optionally on a log scale the schema declares),
discrete columns become one-hot blocks in the schema's category order. No
statistic of the private data is used, so building the codec costs no privacy.
Decoding clips to the bounds, rounds integers and picks a declared category, so
every decoded value lies inside the schema's domain.

A ``nullable`` column adds a two-way block (present, missing) after its value: a
missing cell encodes as value 0 (numeric) or an all-zero one-hot (discrete) with
the block at (0, 1), and decodes to NaN wherever the block says missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.tabular.schema import Column, Schema


def warp(col: Column, values: np.ndarray) -> np.ndarray:
    """A numeric column's values on the scale the schema declares (``log``: log1p above ``min``)."""
    if col.transform == "log":
        return np.log1p(values - col.min)
    return values


def unwarp(col: Column, values: np.ndarray) -> np.ndarray:
    """Inverse of ``warp``."""
    if col.transform == "log":
        return np.expm1(values) + col.min
    return values


MISSING_WIDTH = 2  # the (present, missing) block of a nullable column


@dataclass(frozen=True)
class Span:
    """Where one column lives in the encoded vector: its value, then (if nullable) its missing block."""

    column: Column
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width

    @property
    def value_stop(self) -> int:
        """End of the value part (1 numeric slot, or the one-hot categories)."""
        return self.stop - MISSING_WIDTH if self.column.nullable else self.stop

    @property
    def missing_block(self) -> tuple[int, int] | None:
        """(start, stop) of the (present, missing) block, or None for a column that is never missing."""
        return (self.value_stop, self.stop) if self.column.nullable else None

    @property
    def is_numeric(self) -> bool:
        return self.column.is_numeric


@dataclass(frozen=True)
class Block:
    """A softmax block of the encoded row: a column's categories, or a nullable column's (present, missing)."""

    column_index: int
    start: int
    stop: int
    is_missing: bool


class TableCodec:
    """Encode a validated table to float32 rows and decode network output back."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        spans: list[Span] = []
        start = 0
        for col in schema.columns:
            width = (1 if col.is_numeric else len(col.categories)) + (MISSING_WIDTH if col.nullable else 0)
            spans.append(Span(col, start, width))
            start += width
        self.spans: tuple[Span, ...] = tuple(spans)
        self.dim = start

    @property
    def numeric_positions(self) -> list[int]:
        """Where each numeric column's scaled value sits in the encoded row."""
        return [s.start for s in self.spans if s.is_numeric]

    @property
    def blocks(self) -> list[Block]:
        """Every softmax block in encoded order: categories, and the missing blocks of nullable columns."""
        out = []
        for index, span in enumerate(self.spans):
            if not span.is_numeric:
                out.append(Block(index, span.start, span.value_stop, is_missing=False))
            if span.missing_block is not None:
                out.append(Block(index, *span.missing_block, is_missing=True))
        return out

    # Numeric scaling ---------------------------------------------------------
    def _warped_bounds(self, col: Column) -> tuple[float, float]:
        lo, hi = warp(col, np.array([col.min, col.max], dtype=float))
        return float(lo), float(hi)

    # Public API --------------------------------------------------------------
    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows of a table validated against the schema -> float32 matrix [n, dim]."""
        out = np.zeros((len(frame), self.dim), dtype=np.float32)
        for span in self.spans:
            col = span.column
            missing = frame[col.name].isna().to_numpy() if col.nullable else np.zeros(len(frame), dtype=bool)
            present = np.flatnonzero(~missing)
            if span.is_numeric:
                lo, hi = self._warped_bounds(col)
                warped = warp(col, frame[col.name].to_numpy(dtype=float)[present])
                out[present, span.start] = 2.0 * (warped - lo) / (hi - lo) - 1.0
            else:
                index = {c: i for i, c in enumerate(col.categories)}
                codes = frame[col.name].iloc[present].map(index).to_numpy(dtype=np.int64)
                out[present, span.start + codes] = 1.0
            if span.missing_block is not None:
                out[:, span.value_stop] = ~missing
                out[:, span.value_stop + 1] = missing
        return out

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """Network output [n, dim] -> a table whose every value lies in the schema domain."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected a matrix with {self.dim} columns, got shape {matrix.shape}")
        columns: dict[str, object] = {}
        for span in self.spans:
            col = span.column
            block = matrix[:, span.start : span.value_stop]
            if span.is_numeric:
                lo, hi = self._warped_bounds(col)
                scaled = np.clip(np.nan_to_num(block[:, 0], nan=0.0), -1.0, 1.0)
                values: np.ndarray = np.clip(unwarp(col, lo + (scaled + 1.0) * (hi - lo) / 2.0), col.min, col.max)
                if col.type == "integer":
                    values = np.round(values)
            else:
                codes = np.argmax(np.nan_to_num(block, nan=-np.inf), axis=1)
                values = np.asarray(col.categories, dtype=object)[codes]
            missing = None
            if span.missing_block is not None:
                flags = np.nan_to_num(matrix[:, span.value_stop : span.stop], nan=-np.inf)
                missing = np.argmax(flags, axis=1) == 1
            columns[col.name] = column_values(col, values, missing)
        return pd.DataFrame(columns, columns=self.schema.names)


def column_values(col: Column, values: np.ndarray, missing: np.ndarray | None = None) -> pd.Series | np.ndarray:
    """Decoded values in the column's written type: int64 integers, or with missing cells NaN
    (an integer column then becomes pandas' nullable ``Int64``, so that whole numbers stay whole)."""
    if missing is None or not missing.any():
        return np.asarray(values).astype(np.int64) if col.type == "integer" else values
    if col.type == "integer":
        return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), mask=np.asarray(missing))
    out = np.asarray(values, dtype=object if not col.is_numeric else float).copy()
    out[missing] = np.nan
    return out
