"""Client-level DP: joint clipping of each site's G+D update, noise, and the ε reported for it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedsynth.core.config import RunConfig
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import pack
from fedsynth.protocol.messages import UNIT_WEIGHT_KEY
from fedsynth.strategies.client_dp import GanClientDP, client_level_epsilon
from fedsynth.strategies.factory import build_strategy
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import dump_schema
from tests.test_strategy import reply

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")


def independent_rdp_epsilon(z: float, rounds: int, delta: float) -> float:
    """The Gaussian mechanism's RDP (alpha / 2z^2 per round, Mironov 2017), converted to (ε, δ) with the
    bound of Balle et al. 2020, minimised over a fine grid of orders. Written without Opacus."""
    best = math.inf
    for alpha in np.concatenate([np.linspace(1.01, 10, 2000), np.linspace(10, 256, 4000)]):
        rdp = rounds * alpha / (2 * z * z)
        eps = rdp + math.log((alpha - 1) / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        best = min(best, eps)
    return best


@pytest.mark.parametrize(("z", "rounds"), [(1.0, 2), (2.0, 10), (5.0, 50)])
def test_reported_epsilon_matches_an_independent_accountant(z, rounds):
    ours = client_level_epsilon(z, rounds, 1e-5)
    theirs = independent_rdp_epsilon(z, rounds, 1e-5)
    # Opacus evaluates a coarser grid of orders, so it may only be slightly looser, never tighter.
    assert theirs - 1e-6 <= ours <= theirs * 1.03


def _global(small_schema) -> ArrayRecord:
    codec = TableCodec(small_schema)
    return pack(*build_gan(codec, GanShape(codec.dim, noise_dim=4, generator_hidden=8, discriminator_hidden=8)))


def _shifted(record: ArrayRecord, by: float) -> ArrayRecord:
    return ArrayRecord({k: Array(v.numpy() + by) for k, v in record.items()})


def _norm(a: ArrayRecord, b: ArrayRecord) -> float:
    return math.sqrt(sum(float(((a[k].numpy() - b[k].numpy()) ** 2).sum()) for k in a))


def _unit_reply(node: int, record: ArrayRecord, examples: int):
    msg = reply(node, record, examples=examples)
    msg.content.metric_records["metrics"][UNIT_WEIGHT_KEY] = 1
    return msg


def _strategy(config: RunConfig, sites: int, start: ArrayRecord) -> GanClientDP:
    dp = build_strategy(config)
    assert isinstance(dp, GanClientDP)
    dp.admit(sites)
    dp._global = start
    return dp


def test_updates_are_clipped_jointly_and_weighted_equally(small_schema):
    config = RunConfig(client_dp_noise=1e-12, client_dp_clip=0.5)
    start = _global(small_schema)
    dp = _strategy(config, 2, start)
    far = [_unit_reply(1, _shifted(start, 3.0), 10), _unit_reply(2, _shifted(start, 3.0), 1000)]
    arrays, _ = dp.aggregate_train(1, far)
    # Both updates point the same way and are clipped to 0.5 over G and D together: the mean moves 0.5.
    assert _norm(arrays, start) == pytest.approx(0.5, rel=1e-4)
    assert dp.history[-1].aggregated == ["site-1", "site-2"]


def test_the_divisor_is_the_public_m_not_the_updates_received(small_schema):
    # One of four admitted sites trains: the sum holds one clipped update and is still divided by 4,
    # so no single site can move the model by more than C/m.
    config = RunConfig(client_dp_noise=1e-12, client_dp_clip=0.5)
    start = _global(small_schema)
    dp = _strategy(config, 4, start)
    arrays, _ = dp.aggregate_train(1, [_unit_reply(1, _shifted(start, 3.0), 10)])
    assert _norm(arrays, start) == pytest.approx(0.5 / 4, rel=1e-4)


def test_noise_has_std_z_c_over_m_and_is_secret(small_schema):
    config = RunConfig(client_dp_noise=2.0, client_dp_clip=0.5)
    start = _global(small_schema)
    moved = _shifted(start, 1e-4)  # a tiny update, well inside the clipping norm
    draws = []
    for _ in range(2):
        dp = _strategy(config, 4, start)
        arrays, _ = dp.aggregate_train(1, [_unit_reply(i, moved, 10) for i in range(1, 5)])
        draws.append(np.concatenate([(arrays[k].numpy() - moved[k].numpy()).ravel() for k in start]))
    # The sample std of n Gaussian draws has relative standard error about 1/sqrt(2n): allow 5 of them.
    # A wrong scale (z*C, or /sqrt(m)) is off by 2x or more.
    assert draws[0].std() == pytest.approx(2.0 * 0.5 / 4, rel=5 / math.sqrt(2 * draws[0].size))
    assert not np.allclose(draws[0], draws[1])  # same seed, same round: different noise


@pytest.mark.e2e
def test_short_federation_reports_client_level_epsilon(tmp_path, small_schema, small_table):
    data, schema_path, out = tmp_path / "t.csv", tmp_path / "t.yaml", tmp_path / "run"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema_path), "--partition", "iid",
         "--clients", "3", "--rounds", "3", "--local-steps", "3", "--out", str(out),
         "--set", "batch-size=32", "--set", "client-dp-noise=1.5", "--set", "client-dp-clip=0.5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    privacy = json.loads((out / "report.json").read_text())["privacy"]
    client = privacy["client_level"]
    assert client["unit"] == "site" and client["releases"] == 3 and client["sites_per_round"] == 3
    assert client["epsilon"] == pytest.approx(independent_rdp_epsilon(1.5, 3, 1e-5), rel=0.03)
    assert privacy["unit"] == "record"  # the record-level guarantee per site is still reported beside it
