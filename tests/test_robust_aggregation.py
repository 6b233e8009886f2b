"""Robust aggregation of the packed G+D record and the norm-outlier rule, on handmade replies.

Values are known in advance (the median of 1, 2 and 100 is 2), and a poisoned
site's 1e4-scaled update must leave the robust rules near the honest mean while
plain FedAvg is pulled far away.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import pack, split, unpack
from fedsynth.strategies.factory import build_strategy
from fedsynth.strategies.gan_fedavg import (
    DISTANCE_KEY,
    GanFedAvg,
    decode_update,
    flatten,
    norm_outliers,
    unflatten,
)
from fedsynth.strategies.robust import (
    GanMedian,
    GanMultiKrum,
    GanTrimmedMean,
    coordinate_median,
    krum_scores,
    multi_krum_selection,
    trimmed_mean,
)
from fedsynth.tabular.codec import TableCodec
from tests.test_protocol import RAY_REASON

SHAPE_ARGS = {"noise_dim": 4, "generator_hidden": 8, "discriminator_hidden": 8}


def metadata(node: int) -> Metadata:
    return Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="m",
                    group_id="1", created_at=time.time(), ttl=60, message_type="train")  # fmt: skip


def failed(node: int, reason: str) -> Message:
    return Message(Error(code=1, reason=reason), metadata=metadata(node))


def reply(node: int, record: ArrayRecord, examples: int = 100) -> Message:
    meta = metadata(node)
    content = RecordDict(
        {
            "arrays": record,
            "metrics": MetricRecord({"num-examples": examples, "trained-steps": 5, "epsilon": 0.5}),
            "site": ConfigRecord({"name": f"site-{node}"}),
        }
    )
    return Message(content, metadata=meta)


def constant(record: ArrayRecord, value: float) -> ArrayRecord:
    return ArrayRecord({k: Array(np.full(v.numpy().shape, value, dtype=np.float32)) for k, v in record.items()})


def shifted(record: ArrayRecord, delta: np.ndarray) -> ArrayRecord:
    """``record`` plus a flat ``delta`` (same layout as ``flatten``)."""
    return unflatten(flatten(record, list(record.keys())) + delta, record)


def vector(record: ArrayRecord) -> np.ndarray:
    return flatten(record, list(record.keys()))


@pytest.fixture
def codec(small_schema):
    return TableCodec(small_schema)


@pytest.fixture
def global_record(codec):
    return pack(*build_gan(codec, GanShape(codec.dim, **SHAPE_ARGS), seed=3))


def prepared(strategy: GanFedAvg, global_record: ArrayRecord) -> GanFedAvg:
    strategy._global = global_record  # what configure_train records each round
    return strategy


def honest_deltas(size: int, count: int = 5, scale: float = 0.01, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, size) for _ in range(count)]


# --- the combination rules on plain numbers ----------------------------------------------------------


def test_coordinate_median_of_known_values():
    matrix = np.array([[1.0, 10.0], [2.0, -5.0], [100.0, 0.0]])
    assert coordinate_median(matrix).tolist() == [2.0, 0.0]


def test_trimmed_mean_cuts_each_end():
    column = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert trimmed_mean(column, 0.2).tolist() == [3.0]  # int(0.2 * 5) = 1 cut at each end: mean(2, 3, 4)
    assert trimmed_mean(column, 0.0).tolist() == [22.0]  # nothing cut: the plain mean
    assert trimmed_mean(column, 0.4).tolist() == [3.0]  # 2 cut at each end: the middle value
    with pytest.raises(ValueError):
        trimmed_mean(column, 0.5)


def test_krum_scores_and_selection_leave_out_the_far_row():
    matrix = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [50.0, 50.0]])
    scores = krum_scores(matrix, byzantine=1)
    assert int(np.argmax(scores)) == 5
    assert multi_krum_selection(matrix, byzantine=1) == [0, 1, 2, 3, 4]  # m = n - f = 5
    # f = 2: scores over the 2 nearest; the centre (0.5, 0.5) scores lowest, the far row highest.
    scores = krum_scores(matrix, byzantine=2)
    assert scores[4] == pytest.approx(1.0) and scores[0] == pytest.approx(1.5)
    chosen = multi_krum_selection(matrix, byzantine=2)  # m = n - f = 4
    assert len(chosen) == 4 and 4 in chosen and 5 not in chosen


def test_norm_outliers_rule():
    assert norm_outliers([1.0, 1.2, 0.9, 1000.0], factor=10.0) == [3]
    assert norm_outliers([1.0, 1.2, 0.9, 9.0], factor=10.0) == []  # within 10x the median
    assert norm_outliers([1.0, 1000.0], factor=10.0) == []  # fewer than 3 updates: no rule
    assert norm_outliers([1.0, 1.2, 1000.0], factor=0.0) == []  # 0 turns it off
    assert norm_outliers([0.0, 0.0, 5.0], factor=10.0) == []  # median 0: no scale to judge by


def test_flatten_unflatten_round_trip(global_record):
    back = unflatten(vector(global_record), global_record)
    assert list(back.keys()) == list(global_record.keys())
    for key, value in global_record.items():
        assert back[key].numpy().dtype == value.numpy().dtype
        assert np.array_equal(back[key].numpy(), value.numpy())


# --- the strategies on replies ----------------------------------------------------------------------


def test_median_strategy_takes_the_coordinate_median(global_record):
    strategy = prepared(GanMedian(outlier_factor=0), global_record)
    values = [(1, 1.0, 10), (2, 2.0, 10), (3, 100.0, 10_000)]  # weights do not move a median
    arrays, _ = strategy.aggregate_train(1, [reply(n, constant(global_record, v), e) for n, v, e in values])
    g_arrays, d_arrays = split(arrays)
    assert g_arrays and d_arrays
    assert all(np.allclose(v, 2.0) for v in list(g_arrays.values()) + list(d_arrays.values()))
    assert strategy.history[-1].aggregated == ["site-1", "site-2", "site-3"]


def test_trimmed_mean_strategy(global_record):
    strategy = prepared(GanTrimmedMean(trim_fraction=0.2, outlier_factor=0), global_record)
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    arrays, _ = strategy.aggregate_train(1, [reply(i + 1, constant(global_record, v)) for i, v in enumerate(values)])
    assert all(np.allclose(v.numpy(), 3.0) for v in arrays.values())


def test_krum_strategy_excludes_the_outlier_and_averages_the_rest(global_record):
    size = vector(global_record).size
    deltas = honest_deltas(size, count=5)
    records = [shifted(global_record, d) for d in deltas] + [shifted(global_record, np.full(size, 3.0))]
    strategy = prepared(GanMultiKrum(byzantine=1, outlier_factor=0), global_record)
    examples = [100, 200, 300, 400, 500, 600]
    replies = [reply(i + 1, r, e) for i, (r, e) in enumerate(zip(records, examples, strict=True))]
    arrays, _ = strategy.aggregate_train(1, replies)
    entry = strategy.history[-1]
    assert entry.aggregated == [f"site-{i}" for i in range(1, 6)]
    assert "site-6" in entry.rejected and "krum" in entry.rejected["site-6"]
    weights = np.array(examples[:5], dtype=float)
    expected = vector(global_record) + (weights @ np.stack(deltas)) / weights.sum()
    assert np.allclose(vector(arrays), expected, atol=1e-5)


def test_krum_with_too_few_updates_falls_back_to_the_median(global_record):
    strategy = prepared(GanMultiKrum(byzantine=1, outlier_factor=0), global_record)
    values = [1.0, 2.0, 100.0]  # n = 3 < 2f + 3 = 5
    arrays, _ = strategy.aggregate_train(1, [reply(i + 1, constant(global_record, v)) for i, v in enumerate(values)])
    assert all(np.allclose(v.numpy(), 2.0) for v in arrays.values())
    assert strategy.history[-1].rejected == {}


def test_norm_rule_rejects_a_1000x_update_and_keeps_the_normal_ones(global_record):
    size = vector(global_record).size
    deltas = honest_deltas(size, count=4)
    attack = 1000 * deltas[0]
    records = [shifted(global_record, d) for d in deltas] + [shifted(global_record, attack)]
    strategy = prepared(GanFedAvg(), global_record)  # default outlier-factor 10
    arrays, _ = strategy.aggregate_train(1, [reply(i + 1, r) for i, r in enumerate(records)])
    entry = strategy.history[-1]
    assert entry.aggregated == ["site-1", "site-2", "site-3", "site-4"]
    assert list(entry.rejected) == ["site-5"]
    reason = entry.rejected["site-5"]
    assert "norm outlier" in reason and "median" in reason and "outlier-factor 10" in reason
    assert entry.sites["site-5"][DISTANCE_KEY] == pytest.approx(np.linalg.norm(attack), rel=1e-4)
    assert all(entry.sites[f"site-{i}"][DISTANCE_KEY] > 0 for i in range(1, 5))
    assert np.allclose(vector(arrays), vector(global_record) + np.mean(deltas, axis=0), atol=1e-5)


def test_norm_rule_needs_three_updates_and_can_be_turned_off(global_record):
    size = vector(global_record).size
    deltas = honest_deltas(size, count=3)
    two = [shifted(global_record, deltas[0]), shifted(global_record, 1000 * deltas[1])]
    strategy = prepared(GanFedAvg(), global_record)
    strategy.aggregate_train(1, [reply(i + 1, r) for i, r in enumerate(two)])
    assert strategy.history[-1].rejected == {} and len(strategy.history[-1].aggregated) == 2
    three = [*two, shifted(global_record, deltas[2])]
    off = prepared(GanFedAvg(outlier_factor=0), global_record)
    off.aggregate_train(1, [reply(i + 1, r) for i, r in enumerate(three)])
    assert off.history[-1].rejected == {} and len(off.history[-1].aggregated) == 3


# --- a poisoned site -----------------------------------------------------------------------------------


def poisoned_round(global_record: ArrayRecord) -> tuple[list[Message], np.ndarray, float]:
    """5 honest updates around the global model and one scaled by 1e4 (finite: it passes the NaN checks)."""
    size = vector(global_record).size
    deltas = honest_deltas(size, count=5, seed=7)
    honest = [shifted(global_record, d) for d in deltas]
    poison = ArrayRecord({k: Array(v.numpy() * np.float32(1e4)) for k, v in honest[0].items()})
    assert all(np.all(np.isfinite(v.numpy())) for v in poison.values())
    replies = [reply(i + 1, r) for i, r in enumerate(honest)] + [reply(6, poison, examples=100)]
    honest_mean = np.mean([vector(r) for r in honest], axis=0)
    spread = max(float(np.linalg.norm(vector(r) - honest_mean)) for r in honest)
    return replies, honest_mean, spread


@pytest.mark.parametrize("aggregation", ["median", "trimmed-mean", "krum"])
def test_robust_rules_keep_the_model_sane_under_a_poisoned_site(global_record, codec, aggregation):
    replies, honest_mean, spread = poisoned_round(global_record)
    config = dataclasses.replace(RunConfig(), aggregation=aggregation, outlier_factor=0.0)  # the rule alone
    strategy = prepared(build_strategy(config), global_record)
    arrays, _ = strategy.aggregate_train(1, replies)
    distance = float(np.linalg.norm(vector(arrays) - honest_mean))
    assert distance <= spread, (aggregation, distance, spread)
    # Both networks load and produce finite output.
    generator, discriminator = build_gan(codec, GanShape(codec.dim, **SHAPE_ARGS))
    unpack(arrays, generator, discriminator)
    with torch.no_grad():
        fake = generator(torch.randn(16, SHAPE_ARGS["noise_dim"]))
        assert torch.isfinite(fake).all() and torch.isfinite(discriminator(fake)).all()


def test_plain_fedavg_is_pulled_away_by_the_poisoned_site_unless_the_norm_rule_is_on(global_record):
    replies, honest_mean, spread = poisoned_round(global_record)
    plain = prepared(build_strategy(dataclasses.replace(RunConfig(), outlier_factor=0.0)), global_record)
    arrays, _ = plain.aggregate_train(1, replies)
    assert float(np.linalg.norm(vector(arrays) - honest_mean)) > 1000 * spread
    assert "site-6" in plain.history[-1].aggregated

    replies, honest_mean, spread = poisoned_round(global_record)
    guarded = prepared(build_strategy(RunConfig()), global_record)  # fedavg with outlier-factor 10
    arrays, _ = guarded.aggregate_train(1, replies)
    assert float(np.linalg.norm(vector(arrays) - honest_mean)) < 1e-4
    assert "norm outlier" in guarded.history[-1].rejected["site-6"]


# --- configuration and factory ---------------------------------------------------------------------------


def test_factory_picks_the_strategy_the_config_names():
    base = RunConfig()
    assert type(build_strategy(base)) is GanFedAvg
    assert build_strategy(base).outlier_factor == 10.0
    assert type(build_strategy(dataclasses.replace(base, aggregation="median"))) is GanMedian
    trimmed = build_strategy(dataclasses.replace(base, aggregation="trimmed-mean", trim_fraction=0.3))
    assert type(trimmed) is GanTrimmedMean and trimmed.trim_fraction == 0.3
    krum = build_strategy(dataclasses.replace(base, aggregation="krum", krum_byzantine=2, outlier_factor=0.0))
    assert type(krum) is GanMultiKrum and krum.byzantine == 2 and krum.outlier_factor == 0.0


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"aggregation": "mean"}, "aggregation"),
        ({"trim-fraction": 0.5}, "trim-fraction"),
        ({"trim-fraction": -0.1}, "trim-fraction"),
        ({"krum-byzantine": -1}, "krum-byzantine"),
        ({"outlier-factor": 0.5}, "outlier-factor"),
        ({"outlier-factor": "inf"}, "outlier-factor"),
    ],
)
def test_bad_aggregation_settings_are_config_errors(mapping, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        RunConfig.from_mapping(mapping)


def test_updates_are_decoded_in_the_global_models_key_order(global_record):
    reordered = ArrayRecord({k: global_record[k] for k in reversed(list(global_record.keys()))})
    as_sent, _ = decode_update(reply(1, global_record), global_record)
    shuffled, reason = decode_update(reply(2, reordered), global_record)
    assert reason is None and np.array_equal(as_sent, shuffled) and np.array_equal(as_sent, vector(global_record))
    bad = ArrayRecord({**{k: global_record[k] for k in global_record}, "D.extra": Array(np.zeros(2))})
    assert decode_update(reply(3, bad), global_record)[0] is None


# --- failed replies (dropout bookkeeping) ------------------------------------------------------------


def test_a_failed_site_is_recorded_under_the_name_it_gave_before(global_record):
    strategy = prepared(GanFedAvg(), global_record)
    strategy.aggregate_train(1, [reply(1, constant(global_record, 1.0)), reply(2, constant(global_record, 1.0))])
    strategy.aggregate_train(2, [reply(1, constant(global_record, 1.0)), failed(2, RAY_REASON), failed(3, "gone")])
    entry = strategy.history[-1]
    assert entry.failed == {"site-2": "simulated failure of site-2 in round 3", "node-3": "gone"}
    assert entry.aggregated == ["site-1"]


def test_without_a_global_model_replies_in_another_key_order_still_line_up(global_record):
    # No configure_train yet: the first good reply sets the key order for the others.
    delta = np.linspace(-1.0, 1.0, vector(global_record).size)
    moved = shifted(global_record, delta)
    reordered = ArrayRecord({k: moved[k] for k in reversed(list(moved.keys()))})
    arrays, _ = GanFedAvg(outlier_factor=0).aggregate_train(1, [reply(1, global_record), reply(2, reordered)])
    assert np.allclose(vector(arrays), vector(global_record) + delta / 2, atol=1e-6)
