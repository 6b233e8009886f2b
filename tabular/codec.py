"""A reversible codec between table rows and the networks' vector space.

Built from the public schema alone: numeric columns are scaled from their
declared bounds to [-1, 1] (optionally on a log scale the schema declares),
discrete columns become one-hot blocks in the schema's category order. No
statistic of the private data is used, so building the codec costs no privacy.
Decoding clips to the bounds, rounds integers and picks a declared category, so
every decoded value lies inside the schema's domain.
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


@dataclass(frozen=True)
class Span:
    """Where one column lives in the encoded vector."""

    column: Column
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width

    @property
    def is_numeric(self) -> bool:
        return self.column.is_numeric


class TableCodec:
    """Encode a validated table to float32 rows and decode network output back."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        spans: list[Span] = []
        start = 0
        for col in schema.columns:
            width = 1 if col.is_numeric else len(col.categories)
            spans.append(Span(col, start, width))
            start += width
        self.spans: tuple[Span, ...] = tuple(spans)
        self.dim = start

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
            if span.is_numeric:
                lo, hi = self._warped_bounds(col)
                warped = warp(col, frame[col.name].to_numpy(dtype=float))
                out[:, span.start] = 2.0 * (warped - lo) / (hi - lo) - 1.0
            else:
                index = {c: i for i, c in enumerate(col.categories)}
                codes = frame[col.name].map(index).to_numpy(dtype=np.int64)
                out[np.arange(len(frame)), span.start + codes] = 1.0
        return out

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """Network output [n, dim] -> a table whose every value lies in the schema domain."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected a matrix with {self.dim} columns, got shape {matrix.shape}")
        columns: dict[str, object] = {}
        for span in self.spans:
            col = span.column
            block = matrix[:, span.start : span.stop]
            if span.is_numeric:
                lo, hi = self._warped_bounds(col)
                scaled = np.clip(np.nan_to_num(block[:, 0], nan=0.0), -1.0, 1.0)
                values = unwarp(col, lo + (scaled + 1.0) * (hi - lo) / 2.0)
                values = np.clip(values, col.min, col.max)
                if col.type == "integer":
                    columns[col.name] = np.round(values).astype(np.int64)
                else:
                    columns[col.name] = values
            else:
                codes = np.argmax(np.nan_to_num(block, nan=-np.inf), axis=1)
                columns[col.name] = np.asarray(col.categories, dtype=object)[codes]
        return pd.DataFrame(columns, columns=self.schema.names)
