"""``schema draft``: booleans drafted as boolean, long-tailed non-negative columns on a log scale, gaps nullable."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.tabular.draft import draft_schema


def test_true_false_columns_are_boolean_and_a_long_tail_gets_a_log_transform():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "smoker": rng.choice(["True", "False"], 500),
        "flag": rng.choice([True, False], 500),
        "income": np.round(rng.lognormal(10, 1.5, 500), 2),  # long right tail
        "age": rng.integers(18, 90, 500),  # no tail
        "region": rng.choice(["north", "south", "east"], 500),
    })  # fmt: skip
    schema = draft_schema(frame, "t.csv")
    assert schema.column("smoker").type == "boolean" and schema.column("flag").type == "boolean"
    assert schema.column("income").transform == "log" and schema.column("age").transform == "none"
    assert schema.column("region").type == "categorical"


def test_a_column_with_empty_cells_is_drafted_nullable():
    frame = pd.DataFrame({"bmi": ["21.5", "", "30.1", "25.0"], "job": ["nurse", "clerk", None, "nurse"],
                          "age": ["30", "41", "52", "63"]})  # fmt: skip
    schema = draft_schema(frame, "t.csv")
    assert schema.column("bmi").nullable and schema.column("bmi").type == "continuous"
    assert schema.column("job").nullable and schema.column("job").categories == ("clerk", "nurse")
    assert not schema.column("age").nullable
