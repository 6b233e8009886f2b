"""Missing values: ``nullable: true`` columns, from the schema to the released table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.core.errors import DataError, SchemaError
from fedsynth.marginals.bins import count, schema_bins
from fedsynth.marginals.estimate import Marginals
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import parse_schema
from fedsynth.tabular.table import validate_frame
from tests.test_federation_in_process import federate

COLUMNS = [
    {"name": "age", "type": "integer", "min": 18, "max": 90, "nullable": True},
    {"name": "income", "type": "continuous", "min": 0, "max": 200000, "transform": "log"},
    {"name": "job", "type": "categorical", "categories": ["clerk", "nurse", "driver", "teacher"], "nullable": True},
    {"name": "region", "type": "categorical", "categories": ["north", "south", "east", "west"]},
    {"name": "smoker", "type": "boolean"},
]
MISSING = 0.10


def nullable_schema():
    return parse_schema({"columns": COLUMNS}, source="nullable.yaml")


def table_with_missing(rows: int = 4000, seed: int = 0) -> pd.DataFrame:
    """10% of ``age`` and of ``job`` missing, at random; the other columns complete."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(18, 90, rows).astype(float),
        "income": np.round(rng.lognormal(10, 0.8, rows).clip(0, 200000), 2),
        "job": rng.choice(["clerk", "nurse", "driver", "teacher"], rows, p=[0.4, 0.3, 0.2, 0.1]).astype(object),
        "region": rng.choice(["north", "south", "east", "west"], rows).astype(object),
        "smoker": rng.choice(["false", "true"], rows, p=[0.8, 0.2]).astype(object),
    })  # fmt: skip
    frame.loc[rng.random(rows) < MISSING, "age"] = np.nan
    frame.loc[rng.random(rows) < MISSING, "job"] = np.nan
    return frame


def test_nullable_must_be_a_boolean():
    with pytest.raises(SchemaError, match="column 'age': 'nullable' must be true or false, got 'yes'"):
        parse_schema({"columns": [{**COLUMNS[0], "nullable": "yes"}, COLUMNS[1]]}, source="s.yaml")
    assert nullable_schema().column("age").to_dict()["nullable"] is True
    assert "nullable" not in nullable_schema().column("income").to_dict()


def test_a_missing_cell_is_an_error_only_where_the_column_is_not_nullable():
    schema = nullable_schema()
    frame = table_with_missing(50)
    clean = validate_frame(frame, schema, source="t.csv")
    assert clean["age"].isna().sum() == frame["age"].isna().sum() > 0
    assert clean["job"].isna().sum() == frame["job"].isna().sum() > 0
    frame.loc[3, "income"] = np.nan
    with pytest.raises(DataError, match=r"t.csv: column 'income', row 4: missing value .*nullable: true"):
        validate_frame(frame, schema, source="t.csv")
    # Row numbers in other errors still count every row, missing ones included.
    frame = table_with_missing(50)
    first_missing = int(np.flatnonzero(frame["job"].isna())[0])
    frame.loc[first_missing + 1, "job"] = "pilot"
    with pytest.raises(DataError, match=rf"row {first_missing + 2}: unknown category 'pilot'"):
        validate_frame(frame, schema, source="t.csv")


def test_the_codec_carries_missing_cells_and_gives_them_back():
    schema = nullable_schema()
    clean = validate_frame(table_with_missing(200), schema)
    codec = TableCodec(schema)
    assert codec.dim == 1 + 2 + 1 + 4 + 2 + 4 + 2  # age + missing block, income, job + block, region, smoker
    back = codec.decode(codec.encode(clean))
    pd.testing.assert_series_equal(back["age"].isna(), clean["age"].isna())
    pd.testing.assert_series_equal(back["job"].isna(), clean["job"].isna())
    present = clean["job"].notna()
    assert (back["job"][present] == clean["job"][present]).all()
    assert (back["age"][clean["age"].notna()].astype(float) == clean["age"].dropna()).all()
    assert str(back["age"].dtype) == "Int64"  # whole numbers stay whole beside the gaps


def test_the_missing_count_is_one_more_bin_of_the_same_histogram():
    schema = nullable_schema()
    clean = validate_frame(table_with_missing(1000), schema)
    layout = schema_bins(schema)
    counts = count(clean, layout)
    for spec, column in zip(layout, counts, strict=True):
        assert column.sum() == len(clean)  # each row once per histogram: the sensitivity is unchanged
        if spec.missing_bin is not None:
            assert column[spec.missing_bin] == clean[spec.column.name].isna().sum()
    marginals = Marginals.from_noisy_counts(layout, counts, noise_std=0.0)
    assert marginals.missing_rate(0) == pytest.approx(clean["age"].isna().mean())
    assert marginals.missing_rate(1) == 0.0
    sample = marginals.sample_independent(20_000, seed=1)
    assert sample["age"].isna().mean() == pytest.approx(clean["age"].isna().mean(), abs=0.01)
    assert sample["income"].notna().all()


def test_a_federation_reproduces_the_missing_rates(tmp_path):
    """Four sites, ε=1: the released table misses age and job at about 10% and nothing else."""
    report, _, out, _ = federate(tmp_path, table_with_missing(), nullable_schema(), epsilon=1.0, rounds=2)
    assert len(report["privacy"]["sites"]) == 4
    assert report["release"]["approved"], report["release"]["reasons"]
    synthetic = pd.read_csv(out / "synthetic.csv", keep_default_na=True)
    rates = synthetic.isna().mean()
    assert abs(rates["age"] - MISSING) <= 0.03 and abs(rates["job"] - MISSING) <= 0.03, rates.to_dict()
    assert rates[["income", "region", "smoker"]].sum() == 0, rates.to_dict()
    validate_frame(synthetic, nullable_schema(), source="synthetic.csv")  # what it writes reads back


@pytest.mark.parametrize("target", ["age", "job"])
def test_evaluate_scores_tables_with_missing_cells_and_sees_a_wrong_missing_rate(target):
    import fedsynth

    schema = nullable_schema()
    real, holdout = table_with_missing(800, seed=1), table_with_missing(400, seed=2)
    faithful = fedsynth.evaluate(real, holdout, table_with_missing(800, seed=3), nullable_schema(), target=target,
                                 max_rows=400)  # fmt: skip
    none_missing = table_with_missing(800, seed=3)
    none_missing["age"] = none_missing["age"].fillna(50.0)
    none_missing["job"] = none_missing["job"].fillna("clerk")
    blind = fedsynth.evaluate(real, holdout, none_missing, schema, target=target, max_rows=400)
    for report in (faithful, blind):
        assert all(np.isfinite(v["score"]) for v in report["fidelity"]["column_shapes"]["columns"].values())
        assert np.isfinite(report["fidelity"]["pair_trends"]["score"])
    shapes = {r: rep["fidelity"]["column_shapes"]["columns"] for r, rep in (("faithful", faithful), ("blind", blind))}
    for column in ("age", "job"):  # a table that never misses scores lower on the columns that do
        assert shapes["blind"][column]["score"] < shapes["faithful"][column]["score"] - 0.05, shapes
    # A synthetic row equal to a real one, missing cells included, is an exact match.
    copies = fedsynth.evaluate(real, holdout, real.iloc[:400], schema, target=target, max_rows=400)
    assert copies["privacy"]["exact_match_rate"] == 1.0
