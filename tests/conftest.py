"""Shared fixtures: a small mixed schema and table, and quiet third-party warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.tabular.schema import parse_schema

warnings.filterwarnings("ignore", module="opacus")

SMALL_SCHEMA = {
    "columns": [
        {"name": "age", "type": "integer", "min": 0, "max": 100},
        {"name": "income", "type": "continuous", "min": 0, "max": 200000, "transform": "log"},
        {"name": "region", "type": "categorical", "categories": ["north", "south", "east"]},
        {"name": "smoker", "type": "boolean"},
    ]
}


@pytest.fixture
def small_schema():
    return parse_schema(SMALL_SCHEMA, source="small.yaml")


@pytest.fixture
def small_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype(float),
            "income": np.round(rng.lognormal(10, 1, n).clip(0, 200000), 2),
            "region": rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2]).astype(object),
            "smoker": rng.choice(["false", "true"], n, p=[0.8, 0.2]).astype(object),
        }
    )


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)
