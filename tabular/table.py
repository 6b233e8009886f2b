"""Reading a data table and checking it against the public schema.

A table is read with every cell as text first, so that each problem can be
reported as one line naming the file, the row and the column, and nothing is
coerced silently (a stray ``"12a"`` is an error, not a NaN).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.core.errors import DataError
from fedsynth.tabular.schema import BOOLEAN_CATEGORIES, Column, Schema, category_label

_BOOLEAN_SPELLINGS = {
    "false": "false", "0": "false", "no": "false", "f": "false", "n": "false",
    "true": "true", "1": "true", "yes": "true", "t": "true", "y": "true",
}  # fmt: skip


def read_table(path: str | Path, schema: Schema) -> pd.DataFrame:
    """Read a CSV or Parquet file and return it validated against ``schema``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ""):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            if not isinstance(frame.index, pd.RangeIndex):
                # pandas silently turns one surplus field per row into an index.
                raise DataError(f"{path}: malformed CSV (rows have more fields than the header)")
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "parse error"
        raise DataError(f"{path}: malformed CSV ({first})", public=f"{path}: malformed CSV") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read table ({type(exc).__name__}: {exc})", public=f"{path}: cannot read table"
        ) from None
    return validate_frame(frame, schema, source=str(path))


def validate_frame(frame: pd.DataFrame, schema: Schema, source: str = "<table>") -> pd.DataFrame:
    """Check columns, types, bounds and categories; return a clean typed copy.

    Numeric columns come back as float64 (integers hold whole values), discrete
    columns as strings drawn from the schema's categories, in schema order. A
    missing cell of a ``nullable`` column comes back as NaN.
    """
    columns = [str(c) for c in frame.columns]
    missing = [n for n in schema.names if n not in columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} declared in {schema.source}")
    extra = [c for c in columns if c not in schema.names]
    if extra:
        raise DataError(f"{source}: column(s) {', '.join(extra)} not declared in {schema.source}")
    if len(frame) == 0:
        raise DataError(f"{source}: table has no rows")
    frame = frame.copy()
    frame.columns = columns
    clean = {col.name: _validate_column(frame[col.name], col, source) for col in schema.columns}
    return pd.DataFrame(clean, columns=schema.names).reset_index(drop=True)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _row(rows: np.ndarray, position: int) -> int:
    """The 1-based table row of the ``position``-th checked cell (``rows``: the checked cells' positions)."""
    return int(rows[position]) + 1


def _cell(series: pd.Series, position: int) -> str:
    return repr(series.iloc[position])


def _validate_column(series: pd.Series, col: Column, source: str) -> pd.Series:
    where = f"{source}: column '{col.name}'"
    missing = series.isna().to_numpy() | (series.astype(str).str.strip() == "").to_numpy()
    if missing.any() and not col.nullable:
        pos = _first_bad(missing)
        hint = " (declare the column 'nullable: true' in the schema if it may be missing)"
        raise DataError(f"{where}, row {pos + 1}: missing value (empty or NaN){hint}",
                        public=f"{where}: missing value{hint}")  # fmt: skip
    present, rows = series[~missing], np.flatnonzero(~missing)
    if col.is_numeric:
        clean = _validate_numeric(present, col, where, rows)
        out = np.full(len(series), np.nan)
    else:
        clean = _validate_discrete(present, col, where, rows)
        out = np.full(len(series), np.nan, dtype=object)
    out[~missing] = clean.to_numpy()
    return pd.Series(out, name=col.name)


def _validate_numeric(series: pd.Series, col: Column, where: str, rows: np.ndarray) -> pd.Series:
    """``series``: the column's present cells, at table positions ``rows`` (for messages)."""
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        values = pd.to_numeric(series.astype(str).str.strip(), errors="coerce").to_numpy(dtype=float)
    elif pd.api.types.is_bool_dtype(series):
        raise DataError(f"{where}: expected numbers, found booleans")
    else:
        values = series.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        pos = _first_bad(bad)
        raise DataError(f"{where}, row {_row(rows, pos)}: {_cell(series, pos)} is not a finite number",
                        public=f"{where}: a value is not a finite number")  # fmt: skip
    if col.type == "integer":
        frac = values != np.round(values)
        if frac.any():
            pos = _first_bad(frac)
            raise DataError(f"{where}, row {_row(rows, pos)}: {_cell(series, pos)} is not a whole number",
                            public=f"{where}: a value is not a whole number")  # fmt: skip
    out_of_bounds = (values < col.min) | (values > col.max)
    if out_of_bounds.any():
        pos = _first_bad(out_of_bounds)
        raise DataError(
            f"{where}, row {_row(rows, pos)}: {values[pos]:g} is outside the schema bounds [{col.min:g}, {col.max:g}]",
            public=f"{where}: a value is outside the schema bounds [{col.min:g}, {col.max:g}]",
        )
    return pd.Series(values, name=col.name)


def _validate_discrete(series: pd.Series, col: Column, where: str, rows: np.ndarray) -> pd.Series:
    """``series``: the column's present cells, at table positions ``rows`` (for messages)."""
    labels = series.map(category_label).astype(str).str.strip()
    if col.type == "boolean":
        labels = labels.str.lower().map(lambda v: _BOOLEAN_SPELLINGS.get(v, v))
        allowed = BOOLEAN_CATEGORIES
    else:
        allowed = col.categories
    unknown = ~labels.isin(allowed).to_numpy()
    if unknown.any():
        pos = _first_bad(unknown)
        shown = ", ".join(allowed[:8]) + (", ..." if len(allowed) > 8 else "")
        raise DataError(f"{where}, row {_row(rows, pos)}: unknown category {_cell(series, pos)} "
                        f"(schema allows {shown})",
                        public=f"{where}: a value is not one of the schema's categories")  # fmt: skip
    return pd.Series(labels.to_numpy(dtype=object), name=col.name)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV (or Parquet by suffix) atomically: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)
