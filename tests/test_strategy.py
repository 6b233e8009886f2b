"""Packing G+D into one record and aggregating both, reply by reply."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict

from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import UpdateShapeError, pack, split, unpack
from fedsynth.strategies.gan_fedavg import GanFedAvg
from fedsynth.tabular.codec import TableCodec


def reply(node: int, record: ArrayRecord | None, examples: int = 100, trained: int = 5, name: str = "") -> Message:
    meta = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="m",
                    group_id="1", created_at=time.time(), ttl=60, message_type="train")  # fmt: skip
    if record is None:
        return Message(Error(code=1, reason="site crashed"), metadata=meta)
    content = RecordDict(
        {
            "arrays": record,
            "metrics": MetricRecord({"num-examples": examples, "trained-steps": trained, "epsilon": 0.5}),
            "site": ConfigRecord({"name": name or f"site-{node}"}),
        }
    )
    return Message(content, metadata=meta)


def scaled(record: ArrayRecord, factor: float) -> ArrayRecord:
    return ArrayRecord({k: Array(v.numpy() * 0 + factor) for k, v in record.items()})


@pytest.fixture
def global_record(small_schema):
    codec = TableCodec(small_schema)
    return pack(*build_gan(codec, GanShape(codec.dim, noise_dim=4, generator_hidden=8, discriminator_hidden=8)))


def strategy_with(global_record) -> GanFedAvg:
    strategy = GanFedAvg()
    strategy._global = global_record  # what configure_train records each round
    return strategy


def test_pack_holds_both_networks_and_unpacks_exactly(small_schema):
    codec = TableCodec(small_schema)
    shape = GanShape(codec.dim, noise_dim=4, generator_hidden=8, discriminator_hidden=8)
    gen, disc = build_gan(codec, shape, seed=1)
    record = pack(gen, disc)
    g_arrays, d_arrays = split(record)
    assert set(g_arrays) == set(gen.state_dict()) and set(d_arrays) == set(disc.state_dict())
    gen2, disc2 = build_gan(codec, shape, seed=2)
    unpack(record, gen2, disc2)
    for key, value in disc.state_dict().items():
        assert np.array_equal(value.numpy(), disc2.state_dict()[key].numpy())
    for key, value in gen.state_dict().items():
        assert np.array_equal(value.numpy(), gen2.state_dict()[key].numpy())


def test_unpack_rejects_wrong_shapes(small_schema):
    codec = TableCodec(small_schema)
    small = pack(*build_gan(codec, GanShape(codec.dim, noise_dim=4, generator_hidden=8, discriminator_hidden=8)))
    gen, disc = build_gan(codec, GanShape(codec.dim, noise_dim=4, generator_hidden=16, discriminator_hidden=8))
    with pytest.raises(UpdateShapeError, match="shape"):
        unpack(small, gen, disc)


def test_both_generator_and_discriminator_are_weighted_averages(global_record):
    strategy = strategy_with(global_record)
    arrays, _ = strategy.aggregate_train(
        1, [reply(1, scaled(global_record, 1.0), examples=100), reply(2, scaled(global_record, 4.0), examples=300)]
    )
    g_arrays, d_arrays = split(arrays)
    assert g_arrays and d_arrays
    for value in list(g_arrays.values()) + list(d_arrays.values()):
        assert np.allclose(value, (1.0 * 100 + 4.0 * 300) / 400)
    assert strategy.history[-1].aggregated == ["site-1", "site-2"]


def test_bad_replies_are_dropped_and_recorded(global_record):
    strategy = strategy_with(global_record)
    poisoned = scaled(global_record, 1.0)
    first_key = next(iter(poisoned.keys()))
    poisoned[first_key] = Array(np.full(poisoned[first_key].numpy().shape, np.nan, dtype=np.float32))
    missing = ArrayRecord({k: v for i, (k, v) in enumerate(scaled(global_record, 1.0).items()) if i > 0})
    arrays, _ = strategy.aggregate_train(
        1,
        [
            reply(1, scaled(global_record, 2.0)),
            reply(2, poisoned),
            reply(3, missing),
            reply(4, None),
            reply(5, scaled(global_record, 9.0), examples=0),
        ],
    )
    entry = strategy.history[-1]
    assert entry.aggregated == ["site-1"]
    assert "NaN" in entry.rejected["site-2"]
    assert "keys differ" in entry.rejected["site-3"]
    assert "num-examples" in entry.rejected["site-5"]
    assert entry.failed == {"node-4": "site crashed"}
    assert all(np.allclose(v.numpy(), 2.0) for v in arrays.values())


def test_sites_that_took_no_step_are_left_out(global_record):
    strategy = strategy_with(global_record)
    arrays, _ = strategy.aggregate_train(
        1, [reply(1, scaled(global_record, 3.0), trained=5), reply(2, scaled(global_record, 0.0), trained=0)]
    )
    assert strategy.history[-1].idle == ["site-2"]
    assert all(np.allclose(v.numpy(), 3.0) for v in arrays.values())


def test_no_usable_reply_keeps_the_global_model(global_record):
    strategy = strategy_with(global_record)
    arrays, metrics = strategy.aggregate_train(1, [reply(1, None), reply(2, scaled(global_record, 1.0), trained=0)])
    assert arrays is None and metrics is None


def test_latest_site_metrics_follow_the_last_round(global_record):
    strategy = strategy_with(global_record)
    strategy.aggregate_train(1, [reply(1, scaled(global_record, 1.0))])
    strategy.aggregate_train(2, [reply(1, scaled(global_record, 1.0), examples=50)])
    assert strategy.latest_site_metrics()["site-1"]["num-examples"] == 50


def test_float16_transfer_halves_the_update_and_unpacks_to_float32(small_schema):
    codec = TableCodec(small_schema)
    shape = GanShape(codec.dim)  # default sizes: the arrays, not the per-array overhead, dominate
    gen, disc = build_gan(codec, shape, seed=1)
    full, half = pack(gen, disc), pack(gen, disc, "float16")
    assert half.count_bytes() < 0.6 * full.count_bytes()
    gen2, disc2 = build_gan(codec, shape, seed=2)
    unpack(half, gen2, disc2)
    for key, value in gen.state_dict().items():
        restored = gen2.state_dict()[key]
        assert restored.dtype == value.dtype
        assert np.allclose(restored.numpy(), value.numpy(), rtol=1e-3, atol=1e-4)
