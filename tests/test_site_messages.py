"""What leaves a site: every reply of the site's handlers, run in-process, against docs/privacy.md's list.

The handlers run with a deployed site's node config (its own CSV and ledger), on the messages the
coordinator sends: the measurement query, a training round and the release check. Every record and
key a reply carries must be on the list below, and the list must be the one docs/privacy.md gives a
privacy officer. Values that could be private are checked to be what the doc says they are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from fedsynth.client import client_app
from fedsynth.core.config import RunConfig
from fedsynth.marginals.bins import schema_bins
from fedsynth.marginals.cliques import model_layout, parse_cliques
from fedsynth.marginals.estimate import estimate_rows
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import pack
from fedsynth.privacy.measurement_schedule import MeasurementSchedule
from fedsynth.protocol.messages import (
    LEDGERS_KEY,
    POLICY_KEY,
    PURPOSE_KEY,
    SCHEMA_KEY,
    SYNTHETIC_KEY,
    THRESHOLD_KEY,
    FailureCode,
    SiteFailure,
    read_failure,
)
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import dump_schema_text

DOC = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"

# record -> keys a site may send in it (docs/privacy.md, "What a site sends").
ALLOWED = {
    "measure": {
        "histograms": {"age", "income", "region", "smoker"},
        "metrics": {"noise-std", "pair-noise-std", "epsilon", "num-examples"},
        "site": {"name", "jurisdiction", "accountant", "budget"},
    },
    "select": {
        # ``clique:A|B[|C[|D]]``, one per clique asked for, and ``one-way:C`` when asked: checked by the test
        "histograms": None,
        "metrics": {"vote", "noise-std", "one-way-noise-std", "noise-shares", "num-examples", "epsilon"},
        "site": {"name", "jurisdiction", "accountant", "budget"},
    },
    "train": {
        "arrays": None,  # the packed model: checked by its keys against the model's own
        "metrics": {
            "num-examples",
            "unit-weight",
            "trained-steps",
            "steps",
            "max-steps",
            "epsilon",
            "epsilon-budget",
            "delta",
            "noise-multiplier",
            "sample-rate",
            "budget-exhausted",
            "loss-discriminator-fake",
            "loss-generator",
        },
        "site": {"name", "jurisdiction", "accountant", "budget"},
    },
    "release-check": {
        "counts": {
            "synthetic_rows",
            "columns_compared",
            "distance_threshold",
            "copied_noisy",
            "close_noisy",
            "noise_std",
        },
        "site": {"name", "jurisdiction", "accountant", "budget"},
    },
    "feedback": {
        "metrics": {
            *(f"sum:distance:{column}" for column in ("age", "income", "region", "smoker")),
            "sum:covered",
            "noise-std",
            "public-rows",
            "epsilon",
        },
        "site": {"name", "jurisdiction", "accountant", "budget"},
    },
}


def refused(reply: Message, match: str) -> SiteFailure:
    """The reply is a structured failure (a code and a public reason, no content) whose reason says ``match``."""
    assert reply.has_error() and not reply.has_content()
    failure = read_failure(reply)
    assert failure.code >= FailureCode.REFUSED and match in failure.reason, failure
    return failure


def keys_of(reply: Message) -> dict[str, set[str]]:
    content = reply.content
    out: dict[str, set[str]] = {}
    for name, record in [*content.array_records.items(), *content.metric_records.items(),
                         *content.config_records.items()]:  # fmt: skip
        out[name] = set(record.keys())
    return out


def check_reply(kind: str, reply: Message, model_keys: set[str] | None = None) -> None:
    assert not reply.has_error(), reply.error
    sent = keys_of(reply)
    assert set(sent) == set(ALLOWED[kind]), f"{kind}: records {set(sent)} not on the list"
    for record, keys in sent.items():
        if kind == "select" and record == "histograms":  # the cliques asked for; checked by the test
            assert all(key.startswith(("clique:", "one-way:")) for key in keys), keys
            continue
        allowed = model_keys if ALLOWED[kind][record] is None else ALLOWED[kind][record]
        assert keys <= allowed, f"{kind}/{record}: {keys - allowed} not on the list in docs/privacy.md"


@pytest.fixture
def site(tmp_path, small_schema, small_table):
    data = tmp_path / "site.csv"
    small_table.to_csv(data, index=False)
    config = RunConfig(data=str(data), rounds=1, local_steps=3, batch_size=32, epsilon=2.0, calibrate=True)
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"data-path": str(data), "site": "a", "ledger": str(tmp_path / "ledger.json")},
        state=RecordDict(),
        run_config=config.to_mapping(),
    )
    return context, config, small_schema, small_table, dump_schema_text(small_schema)


def request(kind: str, fields: dict, **records) -> Message:
    content = RecordDict({"config": ConfigRecord(fields), **records})
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                    group_id="1", created_at=time.time(), ttl=60, message_type=kind)  # fmt: skip
    return Message(content, metadata=meta)


def test_the_doc_lists_every_key_a_site_may_send():
    text = DOC.read_text(encoding="utf-8")
    for kind, records in ALLOWED.items():
        for record, keys in records.items():
            assert f"`{record}`" in text, f"docs/privacy.md does not name the {kind} record {record!r}"
            for key in sorted(keys or ()):
                if record == "histograms":  # those are the schema's column names
                    continue
                key = "sum:distance:<column>" if key.startswith("sum:distance:") else key
                assert f"`{key}`" in text, f"docs/privacy.md does not list {kind}/{record}/{key}"


def test_every_reply_carries_only_listed_keys_and_only_dp_values(site):
    context, config, schema, table, schema_text = site
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}

    measured = client_app.measure(request("query", base), context)
    check_reply("measure", measured)
    metrics = measured.content.metric_records["metrics"]
    released = measured.content.array_records["histograms"]
    one_way = [released[c].numpy() for c in ("age", "income", "region", "smoker")]
    assert all(np.array_equal(h, np.round(h)) for h in one_way)  # integer (discrete Gaussian) counts
    # The row count a site reports is post-processing of its release, never its exact count.
    assert metrics["num-examples"] == round(estimate_rows(one_way))

    codec = TableCodec(schema)
    generator, discriminator = build_gan(codec, GanShape.for_run(config, codec.dim))
    model = pack(generator, discriminator)
    trained = client_app.train(request("train", {**base, "server-round": 1}, arrays=model), context)
    check_reply("train", trained, model_keys=set(model.keys()))
    train_metrics = trained.content.metric_records["metrics"]
    assert train_metrics["num-examples"] == metrics["num-examples"]
    assert train_metrics["trained-steps"] == 3
    ledger = json.loads(trained.content.config_records["site"]["budget"])
    assert ledger["public-rows"] == pytest.approx(estimate_rows(one_way))

    synthetic = table.head(20).to_csv(index=False)
    check = {**base, SYNTHETIC_KEY: synthetic, PURPOSE_KEY: "release-check", THRESHOLD_KEY: 0.0}
    spent_before = client_app._restore_budget(context, config, "a", None).spent
    checked = client_app.evaluate(request("evaluate", check), context)
    check_reply("release-check", checked)
    counts = checked.content.config_records["counts"]
    # 20 real rows are copied; the count that leaves is noisy (discrete Gaussian, std z), never the exact one.
    assert counts["noise_std"] == config.release_check_noise
    assert abs(counts["copied_noisy"] - 20) <= 5 * counts["noise_std"]
    assert counts["copied_noisy"] == round(counts["copied_noisy"])
    # Charged before it left: the ledger sent with the reply, and the site's own, hold the release.
    ledger = json.loads(checked.content.config_records["site"]["budget"])
    assert ledger["history-noise"][-1] == config.release_check_noise and ledger["release-checked"] == 1
    after = client_app._restore_budget(context, config, "a", None)
    assert after.history[-1] == (config.release_check_noise, 1.0, 1)
    assert spent_before < after.spent <= config.epsilon


def test_a_selection_round_is_a_vote_and_noisy_counts_charged_within_the_reservation(site):
    context, config, schema, _, schema_text = site
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}
    select = {**base, PURPOSE_KEY: "select", "selection-round": 1, "vote": 1, "penalty-std": 1.0}
    pairs = [["age", "region"], ["income", "smoker"]]
    coarse = model_layout(schema_bins(schema, config.histogram_bins), config.measure_pair_bins)
    candidates = parse_cliques(json.dumps(pairs), schema, coarse)
    tables = {c.key(schema.names): Array(np.full(c.size, 1.0 / c.size)) for c in candidates}

    def ask(measure: list, vote: int = 1, one_way: int = 0) -> Message:
        own = {f"one-way:{n}": Array(h.numpy()) for n, h in first.content.array_records["histograms"].items()}
        fields = {**select, "measure-cliques": json.dumps(measure), "vote": vote, "candidates": json.dumps(pairs),
                  "measure-one-way": one_way}  # fmt: skip
        return client_app.measure(request("query", fields, **{"model-tables": ArrayRecord({**tables, **own})}),
                                  context)  # fmt: skip

    refused(client_app.measure(request("query", {**select, "measure-cliques": "[]", "candidates": "[]"}), context),
            "after the histograms")  # fmt: skip
    first = client_app.measure(request("query", base), context)
    spent_before = client_app._restore_budget(context, config, "a", None)
    # The first round (secure-measurement, the default) also measures the one-way histograms again.
    reply = ask([["age", "region"]], one_way=1)
    check_reply("select", reply)
    one_way_keys = {f"one-way:{name}" for name in schema.names}
    assert set(reply.content.array_records["histograms"].keys()) == {"clique:age|region"} | one_way_keys
    for key in ("clique:age|region", "one-way:income"):
        counts = reply.content.array_records["histograms"][key].numpy()
        assert np.array_equal(counts, np.round(counts))  # discrete Gaussian counts
    assert reply.content.metric_records["metrics"]["vote"] in (0, 1)
    after = client_app._restore_budget(context, config, "a", None)
    schedule = MeasurementSchedule(after.measure_noise, len(schema.columns), secure_one_way=True)
    # Charged first: the one-way counts, the clique counts and the vote, each at its planned noise multiplier.
    assert after.history[-3:] == [(schedule.secure_one_way_noise, 1.0, 1), (schedule.clique_noise, 1.0, 1),
                                  (schedule.select_noise, 1.0, 1)]  # fmt: skip
    metrics = reply.content.metric_records["metrics"]
    assert metrics["one-way-noise-std"] == pytest.approx(schedule.secure_one_way_noise * np.sqrt(len(schema.names)))
    assert spent_before.spent < after.spent <= config.epsilon
    refused(ask([["age", "region"]], one_way=1), "one-way histograms again already")
    # The reservation holds one-way + one-way again + rounds x (vote + counts): asking for more is refused.
    for _ in range(len(schema.columns) - 1):
        check_reply("select", ask([["age", "region"]]))
    refused(ask([["age", "region"]]), "reservation is spent")
    assert client_app._restore_budget(context, config, "a", None).measure_spent == pytest.approx(1.0)


def test_without_secure_measurement_the_one_way_histograms_are_measured_once_at_the_whole_share(site):
    context, config, schema, _, schema_text = site
    config = RunConfig.from_mapping({**config.to_mapping(), "secure-measurement": False})
    context.run_config = config.to_mapping()
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}
    client_app.measure(request("query", base), context)
    measured = client_app._restore_budget(context, config, "a", None)
    plain = MeasurementSchedule(measured.measure_noise, len(schema.columns))
    assert measured.history == [(plain.one_way_noise, 1.0, 1)]  # release 1 takes the whole one-way share
    ask = {**base, PURPOSE_KEY: "select", "selection-round": 1, "measure-cliques": "[]", "vote": 0,
           "candidates": "[]", "penalty-std": 1.0, "measure-one-way": 1}  # fmt: skip
    refused(client_app.measure(request("query", ask), context), "only in round 0")
    assert client_app._restore_budget(context, config, "a", None).history == measured.history  # nothing charged


def test_a_site_s_last_measurement_spends_what_its_reservation_has_left(site):
    context, config, schema, _, schema_text = site
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}
    pairs = [["age", "region"], ["income", "smoker"]]
    coarse = model_layout(schema_bins(schema, config.histogram_bins), config.measure_pair_bins)
    tables = {c.key(schema.names): Array(np.full(c.size, 1.0 / c.size)) for c in parse_cliques(json.dumps(pairs),
              schema, coarse)}  # fmt: skip
    first = client_app.measure(request("query", base), context)
    own = {f"one-way:{n}": Array(h.numpy()) for n, h in first.content.array_records["histograms"].items()}
    select = {**base, PURPOSE_KEY: "select", "selection-round": 1, "penalty-std": 1.0, "candidates": json.dumps(pairs)}
    check_reply("select", client_app.measure(request("query", {**select, "measure-cliques": "[]", "vote": 1},
                **{"model-tables": ArrayRecord({**tables, **own})}), context))  # fmt: skip
    voted = client_app._restore_budget(context, config, "a", None)
    schedule = MeasurementSchedule(voted.measure_noise, len(schema.columns))
    # The candidates ran out after one vote: the measurement asked without a vote takes all that is left.
    last = {**select, "selection-round": 2, "measure-cliques": json.dumps([pairs[0]]), "vote": 0, "candidates": "[]"}
    check_reply("select", client_app.measure(request("query", last), context))
    after = client_app._restore_budget(context, config, "a", None)
    assert after.measure_spent == pytest.approx(1.0)
    charged = after.history[-1][0]
    assert charged == pytest.approx(voted.measure_noise / np.sqrt(1.0 - voted.measure_spent))
    assert charged < schedule.clique_noise / 2  # more than one round's counts: the unused rounds' share
    assert after.spent <= config.epsilon
    refused(client_app.measure(request("query", {**last, "selection-round": 3}), context), "reservation is spent")


def test_a_site_answers_each_release_once(site):
    context, _, _, table, schema_text = site
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}
    client_app.measure(request("query", base), context)
    refused(client_app.measure(request("query", base), context), "second release is refused")
    check = {**base, SYNTHETIC_KEY: table.head(5).to_csv(index=False), PURPOSE_KEY: "release-check",
             THRESHOLD_KEY: 0.0}  # fmt: skip
    client_app.evaluate(request("evaluate", check), context)
    refused(client_app.evaluate(request("evaluate", check), context), "second one is refused")
    refused(client_app.evaluate(request("evaluate", {**check, PURPOSE_KEY: "membership"}), context), "not offered")
    # This run plans no validator feedback (validator-feedback-every = 0): none is answered.
    refused(
        client_app.evaluate(request("evaluate", {**check, PURPOSE_KEY: "feedback"}), context), "reserves 0 feedback"
    )


def test_feedback_is_noisy_sums_charged_first_and_answered_only_as_often_as_planned(site):
    context, config, _, table, schema_text = site
    config = RunConfig.from_mapping({**config.to_mapping(), "validator-feedback-every": 1})
    context.run_config = config.to_mapping()
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}
    client_app.measure(request("query", base), context)
    planned = client_app._restore_budget(context, config, "a", None)
    assert planned.feedback_planned == 1 and planned.feedback_noise == config.validator_feedback_noise
    ask = {**base, "server-round": 1, SYNTHETIC_KEY: table.sample(50, random_state=0).to_csv(index=False),
           PURPOSE_KEY: "feedback"}  # fmt: skip
    reply = client_app.evaluate(request("evaluate", ask), context)
    check_reply("feedback", reply)
    metrics = reply.content.metric_records["metrics"]
    # Noise std z·sqrt(K): K = 4 columns + the coverage count; the row count that leaves is the public one.
    assert metrics["noise-std"] == pytest.approx(config.validator_feedback_noise * np.sqrt(5))
    assert metrics["public-rows"] == pytest.approx(planned.public_rows)
    after = client_app._restore_budget(context, config, "a", None)
    assert after.history[-1] == (config.validator_feedback_noise, 1.0, 1) and after.feedback_given == 1
    assert metrics["epsilon"] == pytest.approx(after.spent) and after.spent > planned.spent
    refused(client_app.evaluate(request("evaluate", ask), context), "all were made")


def test_a_site_refuses_a_release_check_its_plan_did_not_reserve(site):
    context, _, _, table, schema_text = site
    context.node_config["jurisdiction"] = "j1"
    no_check = "allowed_jurisdictions: [j1]\nrelease:\n  no_copies: false\n"
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0, POLICY_KEY: no_check}
    client_app.measure(request("query", base), context)
    check = {**base, SYNTHETIC_KEY: table.head(5).to_csv(index=False), PURPOSE_KEY: "release-check",
             THRESHOLD_KEY: 0.0}  # fmt: skip
    refused(client_app.evaluate(request("evaluate", check), context), "reserves no release check")
    # Nothing was charged or marked for the refused check.
    config = RunConfig.from_mapping(dict(context.run_config))
    spent = client_app._restore_budget(context, config, "a", None)
    assert not spent.release_checked and all(n != config.release_check_noise for n, _, _ in spent.history)


def test_a_forged_coordinator_ledger_can_add_spending_but_not_replace_the_plan(site):
    context, config, _, _, schema_text = site
    base = {SCHEMA_KEY: schema_text, LEDGERS_KEY: "{}", "server-round": 0}
    own = json.loads(client_app.measure(request("query", base), context).content.config_records["site"]["budget"])
    forged = {**own, "epsilon": 1000.0, "noise-multiplier": 0.01, "max-steps": 10**6,
              "history-noise": [*own["history-noise"], 0.01], "history-rate": [*own["history-rate"], 1.0],
              "history-steps": [*own["history-steps"], 1]}  # fmt: skip
    codec = TableCodec(site[2])
    generator, discriminator = build_gan(codec, GanShape.for_run(config, codec.dim))
    fields = {**base, LEDGERS_KEY: json.dumps({"a": forged}), "server-round": 1}
    reply = client_app.train(request("train", fields, arrays=pack(generator, discriminator)), context)
    metrics = reply.content.metric_records["metrics"]
    # The plan stayed the site's own; the forged release (noise 0.01) was spending on record, which
    # already exceeds ε=2, so the site refuses every step.
    assert metrics["epsilon-budget"] == config.epsilon
    assert metrics["noise-multiplier"] == own["noise-multiplier"]
    assert metrics["trained-steps"] == 0
    assert metrics["epsilon"] > config.epsilon
    # Nor will it pay for the release check with spending it does not have.
    check = {**fields, SYNTHETIC_KEY: "age\n1\n", PURPOSE_KEY: "release-check", THRESHOLD_KEY: 0.0}
    refused(client_app.evaluate(request("evaluate", check), context), "over its privacy budget")


def test_failures_cross_the_network_without_values_or_row_numbers(site, tmp_path):
    context, _, _, table, schema_text = site
    broken = table.copy()
    broken.loc[123, "age"] = 250.0  # outside the schema's [0, 100]
    path = Path(context.node_config["data-path"])
    broken.to_csv(path, index=False)
    failure = read_failure(client_app.measure(request("query", {SCHEMA_KEY: schema_text, "server-round": 0}), context))
    assert failure.code == FailureCode.DATA
    reason = failure.reason
    assert "column 'age'" in reason and str(path) in reason
    assert "250" not in reason and "124" not in reason and "row" not in reason


def test_a_deployed_site_refuses_to_run_without_its_own_ledger(site):
    context, _, _, _, schema_text = site
    del context.node_config["ledger"]
    refused(
        client_app.measure(request("query", {SCHEMA_KEY: schema_text, "server-round": 0}), context),
        "keeps its own privacy ledger",
    )
