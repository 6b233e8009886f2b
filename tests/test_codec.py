"""The codec: built from the public schema alone, reversible, and always decoding into the schema's domain."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.datasets import DEFAULT_SCHEMA
from fedsynth.tabular.schema import load_schema, parse_schema
from fedsynth.tabular.table import validate_frame

RAW_SCHEMA = {
    "columns": [
        {"name": "age", "type": "integer", "min": 0, "max": 120},
        {"name": "income", "type": "continuous", "min": 0, "max": 1_000_000, "transform": "log"},
        {"name": "temp", "type": "continuous", "min": -50.5, "max": 60.25},
        {"name": "weight", "type": "integer", "min": 0, "max": 2_000_000, "transform": "log"},
        {"name": "offset", "type": "integer", "min": -1000, "max": -10},
        {"name": "region", "type": "categorical", "categories": ["north", "south", "east", "west"]},
        {"name": "smoker", "type": "boolean"},
        {"name": "answer", "type": "categorical", "categories": ["yes", "no"]},
    ]
}
SCHEMA = parse_schema(RAW_SCHEMA, source="codec.yaml")
EXPECTED_DIM = 5 + 4 + 2 + 2


def _table(seed: int, n: int = 200) -> pd.DataFrame:
    """A validated table over SCHEMA, including every bound."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(0, 121, n),
            "income": np.round(rng.lognormal(10, 2, n).clip(1, 1_000_000), 2),
            "temp": rng.uniform(-50.5, 60.25, n),
            "weight": rng.integers(0, 2_000_001, n),
            "offset": rng.integers(-1000, -9, n),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "smoker": rng.choice(["false", "true"], n),
            "answer": rng.choice(["yes", "no"], n),
        }
    )
    bounds = {"age": (0, 120), "income": (0.0, 1_000_000.0), "temp": (-50.5, 60.25),
              "weight": (0, 2_000_000), "offset": (-1000, -10)}  # fmt: skip
    for name, (lo, hi) in bounds.items():
        frame.loc[0, name] = lo
        frame.loc[1, name] = hi
    return validate_frame(frame, SCHEMA, source=f"table-{seed}")


def _assert_in_domain(decoded: pd.DataFrame, schema=SCHEMA) -> None:
    assert list(decoded.columns) == schema.names
    for col in schema.columns:
        values = decoded[col.name]
        assert not values.isna().any(), col.name
        if col.is_numeric:
            array = values.to_numpy()
            assert np.isfinite(array.astype(float)).all(), col.name
            assert (array >= col.min).all() and (array <= col.max).all(), col.name
            if col.type == "integer":
                assert pd.api.types.is_integer_dtype(values), (col.name, values.dtype)
            else:
                assert pd.api.types.is_float_dtype(values), (col.name, values.dtype)
        else:
            assert set(values) <= set(col.categories), col.name
            assert all(isinstance(v, str) for v in values), col.name


# --- shape ---------------------------------------------------------------------------------------


def test_spans_follow_schema_order_and_widths():
    codec = TableCodec(SCHEMA)
    assert codec.dim == EXPECTED_DIM
    assert [(s.column.name, s.start, s.width) for s in codec.spans] == [
        ("age", 0, 1), ("income", 1, 1), ("temp", 2, 1), ("weight", 3, 1), ("offset", 4, 1),
        ("region", 5, 4), ("smoker", 9, 2), ("answer", 11, 2),
    ]  # fmt: skip
    assert codec.spans[-1].stop == codec.dim


def test_encoding_is_float32_in_unit_range_with_one_hot_blocks():
    codec = TableCodec(SCHEMA)
    encoded = codec.encode(_table(0))
    assert encoded.dtype == np.float32 and encoded.shape == (200, EXPECTED_DIM)
    assert np.isfinite(encoded).all()
    assert encoded.min() >= -1.0 and encoded.max() <= 1.0
    for span in codec.spans:
        if not span.is_numeric:
            block = encoded[:, span.start : span.stop]
            assert set(np.unique(block)) <= {0.0, 1.0}
            assert (block.sum(axis=1) == 1.0).all()


