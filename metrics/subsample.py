"""Seeded row subsampling and encoding shared by the distance- and classifier-based metrics.

Rows are encoded with the project's ``TableCodec``: numeric columns scaled from
the schema's public bounds to [-1, 1], discrete columns one-hot. The codec uses no
statistic of the data, so distances mean the same thing for every table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema


def subsample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``frame`` drawn without replacement (kept in their order)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def encode(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Rows of a validated table as a float64 matrix in the codec's space."""
    return TableCodec(schema).encode(frame[schema.names]).astype(np.float64)
