"""Distributed noise under SecAgg+: noise shares, their accounting, exact secure sums of counts, and the
site-side guard that only the site's own secure-aggregation mod can ask it to add a share."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import parameters_to_ndarrays
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.compat.common.recorddict_compat import recorddict_to_fitres

from fedsynth.client.client_app import NodeConfigError, _shares_allowed
from fedsynth.client.secure_aggregation import UnsafeUpdateError, _legacy_content, secure_aggregation_mod
from fedsynth.marginals.release import add_noise
from fedsynth.privacy.budget import SiteBudget, epsilon_of
from fedsynth.privacy.distributed_noise import MAX_SUM_GAP, noise_shares, secure_sum_shares, sum_gap
from fedsynth.privacy.ledger import budget_from_json, budget_to_json
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.protocol.messages import SECURE_SUM_SITES_FIELD
from fedsynth.server.secure_round import CLIPPING_RANGE, COUNT_SCALE, QUANTIZATION_RANGE, RECONSTRUCTION_SHARE
from tests.test_strategy import reply


def test_secure_sum_holds_at_least_the_secagg_threshold_of_sites():
    assert [secure_sum_shares(k, RECONSTRUCTION_SHARE) for k in (1, 2, 3, 4, 16)] == [1, 2, 2, 3, 11]


def test_noise_is_split_only_while_the_sum_stays_a_discrete_gaussian():
    assert sum_gap(5.0, 1, 1000) == 0.0
    assert sum_gap(0.5, 3, 10) > sum_gap(1.0, 3, 10) > sum_gap(2.0, 3, 10)
    assert noise_shares(30.0, 3, 10_000) == 3  # share std 17: the gap is far below MAX_SUM_GAP
    assert noise_shares(30.0, 1, 10_000) == 1
    assert noise_shares(0.8, 3, 10_000) == 1  # shares of std < 0.5 would not sum to a discrete Gaussian
    shares = noise_shares(3.0, 11, 10_000)
    assert 1 < shares < 11 and sum_gap(3.0 / math.sqrt(shares), shares, 10_000) <= MAX_SUM_GAP


def test_shares_of_the_secret_discrete_gaussian_sum_to_the_planned_variance():
    total_std, shares, draws = 12.0, 3, 20_000
    source = NoiseSource.secret_source()
    parts = [add_noise([np.zeros(draws)], total_std / math.sqrt(shares), source)[0] for _ in range(shares)]
    summed = np.sum(parts, axis=0)
    assert np.all(summed == np.rint(summed))  # integers: the sum of discrete Gaussians
    # Variance of 20,000 draws: standard error about 1% of 144.
    assert abs(summed.var() / total_std**2 - 1.0) < 0.05
    assert abs(parts[0].var() / (total_std**2 / shares) - 1.0) < 0.05


def test_a_shared_release_is_charged_at_the_sums_noise_and_reported_as_if_opened():
    plain = SiteBudget(1.0, 1e-5, "rdp", 1.0, 0.01, 100, measure_noise=4.0)
    shared = SiteBudget(1.0, 1e-5, "rdp", 1.0, 0.01, 100, measure_noise=4.0)
    plain.record_measurement(8.0)
    shared.record_measurement(8.0, shares=3)
    assert shared.spent == plain.spent and shared.measure_spent == plain.measure_spent
    assert plain.spent_if_sum_opened == plain.spent
    assert shared.spent_if_sum_opened == pytest.approx(epsilon_of([(8.0 / math.sqrt(3), 1.0, 1)], 1e-5, "rdp"))
    assert shared.spent_if_sum_opened > shared.spent
    restored = budget_from_json(budget_to_json(shared))  # the ledger keeps the split across a resume
    assert restored.shared_noise == [(8.0, 3)] and restored.spent_if_sum_opened == shared.spent_if_sum_opened


def test_the_coordinator_cannot_ask_a_site_for_a_noise_share_in_a_plain_message():
    msg = reply(1, ArrayRecord())
    msg.content["config"] = ConfigRecord({"purpose": "select", SECURE_SUM_SITES_FIELD: 64})
    seen = []
    secure_aggregation_mod(msg, None, lambda m, c: seen.append(dict(m.content["config"])) or m)
    assert seen == [{"purpose": "select"}]  # the forged threshold never reaches the handler


def _count_reply(counts: dict[str, np.ndarray]) -> RecordDict:
    return RecordDict(
        {
            "histograms": ArrayRecord({k: Array(v) for k, v in counts.items()}),
            "metrics": MetricRecord({"vote": 2, "noise-std": 7.0, "num-examples": 1}),
            "site": ConfigRecord({"name": "north"}),
        }
    )


def test_counts_enter_the_secure_sum_scaled_onto_quantisation_levels():
    counts = {"clique:a|b": np.array([3.0, -2.0, 1000.0]), "clique:c|d": np.array([0.0, 5.0])}
    out = _legacy_content(_count_reply(counts), ["clique:c|d", "clique:a|b"], COUNT_SCALE, CLIPPING_RANGE)
    fitres = recorddict_to_fitres(out, keep_input=True)
    values = parameters_to_ndarrays(fitres.parameters)
    np.testing.assert_array_equal(values[0], counts["clique:c|d"] * COUNT_SCALE)
    np.testing.assert_array_equal(values[1], counts["clique:a|b"] * COUNT_SCALE)
    assert fitres.num_examples == 1 and fitres.metrics["vote"] == 2  # weight 1; the vote travels in the clear
    too_large = {"clique:a|b": np.array([9.0 / COUNT_SCALE])}
    with pytest.raises(UnsafeUpdateError, match="too large"):
        _legacy_content(_count_reply(too_large), ["clique:a|b"], COUNT_SCALE, CLIPPING_RANGE)


def test_the_secure_sum_of_noisy_counts_is_exact():
    # Flower's own quantisation and the workflow's dequantisation, as in SecAggPlusWorkflow: every count
    # lands on a level (no stochastic rounding), so the unmasked mean times the sites is the exact sum.
    rng = np.random.default_rng(0)
    sites = [rng.integers(-5_000, 8_000_000, size=200).astype(float) for _ in range(5)]
    quantised = [quantize([s * COUNT_SCALE], CLIPPING_RANGE, QUANTIZATION_RANGE)[0] for s in sites]
    assert all(np.array_equal(q, (s * COUNT_SCALE + CLIPPING_RANGE) * (QUANTIZATION_RANGE / (2 * CLIPPING_RANGE)))
               for q, s in zip(quantised, sites, strict=True))  # fmt: skip
    summed = np.sum([q.astype(np.int64) for q in quantised], axis=0)
    mean = dequantize([summed], CLIPPING_RANGE, QUANTIZATION_RANGE)[0] - (len(sites) - 1) * CLIPPING_RANGE
    mean /= len(sites)
    np.testing.assert_array_equal(np.rint(mean * len(sites) / COUNT_SCALE), np.sum(sites, axis=0))


def test_a_site_caps_the_shares_it_counts_on_in_its_own_node_config():
    def context(node_config: dict) -> Context:
        return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})

    assert _shares_allowed(context({}), 3) == 3
    assert _shares_allowed(context({"max-noise-shares": 1}), 3) == 1  # this site adds all of its noise itself
    assert _shares_allowed(context({"max-noise-shares": 8}), 3) == 3  # a cap never raises the threshold
    for bad in (0, "two"):
        with pytest.raises(NodeConfigError, match="max-noise-shares"):
            _shares_allowed(context({"max-noise-shares": bad}), 3)
