"""Per-column ``decimals`` and the released table's file format: what a written table looks like."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.client import wire_log
from fedsynth.core.errors import SchemaError
from fedsynth.server.synthesis import round_to_schema
from fedsynth.tabular.schema import parse_schema
from tests.conftest import SMALL_SCHEMA
from tests.test_federation_in_process import federate


def schema_with(decimals, column="income", ctype=None):
    raw = {"columns": [dict(c) for c in SMALL_SCHEMA["columns"]]}
    for c in raw["columns"]:
        if c["name"] == column:
            c["decimals"] = decimals
            if ctype:
                c["type"] = ctype
    return parse_schema(raw, source="d.yaml")


def test_decimals_parse_round_trip_and_bad_values_name_the_column():
    schema = schema_with(2)
    assert schema.column("income").decimals == 2
    assert parse_schema(schema.to_dict(), source="again").column("income").decimals == 2
    for bad in (-1, 16, 1.5, True, "2"):
        with pytest.raises(SchemaError, match="column 'income': 'decimals' must be a whole number"):
            schema_with(bad)
    with pytest.raises(SchemaError, match="column 'region': a categorical column takes no 'decimals'"):
        schema_with(1, column="region")


def test_rounding_stays_inside_the_bounds():
    schema = parse_schema({"columns": [{"name": "x", "type": "continuous", "min": 0.004, "max": 1.556,
                                        "decimals": 2}]}, source="b.yaml")  # fmt: skip
    rounded = round_to_schema(pd.DataFrame({"x": [0.004, 0.7349, 1.556]}), schema)
    assert rounded["x"].tolist() == [0.01, 0.73, 1.55]


def test_the_released_table_has_the_declared_digits(tmp_path, small_table, monkeypatch):
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)
    report, _, out, _ = federate(tmp_path, small_table, schema_with(1), rounds=1)
    assert report["release"]["approved"]
    income = pd.read_csv(out / "synthetic.csv")["income"].to_numpy()
    assert np.allclose(income, np.round(income, 1)) and not np.allclose(income, np.round(income))


def test_the_released_table_can_be_parquet_with_its_column_types(tmp_path, small_table, small_schema, monkeypatch):
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)
    report, _, out, _ = federate(tmp_path, small_table, small_schema, rounds=1, **{"synthetic-format": "parquet"})
    assert report["outputs"]["synthetic"] == "synthetic.parquet" and not (out / "synthetic.csv").exists()
    table = pd.read_parquet(out / "synthetic.parquet")
    assert list(table.columns) == small_schema.names and len(table) == report["outputs"]["rows"]
    assert not pd.api.types.is_numeric_dtype(table["region"]) and pd.api.types.is_numeric_dtype(table["age"])
