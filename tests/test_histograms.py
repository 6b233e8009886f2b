"""DP histograms, the marginals built from them, and calibration to them."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ks_2samp

from fedsynth.core.errors import ConfigError
from fedsynth.marginals.bins import (
    column_bins,
    count,
    count_pairs,
    fine_to_coarse,
    pair_layout,
    parse_pairs,
    schema_bins,
)
from fedsynth.marginals.calibration import calibrated_sample
from fedsynth.marginals.estimate import Marginals, pooled_one_way
from fedsynth.marginals.release import add_noise, one_way_weight, read_release, release_record
from fedsynth.models.gan import Generator
from fedsynth.privacy.budget import SiteBudget, epsilon_of
from fedsynth.privacy.mechanisms import histogram_noise_std
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import parse_schema
from fedsynth.tabular.table import validate_frame


def test_counts_use_public_bins_with_a_point_bin_at_min(small_schema):
    frame = pd.DataFrame(
        {"age": [0.0, 0.0, 5.0, 100.0], "income": [0.0, 10.0, 1000.0, 200000.0],
         "region": ["north", "north", "east", "south"], "smoker": ["true", "false", "false", "false"]}
    )  # fmt: skip
    layout = schema_bins(small_schema, bins=10)
    counts = count(frame, layout)
    assert counts[0][0] == 2 and counts[0].sum() == 4  # two rows at age == min in the point bin
    assert counts[1][0] == 1 and counts[1][-1] == 1  # income: one at min, one at max (last bin)
    assert counts[2].tolist() == [2, 1, 1]  # declared order north, south, east
    assert counts[3].tolist() == [3, 1]


def test_small_integer_columns_get_one_bin_per_value():
    schema = parse_schema({"columns": [{"name": "kids", "type": "integer", "min": 0, "max": 5}]})
    spec = column_bins(schema.columns[0], bins=32)
    assert spec.size == 6
    counts = count(pd.DataFrame({"kids": [0.0, 1.0, 1.0, 5.0]}), [spec])[0]
    assert counts.tolist() == [1, 2, 0, 0, 0, 1]


def test_release_is_charged_as_one_gaussian_mechanism():
    budget = SiteBudget.plan(epsilon=1.0, delta=1e-5, sample_rate=0.05, planned_steps=50, accountant="rdp",
                             measure_fraction=0.2)  # fmt: skip
    assert budget.measure_noise > 0 and not budget.measured
    budget.record_measurement()
    assert budget.measured and budget.steps == 0
    alone = epsilon_of([(budget.measure_noise, 1.0, 1)], 1e-5, "rdp")
    assert abs(budget.spent - alone) < 1e-9 and 0 < alone <= 0.2 + 1e-6
    budget.history.append((budget.noise_multiplier, budget.sample_rate, budget.max_steps))
    assert budget.spent <= 1.0
    over = epsilon_of([*budget.history[:-1], (budget.noise_multiplier, 0.05, budget.max_steps + 1)], 1e-5, "rdp")
    assert over > 1.0
    assert histogram_noise_std(2.0, 9) == (6.0, 6.0)  # L2 sensitivity sqrt(9 columns)
    assert histogram_noise_std(2.0, 9, weight=3.0) == pytest.approx((6.0, 18.0))  # no pairs: weight changes nothing


def test_noise_has_the_stated_scale_and_keeps_counts_whole():
    counts = [np.zeros(20_000), np.full((10, 10), 7.0)]
    noisy = add_noise(counts, 3.0, NoiseSource.secret_source())  # OpenDP's discrete Gaussian
    assert abs(noisy[0].std() - 3.0) < 0.1
    assert noisy[1].shape == (10, 10) and abs(noisy[1].mean() - 7.0) < 1.5
    assert all(np.array_equal(n, np.round(n)) for n in noisy)


def test_independent_sample_follows_the_marginals_and_stays_in_domain(small_schema, small_table):
    layout = schema_bins(small_schema, bins=16)
    marginals = Marginals.from_noisy_counts(layout, count(small_table, layout), noise_std=0.0)
    sample = marginals.sample_independent(20_000, seed=1)
    validate_frame(sample, small_schema)
    region = sample["region"].value_counts(normalize=True)
    real = small_table["region"].value_counts(normalize=True)
    for name in real.index:
        assert abs(region[name] - real[name]) < 0.02
    assert ks_2samp(sample["age"], small_table["age"]).statistic < 0.08


def test_numeric_bins_under_the_noise_level_are_dropped_but_rare_categories_kept(small_schema, small_table):
    layout = schema_bins(small_schema, bins=16)
    sums = count(small_table, layout)
    sums[2] = np.array([200.0, 120.0, 30.0])  # region: east (30) is below 2 * 20
    sums[3] = np.array([300.0, -5.0])  # smoker: noise pushed 'true' below 0
    marginals = Marginals.from_noisy_counts(layout, sums, noise_std=20.0)
    region = marginals.probabilities[2]
    assert region[2] == pytest.approx(30 / 350) and abs(region.sum() - 1) < 1e-12
    assert marginals.probabilities[3].tolist() == [1.0, 0.0]
    income = marginals.probabilities[1]
    assert np.all(income[sums[1] <= 40.0] == 0.0) and np.all(income[sums[1] > 40.0] > 0)


def test_quantile_map_keeps_order_and_moves_onto_the_marginal(small_schema, small_table):
    layout = schema_bins(small_schema, bins=16)
    marginals = Marginals.from_noisy_counts(layout, count(small_table, layout), noise_std=0.0)
    values = np.random.default_rng(2).uniform(0, 30, 5_000)
    mapped = marginals.quantile_map(0, values)
    assert np.all(np.diff(mapped[np.argsort(values)]) >= 0)
    assert ks_2samp(mapped, small_table["age"]).statistic < 0.08
    assert ks_2samp(values, small_table["age"]).statistic > 0.2


def test_calibration_moves_a_biased_generator_to_the_dp_marginals(small_schema, small_table):
    codec = TableCodec(small_schema)
    torch.manual_seed(3)
    generator = Generator(codec, noise_dim=8, hidden=16)
    with torch.no_grad():  # make the generator strongly prefer 'east' and 'true'
        generator.head.bias[codec.spans[2].start + 2] += 4.0
        generator.head.bias[codec.spans[3].start + 1] += 4.0
    layout = schema_bins(small_schema, bins=16)
    marginals = Marginals.from_noisy_counts(layout, count(small_table, layout), noise_std=0.0)
    raw = codec.decode(generator.sample(5_000, generator=torch.Generator().manual_seed(0)).numpy())
    table, _ = calibrated_sample(generator, codec, marginals, rows=5_000, seed=0)
    validate_frame(table.astype({"age": float}), small_schema)
    target = small_table["region"].value_counts(normalize=True)
    assert abs(raw["region"].value_counts(normalize=True).get("east", 0) - target["east"]) > 0.3
    for name in target.index:
        assert abs(table["region"].value_counts(normalize=True)[name] - target[name]) < 0.03
    assert abs((table["smoker"] == "true").mean() - (small_table["smoker"] == "true").mean()) < 0.03
    assert ks_2samp(table["income"], small_table["income"]).statistic < 0.1


# --- two-way histograms in the same release ------------------------------------------------------


def _release_vector(frame, layout, pairs, weight=1.0):
    """The vector the Gaussian mechanism noises: one-way counts x weight, then the two-way counts."""
    return np.concatenate(
        [weight * h.ravel() for h in count(frame, layout)] + [h.ravel() for h in count_pairs(frame, pairs)]
    )


def test_pairs_parse_against_the_schema(small_schema):
    assert parse_pairs("", small_schema) == []
    assert parse_pairs("smoker:age, region:income", small_schema) == [(0, 3), (1, 2)]
    assert parse_pairs("smoker:*", small_schema) == [(0, 3), (1, 3), (2, 3)]
    assert len(parse_pairs("*:*", small_schema)) == 6
    assert parse_pairs("age:income,income:age", small_schema) == [(0, 1)]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("age:height", "names 'height', not a schema column"),
        ("age", "must be COLUMN:COLUMN"),
        ("age:income:region", "must be COLUMN:COLUMN"),
        ("age:age", "pairs column 'age' with itself"),
    ],
)
def test_bad_pairs_are_one_line_errors_naming_the_key(small_schema, spec, needle):
    with pytest.raises(ConfigError) as info:
        parse_pairs(spec, small_schema)
    message = str(info.value)
    assert "'measure-pairs'" in message and needle in message and "\n" not in message


def test_pair_bins_merge_one_way_bins(small_schema):
    layout = schema_bins(small_schema, bins=32)
    pair = pair_layout(layout, [(0, 2)], max_bins=8)[0]
    assert pair.shape == (1 + 8, 3)  # age: point bin + 8 merged intervals; region: its categories
    assert set(pair.first.edges) <= set(layout[0].edges)
    mapping = fine_to_coarse(layout[0], pair.first)
    assert mapping[0] == 0 and mapping.max() == 8 and np.all(np.diff(mapping) >= 0)
    frame = pd.DataFrame({"age": np.arange(0.0, 101.0), "region": ["north"] * 101})
    fine = count(frame, [layout[0]])[0]
    coarse = count_pairs(frame, [pair])[0].sum(axis=1)
    assert np.array_equal(np.bincount(mapping, fine, pair.shape[0]), coarse)  # coarse = merged fine, exactly


def test_one_row_moves_the_combined_release_by_exactly_sqrt_h(small_schema, small_table):
    layout = schema_bins(small_schema, bins=16)
    pairs = pair_layout(layout, parse_pairs("smoker:*,age:income", small_schema), max_bins=4)
    histograms = len(layout) + len(pairs)
    assert histograms == 4 + 4
    with_all = _release_vector(small_table, layout, pairs)
    for row in (0, 17, 399):
        without = _release_vector(small_table.drop(index=row), layout, pairs)
        assert np.linalg.norm(with_all - without) == pytest.approx(np.sqrt(histograms), abs=1e-12)
    assert histogram_noise_std(2.0, 4, 4) == pytest.approx((2.0 * np.sqrt(8), 2.0 * np.sqrt(8)))
    # Weighted one-way histograms: the sensitivity is sqrt(4 w^2 + 4), and dividing the noise of
    # that vector back by w gives the one-way counts' noise.
    weighted = _release_vector(small_table, layout, pairs, weight=2.5)
    for row in (0, 17, 399):
        without = _release_vector(small_table.drop(index=row), layout, pairs, weight=2.5)
        assert np.linalg.norm(weighted - without) == pytest.approx(np.sqrt(4 * 2.5**2 + 4), abs=1e-12)
    one_way, two_way = histogram_noise_std(2.0, 4, 4, weight=2.5)
    assert two_way == pytest.approx(2.0 * np.sqrt(4 * 2.5**2 + 4)) and one_way == pytest.approx(two_way / 2.5)
    # The noise multiplier (hence ε) is the budget's; pairs only spread it over more counts.
    budget = SiteBudget.plan(epsilon=1.0, delta=1e-5, sample_rate=0.05, planned_steps=50, accountant="rdp",
                             measure_fraction=0.5)  # fmt: skip
    budget.record_measurement()
    assert budget.spent == pytest.approx(epsilon_of([(budget.measure_noise, 1.0, 1)], 1e-5, "rdp"))
    noisy = add_noise(count(small_table, layout) + count_pairs(small_table, pairs), 3.0, NoiseSource.reproducible(0))
    exact = count(small_table, layout) + count_pairs(small_table, pairs)
    residual = np.concatenate([(n - c).ravel() for n, c in zip(noisy, exact, strict=True)])
    assert residual.size == with_all.size and abs(residual.std() - 3.0) < 0.3


def test_release_record_round_trips_and_rejects_a_bad_shape(small_schema, small_table):
    layout = schema_bins(small_schema, bins=8)
    pairs = pair_layout(layout, parse_pairs("region:smoker", small_schema), max_bins=4)
    counts = count(small_table, layout) + count_pairs(small_table, pairs)
    record = release_record(layout, pairs, counts)
    assert "pair:region|smoker" in record
    one_way, two_way = read_release(record, layout, pairs)
    assert all(np.array_equal(a, b) for a, b in zip(one_way + two_way, counts, strict=True))
    broken = release_record(layout, [], counts[: len(layout)])
    with pytest.raises(ValueError, match=re.escape("'pair:region|smoker' is missing")):
        read_release(broken, layout, pairs)


def test_pair_histograms_of_sites_sum_to_the_pooled_table(small_schema, small_table):
    layout = schema_bins(small_schema, bins=8)
    pairs = pair_layout(layout, parse_pairs("region:*", small_schema), max_bins=4)
    sites = [small_table.iloc[:100], small_table.iloc[100:250], small_table.iloc[250:]]
    releases = [release_record(layout, pairs, count(f, layout) + count_pairs(f, pairs)) for f in sites]
    summed = [np.zeros(p.shape) for p in pairs]
    for record in releases:
        for total, values in zip(summed, read_release(record, layout, pairs)[1], strict=True):
            total += values
    for total, pooled in zip(summed, count_pairs(small_table, pairs), strict=True):
        assert np.array_equal(total, pooled) and total.sum() == len(small_table)


def test_noisy_pair_tables_become_distributions_consistent_with_the_one_way_marginals(small_schema, small_table):
    layout = schema_bins(small_schema, bins=8)
    pairs = pair_layout(layout, parse_pairs("region:smoker", small_schema), max_bins=4)
    noisy = add_noise(count(small_table, layout) + count_pairs(small_table, pairs), 15.0, NoiseSource.reproducible(1))
    marginals = Marginals.from_noisy_counts(layout, noisy[:4], 15.0, pairs, noisy[4:], pair_bins=4)
    table = marginals.pairs[0].probabilities
    assert np.all(table >= 0) and table.sum() == pytest.approx(1.0)
    assert np.allclose(table.sum(axis=1), marginals.probabilities[2], atol=1e-8)
    assert np.allclose(table.sum(axis=0), marginals.probabilities[3], atol=1e-8)
    assert table.min() > 0  # no combination ruled out by the noise alone


def test_marginals_with_pairs_survive_the_state_round_trip(small_schema, small_table):
    layout = schema_bins(small_schema, bins=8)
    pairs = pair_layout(layout, parse_pairs("smoker:*", small_schema), max_bins=4)
    counts = count(small_table, layout) + count_pairs(small_table, pairs)
    marginals = Marginals.from_noisy_counts(layout, counts[:4], 0.0, pairs, counts[4:], pair_bins=4)
    restored = Marginals.from_state(small_schema, json.loads(json.dumps(marginals.to_state())), bins=8)
    assert [p.bins.key for p in restored.pairs] == [p.bins.key for p in marginals.pairs]
    assert restored.pair_bins == 4
    for a, b in zip(restored.pairs, marginals.pairs, strict=True):
        assert a.bins.shape == b.bins.shape and np.allclose(a.probabilities, b.probabilities)
    plain = Marginals.from_noisy_counts(layout, counts[:4], 0.0)
    assert "pairs" not in plain.to_state() and Marginals.from_state(small_schema, plain.to_state(), 8).pairs == []


def test_two_way_margins_sharpen_the_one_way_counts(small_schema, small_table):
    layout = schema_bins(small_schema, bins=32)
    pairs = pair_layout(layout, parse_pairs("region:*,smoker:*", small_schema), max_bins=4)
    exact = count(small_table, layout) + count_pairs(small_table, pairs)
    one_way, two_way = exact[: len(layout)], exact[len(layout) :]
    unchanged = pooled_one_way(layout, one_way, pairs, two_way)
    assert all(np.allclose(a, b) for a, b in zip(unchanged, one_way, strict=True))  # exact counts agree already
    rng = NoiseSource.reproducible(5)  # an estimator's accuracy, averaged over draws: reproducible is fine
    errors = {"one-way only": [], "pooled": []}
    for _ in range(200):
        noisy = add_noise(exact, 10.0, rng)
        pooled = pooled_one_way(layout, noisy[: len(layout)], pairs, noisy[len(layout) :])
        for label, estimate in (("one-way only", noisy[0]), ("pooled", pooled[0])):  # age: 32 fine bins -> 4
            coarse = np.bincount(fine_to_coarse(layout[0], pairs[0].first), estimate - one_way[0])
            errors[label].append(np.square(coarse).mean())
    assert np.mean(errors["pooled"]) < 0.5 * np.mean(errors["one-way only"])


def test_sharpening_weighs_noisier_pair_tables_less(small_schema, small_table):
    # A weighted release: one-way counts with noise 5, two-way counts with noise 40. The GLS
    # estimate told the true variance ratio (64) beats one that treats all counts alike.
    layout = schema_bins(small_schema, bins=32)
    pairs = pair_layout(layout, parse_pairs("region:*,smoker:*", small_schema), max_bins=4)
    one_way, two_way = count(small_table, layout), count_pairs(small_table, pairs)
    rng = NoiseSource.reproducible(6)
    errors = {"ratio 64": [], "ratio 1": []}
    for _ in range(200):
        noisy_one, noisy_two = add_noise(one_way, 5.0, rng), add_noise(two_way, 40.0, rng)
        for label, ratio in (("ratio 64", 64.0), ("ratio 1", 1.0)):
            pooled = pooled_one_way(layout, noisy_one, pairs, noisy_two, pair_variance_ratio=ratio)
            coarse = np.bincount(fine_to_coarse(layout[0], pairs[0].first), pooled[0] - one_way[0])
            errors[label].append(np.square(coarse).mean())
    assert np.mean(errors["ratio 64"]) < 0.5 * np.mean(errors["ratio 1"])


def test_auto_one_way_weight_balances_one_way_and_two_way_noise():
    # "auto" minimises sqrt(K w^2 + P) (1/w + 1), the noise on a one-way count plus that on a two-way one.
    assert one_way_weight("auto", 13, 78) == pytest.approx(6 ** (1 / 3))  # HI, every pair: 1.82
    grid = np.linspace(1.0, 4.0, 3001)
    total = np.sqrt(13 * grid**2 + 78) * (1 / grid + 1)
    assert grid[np.argmin(total)] == pytest.approx(6 ** (1 / 3), abs=1e-3)
    assert one_way_weight("auto", 15, 14) == 1.0  # MedExp, the target with every column: no weight
    assert one_way_weight("auto", 13, 0) == 1.0 and one_way_weight("2.5", 13, 78) == 2.5
