"""DP histograms, the marginals built from them, and calibration to them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import ks_2samp

from models.gan import Generator
from privacy.budget import SiteBudget, epsilon_of
from privacy.histograms import Marginals, add_noise, column_bins, count, release_noise_std, schema_bins
from server.calibration import calibrated_sample
from tabular.codec import TableCodec
from tabular.schema import parse_schema
from tabular.table import validate_frame


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
    assert release_noise_std(2.0, 9) == 6.0  # L2 sensitivity sqrt(9 columns)


def test_noise_has_the_stated_scale():
    rng = np.random.default_rng(0)
    noisy = add_noise([np.zeros(20_000)], 3.0, rng)[0]
    assert abs(noisy.std() - 3.0) < 0.1


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


def test_bins_under_the_noise_level_are_dropped(small_schema, small_table):
    layout = schema_bins(small_schema, bins=16)
    sums = count(small_table, layout)
    marginals = Marginals.from_noisy_counts(layout, sums, noise_std=50.0)
    region = marginals.probabilities[2]  # counts ~200/120/80: east (80) is below 2 * 50
    assert region[2] == 0.0 and region[0] > 0 and abs(region.sum() - 1) < 1e-12


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
    table = calibrated_sample(generator, codec, marginals, rows=5_000, seed=0)
    validate_frame(table.astype({"age": float}), small_schema)
    target = small_table["region"].value_counts(normalize=True)
    assert abs(raw["region"].value_counts(normalize=True).get("east", 0) - target["east"]) > 0.3
    for name in target.index:
        assert abs(table["region"].value_counts(normalize=True)[name] - target[name]) < 0.03
    assert abs((table["smoker"] == "true").mean() - (small_table["smoker"] == "true").mean()) < 0.03
    assert ks_2samp(table["income"], small_table["income"]).statistic < 0.1