def test_schema_bounds_map_to_minus_one_and_one():
    """Scaling comes from the declared bounds, not from the data's own range."""
    codec = TableCodec(SCHEMA)
    frame = _table(0)
    encoded = codec.encode(frame)
    for span in codec.spans:
        if span.is_numeric:
            assert encoded[0, span.start] == pytest.approx(-1.0, abs=1e-6), span.column.name
            assert encoded[1, span.start] == pytest.approx(1.0, abs=1e-6), span.column.name
    # A narrow table: age 40..60 must not be stretched to [-1, 1].
    narrow = frame.iloc[2:5].copy()
    narrow["age"] = [40.0, 50.0, 60.0]
    ages = codec.encode(narrow)[:, 0]
    np.testing.assert_allclose(ages, 2 * np.array([40.0, 50.0, 60.0]) / 120 - 1, atol=1e-6)


def test_log_transform_spreads_small_values():
    codec = TableCodec(SCHEMA)
    frame = _table(0).iloc[:2].copy()
    frame["income"] = [1000.0, 1_000_000.0 / 2]
    encoded = codec.encode(frame)[:, 1]
    expected = 2 * np.log1p(frame["income"].to_numpy()) / np.log1p(1_000_000.0) - 1
    np.testing.assert_allclose(encoded, expected, atol=1e-6)
    assert encoded[0] > -0.5  # linear scaling would put 1000 at -0.998


# --- round trip ------------------------------------------------------------------------------------


def test_encode_decode_round_trip():
    codec = TableCodec(SCHEMA)
    frame = _table(1)
    decoded = codec.decode(codec.encode(frame))
    _assert_in_domain(decoded)
    for col in SCHEMA.columns:
        if col.type == "integer":
            assert pd.api.types.is_integer_dtype(decoded[col.name]), col.name
            np.testing.assert_array_equal(decoded[col.name].to_numpy(), frame[col.name].to_numpy().astype(np.int64))
        elif col.type == "continuous":
            np.testing.assert_allclose(
                decoded[col.name].to_numpy(), frame[col.name].to_numpy(), rtol=1e-4, atol=1e-9 * (col.max - col.min)
            )
        else:
            assert decoded[col.name].tolist() == frame[col.name].tolist(), col.name


def test_round_trip_of_every_integer_near_the_top_of_a_wide_log_column():
    """The shipped HI schema has an integer column 0..2,000,000 on a log scale; float32 must still suffice."""
    schema = parse_schema({"columns": [{"name": "w", "type": "integer", "min": 0, "max": 2_000_000,
                                        "transform": "log"}]})  # fmt: skip
    codec = TableCodec(schema)
    values = np.concatenate([np.arange(0, 2000), np.arange(1_990_000, 2_000_001)]).astype(float)
    decoded = codec.decode(codec.encode(pd.DataFrame({"w": values})))
    np.testing.assert_array_equal(decoded["w"].to_numpy(), values.astype(np.int64))


def test_shipped_hi_schema_round_trips_a_table():
    schema = load_schema(DEFAULT_SCHEMA)
    rng = np.random.default_rng(3)
    n = 100
    data = {}
    for col in schema.columns:
        if col.type == "integer":
            data[col.name] = rng.integers(int(col.min), int(col.max) + 1, n).astype(float)
        elif col.type == "continuous":
            data[col.name] = rng.uniform(col.min, col.max, n)
        else:
            data[col.name] = rng.choice(list(col.categories), n)
    frame = validate_frame(pd.DataFrame(data), schema, source="hi")
    codec = TableCodec(schema)
    decoded = codec.decode(codec.encode(frame))
    _assert_in_domain(decoded, schema)
    for col in schema.columns:
        if col.type == "integer":
            np.testing.assert_array_equal(decoded[col.name].to_numpy(), frame[col.name].to_numpy().astype(np.int64))
        elif col.type == "continuous":
            np.testing.assert_allclose(decoded[col.name], frame[col.name], rtol=1e-4, atol=1e-6 * (col.max - col.min))
        else:
            assert decoded[col.name].tolist() == frame[col.name].tolist()


# --- decoding arbitrary network output --------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 1.0, 10.0, 1e6, 1e300])
def test_decoding_random_matrices_stays_in_domain(scale):
    codec = TableCodec(SCHEMA)
    rng = np.random.default_rng(int(np.log10(scale) + 400))
    decoded = codec.decode(rng.normal(0.0, scale, size=(500, codec.dim)))
    _assert_in_domain(decoded)
    assert len(decoded) == 500


