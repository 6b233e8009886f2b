"""Secure aggregation (SecAgg+): the site-side adapter, the server's round log, and a real federation
in which the server never receives an individual update yet gets the same mean as plain FedAvg."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres

from fedsynth.client.secure_aggregation import (
    UnsafeUpdateError,
    _legacy_content,
    _native_content,
    secure_aggregation_mod,
)
from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import pack
from fedsynth.protocol.messages import SECAGG_KEYS_FIELD as KEYS_FIELD
from fedsynth.protocol.messages import SECURE_METRICS_RECORD, SECURE_SUM_SITES_FIELD
from fedsynth.server.checkpoints import load_checkpoint
from fedsynth.server.secure_round import CLIPPING_RANGE, MAX_SITES, QUANTIZATION_RANGE, check_site_count
from fedsynth.simulations.setup import prepare_simulation
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import dump_schema
from tests.test_strategy import reply, strategy_with

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")


@pytest.fixture
def model(small_schema) -> ArrayRecord:
    codec = TableCodec(small_schema)
    return pack(*build_gan(codec, GanShape(codec.dim, noise_dim=4, generator_hidden=8, discriminator_hidden=8)))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"aggregation": "median"}, "aggregation"),
        ({"client-dp-noise": 1.0}, "client-dp-noise"),
        ({"transfer-dtype": "float16"}, "transfer-dtype"),
    ],
)
def test_secure_aggregation_refuses_what_needs_individual_updates(override, field):
    with pytest.raises(ConfigError, match=f"'{field}'.*secure-aggregation"):
        RunConfig.from_mapping({"secure-aggregation": True, **override})


def _sent(record: ArrayRecord) -> RecordDict:
    keys = list(record.keys())
    parameters = ndarrays_to_parameters([record[k].numpy() for k in keys])
    config = {"server-round": 3, "schema-yaml": "columns: []", KEYS_FIELD: json.dumps(keys)}
    return fitins_to_recorddict(FitIns(parameters, config), keep_input=True)


def test_legacy_instructions_become_the_handlers_own_message(model):
    native = _native_content(_sent(model), threshold=2)
    assert list(native["arrays"].keys()) == list(model.keys())
    for key, array in model.items():
        np.testing.assert_array_equal(native["arrays"][key].numpy(), array.numpy())
    assert native["config"]["server-round"] == 3 and KEYS_FIELD not in native["config"]
    assert native["config"][SECURE_SUM_SITES_FIELD] == 2  # the mod's own SecAgg+ threshold, for noise shares


def _handler_reply(record: ArrayRecord, trained: int = 5) -> RecordDict:
    return RecordDict(
        {
            "arrays": record,
            "metrics": MetricRecord({"num-examples": 120, "trained-steps": trained, "epsilon": 0.4}),
            "site": ConfigRecord({"name": "north", "budget": "{}"}),
        }
    )


def test_reply_becomes_a_fitres_in_the_servers_key_order(model):
    reversed_record = ArrayRecord({k: model[k] for k in reversed(list(model.keys()))})
    out = _legacy_content(_handler_reply(reversed_record), list(model.keys()), 1.0, CLIPPING_RANGE)
    fitres = recorddict_to_fitres(out, keep_input=True)
    values = parameters_to_ndarrays(fitres.parameters)
    for value, key in zip(values, model.keys(), strict=True):
        np.testing.assert_array_equal(value, model[key].numpy())
        assert value.dtype == np.float64  # quantised exactly by Flower
    assert fitres.num_examples == 120 and fitres.metrics["epsilon"] == 0.4
    assert out.config_records["site"]["name"] == "north"


def test_a_site_that_took_no_step_enters_the_sum_with_weight_zero(model):
    out = _legacy_content(_handler_reply(model, trained=0), list(model.keys()), 1.0, CLIPPING_RANGE)
    assert recorddict_to_fitres(out, keep_input=True).num_examples == 0


def test_a_non_finite_update_never_enters_the_sum(model):
    broken = ArrayRecord({k: Array(v.numpy() * np.nan) for k, v in model.items()})
    with pytest.raises(UnsafeUpdateError):
        _legacy_content(_handler_reply(broken), list(model.keys()), 1.0, CLIPPING_RANGE)


def test_ordinary_train_messages_pass_through_untouched(model):
    msg = reply(1, model)
    seen = []
    out = secure_aggregation_mod(msg, None, lambda m, c: seen.append(m) or m)
    assert seen == [msg] and out is msg


def _secure_reply(node: int, trained: int = 5, name: str = "") -> Message:
    msg = reply(node, None) if trained < 0 else reply(node, ArrayRecord(), trained=trained, name=name)
    if msg.has_content():
        content = RecordDict({"site": msg.content["site"]})
        content.config_records[SECURE_METRICS_RECORD] = ConfigRecord(dict(msg.content["metrics"]))
        msg.content = content
    return msg


def test_round_log_of_a_secure_round(model):
    strategy = strategy_with(model)
    strategy._sampled = [1, 2, 3, 4]
    replies = [_secure_reply(1), _secure_reply(2, trained=0), _secure_reply(3, trained=-1)]
    mean = strategy.record_secure_round(7, replies, model)
    entry = strategy.history[-1]
    assert mean is model
    assert entry.aggregated == ["site-1"] and entry.idle == ["site-2"]
    assert list(entry.failed) == ["node-3"] and entry.missing == ["node-4"]
    assert entry.sites["site-1"]["epsilon"] == 0.5


def test_a_non_finite_secure_sum_is_rejected(model):
    strategy = strategy_with(model)
    strategy._sampled = [1]
    poisoned = ArrayRecord({k: Array(np.full_like(v.numpy(), np.inf)) for k, v in model.items()})
    assert strategy.record_secure_round(1, [_secure_reply(1)], poisoned) is None
    assert strategy.history[-1].rejected == {"secure sum": "holds NaN or Inf"}


def _simulate(tmp_path: Path, name: str, data: Path, schema: Path, *extra: str) -> Path:
    out = tmp_path / name
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema), "--partition", "iid",
         "--clients", "3", "--rounds", "2", "--local-steps", "3", "--out", str(out),
         "--set", "batch-size=32", "--set", "calibrate=false", "--set", "reproducible-noise=true", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.mark.e2e
def test_server_learns_only_the_mean_and_it_matches_plain_fedavg(tmp_path, small_schema, small_table):
    data, schema = tmp_path / "t.csv", tmp_path / "t.yaml"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema)
    plain = _simulate(tmp_path, "plain", data, schema)
    secure = _simulate(tmp_path, "secure", data, schema, "--set", "secure-aggregation=true")

    report = json.loads((secure / "report.json").read_text())
    section = report["secure_aggregation"]
    # Every reply the server received carried no plain array: the updates came only as masked vectors.
    assert section["plain_array_elements_received"] == 0
    assert [r["sites_in_sum"] for r in section["rounds"]] == [3, 3]
    # The legacy strategy behind the workflow saw one unmasked vector per round, never three.
    assert [r["distinct_updates_seen_by_strategy"] for r in section["rounds"]] == [1, 1]

    # Same seeds, same site updates: the unmasked mean equals plain FedAvg's up to SecAgg+'s quantisation.
    first = section["rounds"][0]
    weights = sum(site["num_examples"] for site in report["privacy"]["sites"].values())  # the sites' DP row counts
    bound = 3 * (2 * CLIPPING_RANGE / QUANTIZATION_RANGE) * first["max_weight"] / weights + 1e-6
    a = load_checkpoint(plain / "checkpoints" / "round-001.pt")["record"]
    b = load_checkpoint(secure / "checkpoints" / "round-001.pt")["record"]
    gap = max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a)
    assert 0 < gap <= bound

    # The selection rounds' counts came only as secure sums (both runs: secure-measurement is the default),
    # each site adding a share of the noise; the report says what the ε rests on and what it would be otherwise.
    selection = report["privacy"]["measurement"]["selection"]
    assert selection["secure_sums"] and all(r["plain_array_elements_received"] == 0 for r in selection["secure_sums"])
    assert all(r["noise_shares"] == [2, 2, 2] for r in selection["secure_sums"])  # threshold ceil(2/3 * 3)
    assert "distributed_noise" in report["privacy"]
    assert all(s["epsilon_if_secure_sums_opened"] > s["epsilon"] for s in report["privacy"]["sites"].values())

    # Record-level accounting is untouched: every site spent the same ε as in the plain run.
    plain_eps = json.loads((plain / "report.json").read_text())["privacy"]["sites"]
    secure_eps = report["privacy"]["sites"]
    assert {n: s["epsilon"] for n, s in plain_eps.items()} == {n: s["epsilon"] for n, s in secure_eps.items()}


def test_a_secure_sum_over_more_sites_than_the_modulus_holds_is_refused_before_flower_starts(tmp_path):
    # 2^32 / 2^26 = 64 quantised updates fit in the modulus; a 65th would wrap the sum around silently.
    check_site_count(MAX_SITES)
    with pytest.raises(ConfigError, match="at most 64 sites"):
        check_site_count(MAX_SITES + 1)
    table = pd.DataFrame({"x": np.linspace(0, 1, 65 * 12)})
    (tmp_path / "t.csv").write_text(table.to_csv(index=False))
    (tmp_path / "t.yaml").write_text("columns:\n  - {name: x, type: continuous, min: 0, max: 1}\n")
    config = RunConfig(data=str(tmp_path / "t.csv"), schema=str(tmp_path / "t.yaml"), partition="iid", clients=65,
                       secure_aggregation=True, transfer_dtype="float32", out=str(tmp_path / "out"))  # fmt: skip
    with pytest.raises(ConfigError, match="this federation has 65"):
        prepare_simulation(config, echo=lambda _line: None)
