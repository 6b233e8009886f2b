"""Two-way DP marginals used at sampling time: raking (IPF) and its configuration, resume and report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError
from fedsynth.marginals.bins import count, count_pairs, pair_layout, parse_pairs, schema_bins
from fedsynth.marginals.calibration import calibrated_sample, rake, recombine
from fedsynth.marginals.estimate import Marginals
from fedsynth.models.gan import Generator
from fedsynth.server.measurement import measure_marginals, measurement_summary
from fedsynth.server.run_state import RunState
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import parse_schema

TOY = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "categorical", "categories": ["a", "b", "c"]},
            {"name": "y", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "z", "type": "continuous", "min": 0, "max": 10},
        ]
    }
)


def _toy_table(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """y depends strongly on x; z grows with x."""
    rng = np.random.default_rng(seed)
    x = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    p_yes = np.select([x == "a", x == "b"], [0.1, 0.5], 0.9)
    y = np.where(rng.random(n) < p_yes, "yes", "no")
    z = np.clip(np.select([x == "a", x == "b"], [2.0, 5.0], 8.0) + rng.normal(0, 1, n), 0, 10)
    return pd.DataFrame({"x": x.astype(object), "y": y.astype(object), "z": z})


def _exact_marginals(table: pd.DataFrame, pairs_spec: str, bins: int = 16, pair_bins: int = 4) -> Marginals:
    layout = schema_bins(TOY, bins)
    pairs = pair_layout(layout, parse_pairs(pairs_spec, TOY), pair_bins)
    return Marginals.from_noisy_counts(
        layout, count(table, layout), 0.0, pairs, count_pairs(table, pairs), pair_bins=pair_bins
    )


def _pair_gap(table: pd.DataFrame, marginals: Marginals) -> float:
    """Largest total-variation distance between a table's two-way marginals and the measured ones."""
    gaps = []
    for pair in marginals.pairs:
        have = count_pairs(table, [pair.bins])[0]
        gaps.append(0.5 * np.abs(have / have.sum() - pair.probabilities).sum())
    return max(gaps)


def test_raking_injects_the_measured_dependence_into_an_independent_table():
    real = _toy_table()
    marginals = _exact_marginals(real, "x:y,x:z")
    independent = marginals.sample_independent(20_000, seed=1)  # no dependence at all
    assert _pair_gap(independent, marginals) > 0.15
    raked, diagnostics = rake(independent, marginals, rows=4000, rng=np.random.default_rng(2))
    assert len(raked) == 4000 and list(raked.columns) == ["x", "y", "z"]
    assert _pair_gap(raked, marginals) < 0.03
    share = {k: ((raked["x"] == k) & (raked["y"] == "yes")).sum() / (raked["x"] == k).sum() for k in "abc"}
    assert share["a"] < 0.2 < 0.4 < share["b"] < 0.6 < 0.8 < share["c"]  # the real P(yes | x): 0.1, 0.5, 0.9
    assert np.corrcoef(raked["x"].map({"a": 0, "b": 1, "c": 2}), raked["z"])[0, 1] > 0.7
    for name in ("x", "y"):
        real_share = real[name].value_counts(normalize=True)
        assert np.allclose(raked[name].value_counts(normalize=True)[real_share.index], real_share, atol=0.02)
    after, before = diagnostics["max_marginal_error_after"], diagnostics["max_marginal_error_before"]
    assert after["two_way"] < 0.01 < before["two_way"] and after["one_way"] < 0.01
    assert diagnostics["iterations"] >= 1 and 0 < diagnostics["effective_sample_share"] <= 1


def test_raking_a_table_that_already_fits_keeps_uniform_weights():
    real = _toy_table()
    marginals = _exact_marginals(real, "x:y")
    _, diagnostics = rake(real, marginals, rows=1000, rng=np.random.default_rng(0))
    assert diagnostics["max_marginal_error_before"]["two_way"] < 1e-12
    assert diagnostics["effective_sample_share"] == pytest.approx(1.0)