def test_decoding_extreme_and_nan_values_stays_in_domain():
    codec = TableCodec(SCHEMA)
    specials = [np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e308, -1e308, 1.0000001, -1.0000001, 5e-324]
    rng = np.random.default_rng(7)
    matrix = rng.choice(specials, size=(400, codec.dim))
    matrix[0, :] = np.nan  # a row of nothing but NaN
    matrix[1, :] = np.inf
    matrix[2, :] = -np.inf
    decoded = codec.decode(matrix)
    _assert_in_domain(decoded)
    assert len(decoded) == 400


def test_decoding_clips_to_bounds():
    codec = TableCodec(SCHEMA)
    high = codec.decode(np.full((1, codec.dim), 3.0))
    low = codec.decode(np.full((1, codec.dim), -3.0))
    for col in SCHEMA.columns:
        if col.is_numeric:
            assert high[col.name].iloc[0] == pytest.approx(col.max, rel=1e-12), col.name
            assert low[col.name].iloc[0] == pytest.approx(col.min, rel=1e-12), col.name


def test_decoding_picks_the_largest_logit():
    codec = TableCodec(SCHEMA)
    matrix = np.zeros((2, codec.dim))
    matrix[0, 5:9] = [0.1, -2.0, 0.7, 0.69]
    matrix[1, 5:9] = [np.nan, -5.0, -6.0, -4.0]
    assert codec.decode(matrix)["region"].tolist() == ["east", "west"]


def test_decoding_float32_network_output():
    codec = TableCodec(SCHEMA)
    matrix = np.random.default_rng(0).uniform(-1.2, 1.2, size=(64, codec.dim)).astype(np.float32)
    _assert_in_domain(codec.decode(matrix))


@pytest.mark.parametrize("shape", [(3, EXPECTED_DIM - 1), (3, EXPECTED_DIM + 1), (EXPECTED_DIM,)])
def test_decoding_wrong_shape_is_refused(shape):
    with pytest.raises(ValueError, match=f"{EXPECTED_DIM} columns"):
        TableCodec(SCHEMA).decode(np.zeros(shape))


# --- the codec depends on the schema only ---------------------------------------------------------


def test_codec_is_built_from_the_schema_alone(tmp_path):
    assert list(inspect.signature(TableCodec).parameters) == ["schema"]
    path = tmp_path / "s.yaml"
    path.write_text("columns:\n" + "".join(
        f"  - {{name: {c['name']}, type: {c['type']}"
        + (f", min: {c['min']}, max: {c['max']}" if "min" in c else "")
        + (f", transform: {c['transform']}" if "transform" in c else "")
        + (f", categories: [{', '.join(c['categories'])}]" if "categories" in c else "")
        + "}\n"
        for c in RAW_SCHEMA["columns"]
    ))  # fmt: skip
    first, second = TableCodec(load_schema(path)), TableCodec(SCHEMA)
    assert first.dim == second.dim == EXPECTED_DIM
    assert [(s.column, s.start, s.width) for s in first.spans] == [(s.column, s.start, s.width) for s in second.spans]


def test_two_tables_with_one_schema_encode_shared_rows_identically():
    table_a, table_b = _table(10), _table(11, n=50)
    assert not table_a.head(50).equals(table_b)
    codec_a, codec_b = TableCodec(SCHEMA), TableCodec(SCHEMA)
    assert codec_a.dim == codec_b.dim
    assert codec_a.spans == codec_b.spans
    # Put one row of table A into table B: it must encode to the same vector in both contexts.
    row = table_a.iloc[[17]]
    mixed = pd.concat([table_b, row], ignore_index=True)
    np.testing.assert_array_equal(codec_b.encode(mixed)[-1], codec_a.encode(table_a)[17])


def test_encoding_a_row_does_not_depend_on_the_other_rows():
    codec = TableCodec(SCHEMA)
    table = _table(5)
    whole = codec.encode(table)
    np.testing.assert_array_equal(codec.encode(table.iloc[:1]), whole[:1])
    np.testing.assert_array_equal(codec.encode(table.iloc[[150]]), whole[[150]])
    # Reordering rows reorders the encoding and nothing else.
    order = np.random.default_rng(0).permutation(len(table))
    np.testing.assert_array_equal(codec.encode(table.iloc[order]), whole[order])


def test_decoding_a_row_does_not_depend_on_the_other_rows():
    codec = TableCodec(SCHEMA)
    matrix = np.random.default_rng(1).normal(size=(30, codec.dim))
    whole = codec.decode(matrix)
    pd.testing.assert_frame_equal(codec.decode(matrix[:1]), whole.iloc[:1])
