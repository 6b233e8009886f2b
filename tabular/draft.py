"""Draft a schema from a table, for a human to review before it is published.

This is the one place that reads data to describe columns, and it does so in
the clear: the bounds and category lists it writes are private information.
The drafted file says so at the top; a data owner must widen the bounds to
public, generalised values and remove rare categories before the schema is
shared with the federation.
"""

from __future__ import annotations

import math

import pandas as pd

from fedsynth.core.errors import DataError
from fedsynth.tabular.schema import BOOLEAN_CATEGORIES, Column, Schema, category_label

MAX_CATEGORIES = 100

DRAFT_WARNING = """\
DRAFT schema written by 'fedsynth schema draft' from {source}.
The bounds and categories below were READ FROM THE DATA: they are private.
Before sharing it with the federation, review every column: widen min/max to
public, generalised values (e.g. age 0-120), drop categories that identify
rare records, and check each 'transform: log' (suggested for long-tailed
non-negative columns), 'boolean' and 'nullable' column."""


def _nice_floor(x: float) -> float:
    if x == 0:
        return 0.0
    mag = 10 ** math.floor(math.log10(abs(x)))
    return math.floor(x / mag) * mag


def _nice_ceil(x: float) -> float:
    if x == 0:
        return 0.0
    mag = 10 ** math.floor(math.log10(abs(x)))
    return math.ceil(x / mag) * mag


_BOOLEAN_TEXT = ("true", "false")  # a column holding only these (any case) is drafted as boolean


def _long_tailed(values: pd.Series) -> bool:
    """Non-negative values whose upper tail lies far beyond the bulk (a log scale is suggested): the 99th
    percentile is more than 10 times the median, both above the minimum (a log-normal with σ ≥ 1 is)."""
    values = values.astype(float)
    low = float(values.min())
    if low < 0:
        return False
    middle = float(values.median()) - low
    return middle > 0 and float(values.quantile(0.99)) - low > 10 * middle


def draft_schema(frame: pd.DataFrame, source: str) -> Schema:
    """A starting schema: numeric bounds rounded outwards, categories as found; a column with empty
    or NaN cells is drafted ``nullable``."""
    columns = []
    for name in frame.columns:
        raw = frame[name]
        empty = raw.isna() | (raw.astype(str).str.strip() == "")
        series, nullable = raw[~empty], bool(empty.any())
        if len(series) == 0:
            raise DataError(f"{source}: column '{name}' has no values to draft from")
        numeric = pd.to_numeric(series, errors="coerce") if not pd.api.types.is_bool_dtype(series) else None
        if numeric is not None and numeric.notna().all() and series.nunique() > 2:
            lo, hi = float(numeric.min()), float(numeric.max())
            whole = bool((numeric == numeric.round()).all())
            lo, hi = _nice_floor(lo), _nice_ceil(hi)
            if lo == hi:
                hi = lo + 1
            transform = "log" if _long_tailed(numeric) else "none"
            columns.append(Column(str(name), "integer" if whole else "continuous", min=lo, max=hi, transform=transform,
                                  nullable=nullable))  # fmt: skip
            continue
        if {str(v).strip().lower() for v in series} <= set(_BOOLEAN_TEXT):
            columns.append(Column(str(name), "boolean", categories=BOOLEAN_CATEGORIES, nullable=nullable))
            continue
        labels = sorted({category_label(v) for v in series})
        if len(labels) > MAX_CATEGORIES:
            raise DataError(
                f"{source}: column '{name}' has {len(labels)} distinct text values; "
                "declare it by hand (an identifier column should not be synthesised)"
            )
        if len(labels) == 1:
            labels.append("other")
        columns.append(Column(str(name), "categorical", categories=tuple(labels), nullable=nullable))
    return Schema(columns=tuple(columns), source=source)