def test_calibrated_sample_rakes_only_when_pairs_were_measured():
    real = _toy_table()
    codec = TableCodec(TOY)
    torch.manual_seed(0)
    generator = Generator(codec, noise_dim=8, hidden=16)  # untrained: its dependence is arbitrary
    with_pairs = _exact_marginals(real, "x:y,x:z")
    table, raking = calibrated_sample(generator, codec, with_pairs, rows=3000, seed=0)
    assert len(table) == 3000 and _pair_gap(table, with_pairs) < 0.05
    assert raking["candidate_rows"] >= 5 * 3000 and raking["rows"] == 3000
    one_way_only = _exact_marginals(real, "")
    plain, no_raking = calibrated_sample(generator, codec, one_way_only, rows=3000, seed=0)
    assert len(plain) == 3000 and no_raking is None
    assert _pair_gap(plain, with_pairs) > _pair_gap(table, with_pairs) + 0.05


@pytest.mark.parametrize(
    ("mapping", "key", "needle"),
    [
        ({"measure-pairs": "whi"}, "measure-pairs", "COLUMN:COLUMN"),
        ({"measure-pairs": "whi:hhi:x"}, "measure-pairs", "COLUMN:COLUMN"),
        ({"measure-pairs": "whi:*", "calibrate": False}, "measure-pairs", "calibrate=true"),
        ({"measure-pairs": "whi:*", "measure-fraction": 0, "calibrate": False}, "measure-pairs", "measure-fraction"),
        ({"measure-pair-bins": 1}, "measure-pair-bins", "at least 2"),
    ],
)
def test_pair_settings_are_one_line_config_errors(mapping, key, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(mapping)
    assert f"'{key}'" in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_a_pair_with_a_column_the_schema_lacks_fails_before_the_run():
    from fedsynth.simulations.setup import prepare_simulation

    config = RunConfig.from_mapping({"measure-pairs": "whi:wages"})
    with pytest.raises(ConfigError, match="'measure-pairs' names 'wages', not a schema column"):
        prepare_simulation(config, echo=lambda _line: None)


def test_resume_restores_the_pairs_without_measuring_again():
    real = _toy_table()
    marginals = _exact_marginals(real, "x:y", bins=32, pair_bins=8)
    state = RunState()
    state.measurement = {"marginals": marginals.to_state(), "sites": ["s0"], "failed": {},
                                    "noise_std_per_count": 3.0, "histograms": 4}  # fmt: skip
    config = RunConfig.from_mapping({"measure-pairs": "x:y", "release-from": "generator"})
    # No grid, strategy or participation: measuring again would fail loudly.
    restored = measure_marginals(None, None, config, TOY, {}, state, None)  # type: ignore[arg-type]
    assert [p.bins.key for p in restored.pairs] == ["pair:x|y"]
    assert np.allclose(restored.pairs[0].probabilities, marginals.pairs[0].probabilities)
    summary = measurement_summary(config, state, raking={"iterations": 3})
    assert summary["pairs"] == [["x", "y"]] and summary["histograms"] == 4
    assert summary["raking"] == {"iterations": 3} and len(summary["used_for"]) == 2


def test_recombined_candidates_let_raking_undo_a_link_the_generator_invented():
    rng = np.random.default_rng(4)
    real = _toy_table()
    real["y"] = rng.choice(["no", "yes"], len(real)).astype(object)  # y independent of x in the data
    marginals = _exact_marginals(real, "x:y")
    linked = real.copy()
    linked["y"] = np.where(linked["x"] == "a", "no", "yes").astype(object)  # the generator's spurious link
    _, stuck = rake(linked, marginals, rows=2000, rng=np.random.default_rng(0))
    assert stuck["max_marginal_error_after"]["two_way"] > 0.1  # no candidate row holds (a, yes)
    mixed = recombine(linked, 0.5, np.random.default_rng(1))
    assert len(mixed) == len(linked) and mixed.iloc[: len(linked) // 2].equals(linked.iloc[: len(linked) // 2])
    raked, fixed = rake(mixed, marginals, rows=2000, rng=np.random.default_rng(0))
    assert fixed["max_marginal_error_after"]["two_way"] < 0.01 and _pair_gap(raked, marginals) < 0.03
    assert recombine(linked, 0.0, np.random.default_rng(1)) is linked


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_rake_mix_outside_zero_one_is_an_error(value):
    with pytest.raises(ConfigError, match="'rake-mix' must be in"):
        RunConfig.from_mapping({"rake-mix": value})
