"""``--holdout``: a share of rows that no site sees (the CLI run that writes it and evaluates against it is in
test_simulation_e2e)."""

from __future__ import annotations

import pytest

from fedsynth.client import wire_log
from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError
from fedsynth.tabular.partitioning import split_holdout
from tests.test_federation_in_process import federate


def test_the_split_is_seeded_disjoint_and_complete(small_table):
    kept, held = split_holdout(small_table, 0.25, seed=3)
    assert len(held) == 100 and len(kept) == 300
    assert sorted([*kept.index, *held.index]) == list(small_table.index)
    again, _ = split_holdout(small_table, 0.25, seed=3)
    assert kept.index.equals(again.index)
    assert not split_holdout(small_table, 0.25, seed=4)[1].index.equals(held.index)
    assert len(split_holdout(small_table, 0.0, seed=3)[1]) == 0
    with pytest.raises(ConfigError, match="'holdout' must be a share"):
        RunConfig(holdout=1.0).validate()


def test_held_out_rows_reach_no_site(tmp_path, small_table, small_schema, monkeypatch):
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)
    report, _, _, _ = federate(tmp_path, small_table, small_schema, holdout=0.25, rounds=1)
    # Every site's DP row count estimates its own rows; together they hold about 300 of the 400 rows.
    total = sum(m["num-examples"] for m in report["rounds"][0]["sites"].values())
    assert abs(total - 300) < 60, total
