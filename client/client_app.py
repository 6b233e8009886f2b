"""The ClientApp every site runs: DP training of the GAN on the site's own rows.

Three kinds of message reach a site, and each answer is charged to, or checked
against, the site's own privacy budget:

- query (round 0): release DP one-way (and chosen two-way) histograms of the site's rows;
- train (every round): unpack the global G+D, train the discriminator with
  Opacus DP-SGD and the generator through it, reply with the packed update
  (under secure aggregation, masked by SecAgg+: ``client.secure_aggregation``);
- evaluate: score a synthetic sample against the site's rows, either as
  DP-noised fidelity aggregates for the validator, or as the release gate's
  counts of synthetic rows that copy or come close to a real row.

The site's budget is planned once (the run's ε, lowered to its jurisdiction's
cap under the federation's policy) and its spending is kept in ``context.state``,
in an optional ledger file, and by the server for resumes, so ε is cumulative
and the site refuses, and says so, anything that would exceed it. A site whose
jurisdiction the policy does not admit refuses to take part at all.
"""

from __future__ import annotations

import hashlib
import io
import random
import time

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.secure_aggregation import secure_aggregation_mod
from client.site_data import SiteData, load_site, schema_from_text
from client.task import plan_budget, train_round
from fedsynth.config import RunConfig
from fedsynth.errors import UserError
from models.gan import GanShape, build_gan
from models.packing import pack, unpack
from privacy.budget import SiteBudget
from privacy.dp_training import sample_rate_for
from privacy.histograms import (
    add_noise,
    count,
    count_pairs,
    one_way_weight,
    pair_layout,
    parse_pairs,
    release_noise_std,
    release_record,
    schema_bins,
)
from privacy.ledger import budget_to_json, most_spent, read_ledger_file, server_ledger, write_ledger_file
from tabular.codec import TableCodec
from tabular.schema import load_yaml
from tabular.table import validate_frame
from validator.policy import Policy, parse_policy
from validator.site_checks import epsilon_with_release, gaussian_release_cost, noisy_fidelity, release_counts

BUDGET_STATE = "fedsynth.budget"
SCHEMA_KEY = "schema-yaml"
LEDGERS_KEY = "ledgers-json"
POLICY_KEY = "policy-yaml"
LR_SCALE_KEY = "lr-scale"
PURPOSE_KEY = "purpose"  # evaluate messages: "feedback" | "release-check"
SYNTHETIC_KEY = "synthetic-csv"
THRESHOLD_KEY = "distance-threshold"
SITE_SECONDS_KEY = "site-seconds"  # train replies: the handler's own wall seconds, without Flower's messaging

app = ClientApp()


class SimulatedFaultError(RuntimeError):
    """A site failure injected on purpose (``fault-rate``), to exercise dropout handling."""


class NotAdmittedError(UserError):
    """The federation's policy does not admit this site's jurisdiction."""


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _policy(record: ConfigRecord) -> Policy | None:
    text = str(record.get(POLICY_KEY, "") or "")
    return parse_policy(load_yaml(text), source="federation policy") if text else None


def _admitted(policy: Policy | None, site: SiteData) -> None:
    """Refuse before touching any data-dependent step when the policy excludes this site."""
    if policy is not None and not policy.admits(site.jurisdiction):
        raise NotAdmittedError(
            f"site {site.name}: jurisdiction {site.jurisdiction!r} is not allowed by the federation policy; "
            "refusing to take part"
        )


def _restore_budget(context: Context, site_name: str, ledgers_json: str | None) -> SiteBudget | None:
    in_state = None
    if BUDGET_STATE in context.state.config_records:
        in_state = SiteBudget.from_state(dict(context.state.config_records[BUDGET_STATE]))
    on_disk = read_ledger_file(context.node_config["ledger"]) if "ledger" in context.node_config else None
    return most_spent(in_state, on_disk, server_ledger(ledgers_json, site_name))


def _site_budget(context: Context, config: RunConfig, site: SiteData, record: ConfigRecord) -> SiteBudget:
    ledgers = str(record[LEDGERS_KEY]) if LEDGERS_KEY in record else None
    budget = _restore_budget(context, site.name, ledgers)
    if budget is not None:
        return budget
    policy = _policy(record)
    epsilon = config.epsilon
    if policy is not None and site.jurisdiction is not None:
        epsilon = min(epsilon, policy.epsilon_cap(site.jurisdiction, epsilon))
    if "epsilon" in context.node_config:  # a site may always ask for less than the federation offers
        epsilon = min(epsilon, float(context.node_config["epsilon"]))
    feedback = 0.0
    if config.feedback_rounds:
        columns = len(schema_from_text(str(record[SCHEMA_KEY])).columns)
        feedback = gaussian_release_cost(columns + 1, config.validator_feedback_noise, len(site.frame))
    return plan_budget(config, sample_rate_for(len(site.frame), config.batch_size), epsilon, feedback)


def _save_budget(context: Context, budget: SiteBudget) -> None:
    context.state.config_records[BUDGET_STATE] = ConfigRecord(budget.to_state())
    if "ledger" in context.node_config:
        write_ledger_file(context.node_config["ledger"], budget)


def _open(msg: Message, context: Context) -> tuple[RunConfig, ConfigRecord, SiteData]:
    """The run configuration, the message's config record and this site's data, policy checked."""
    config = RunConfig.from_mapping(dict(context.run_config))
    record = msg.content["config"]
    site = load_site(dict(context.node_config), config.to_mapping(), str(record[SCHEMA_KEY]))
    _admitted(_policy(record), site)
    return config, record, site


def _site_record(site: SiteData, budget: SiteBudget | None) -> ConfigRecord:
    fields = {"name": site.name, "jurisdiction": site.jurisdiction or ""}
    if budget is not None:
        fields.update({"accountant": budget.accountant, "budget": budget_to_json(budget)})
    return ConfigRecord(fields)


@app.query()
def measure(msg: Message, context: Context) -> Message:
    """Release this site's DP histograms (one-way, and the two-way ones ``measure-pairs`` names) in one
    Gaussian mechanism, charged to its budget (once per run)."""
    config, record, site = _open(msg, context)
    budget = _site_budget(context, config, site, record)
    if not budget.measure_noise:
        raise RuntimeError("this run plans no measurement (measure-fraction is 0)")
    schema = schema_from_text(str(record[SCHEMA_KEY]))
    layout = schema_bins(schema, config.measure_bins)
    pairs = pair_layout(layout, parse_pairs(config.measure_pairs, schema), config.measure_pair_bins)
    weight = one_way_weight(config.measure_one_way_weight, len(layout), len(pairs))
    one_way_std, pair_std = release_noise_std(budget.measure_noise, len(layout), len(pairs), weight)
    # Charge first, then release: a crash in between over-counts, never under-counts.
    budget.record_measurement()
    _save_budget(context, budget)
    rng = np.random.default_rng(_seed(config.seed, site.name, "measure"))
    noisy = add_noise(count(site.frame, layout), one_way_std, rng) + add_noise(
        count_pairs(site.frame, pairs), pair_std, rng
    )
    arrays = release_record(layout, pairs, noisy)
    metrics = MetricRecord({"noise-std": one_way_std, "pair-noise-std": pair_std, "epsilon": budget.spent,
                            "num-examples": len(site.frame)})  # fmt: skip
    return Message(RecordDict({"histograms": arrays, "metrics": metrics, "site": _site_record(site, budget)}),
                   reply_to=msg)  # fmt: skip


@app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    """One round of local DP training."""
    started = time.perf_counter()
    config, record, site = _open(msg, context)
    server_round = int(record["server-round"])
    seed = _seed(config.seed, site.name, server_round)
    simulated = "partition-id" in context.node_config
    if simulated and config.fault_rate > 0 and random.Random(seed).random() < config.fault_rate:
        raise SimulatedFaultError(f"simulated failure of {site.name} in round {server_round}")
    torch.manual_seed(seed)

    codec = TableCodec(schema_from_text(str(record[SCHEMA_KEY])))
    generator, discriminator = build_gan(codec, GanShape.for_run(config, codec.dim))
    unpack(msg.content["arrays"], generator, discriminator)
    budget = _site_budget(context, config, site, record)
    lr_scale = float(record.get(LR_SCALE_KEY, 1.0))
    outcome = train_round(generator, discriminator, site.encoded, budget, config, lr_scale=lr_scale)
    _save_budget(context, outcome.budget)
    arrays = pack(generator, discriminator, config.transfer_dtype)
    spent = outcome.budget.spent

    metrics = MetricRecord(
        {
            "num-examples": len(site.frame),
            "unit-weight": 1,
            "trained-steps": outcome.trained_steps,
            "steps": outcome.budget.steps,
            "max-steps": outcome.budget.max_steps,
            "epsilon": spent,
            "epsilon-budget": outcome.budget.epsilon,
            "delta": outcome.budget.delta,
            "noise-multiplier": outcome.budget.noise_multiplier,
            "sample-rate": outcome.budget.sample_rate,
            "budget-exhausted": int(outcome.budget_exhausted),
            "loss-discriminator-fake": outcome.loss_discriminator_fake,
            "loss-generator": outcome.loss_generator,
            SITE_SECONDS_KEY: time.perf_counter() - started,
        }
    )
    reply = RecordDict(
        {
            "arrays": arrays,
            "metrics": metrics,
            "site": _site_record(site, outcome.budget),
        }
    )
    return Message(reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score a synthetic sample against this site's rows; only aggregates or counts leave the site."""
    config, record, site = _open(msg, context)
    schema = schema_from_text(str(record[SCHEMA_KEY]))
    synthetic = pd.read_csv(io.StringIO(str(record[SYNTHETIC_KEY])), dtype=str, keep_default_na=False)
    purpose = str(record[PURPOSE_KEY])
    budget = _site_budget(context, config, site, record)
    if purpose == "release-check":
        # Counts, not DP: the report says so. They decide whether the table may be released.
        counts = ConfigRecord(release_counts(synthetic, site.frame, schema, float(record[THRESHOLD_KEY])))
        return Message(RecordDict({"counts": counts, "site": _site_record(site, budget)}), reply_to=msg)
    if purpose != "feedback":
        raise ValueError(f"unknown evaluate purpose {purpose!r}")
    sample = validate_frame(synthetic, schema, source="validator sample")
    spent_after = epsilon_with_release(budget.history, budget.feedback_noise, budget.delta, budget.accountant)
    if budget.feedback_given >= budget.feedback_planned or spent_after > budget.epsilon:
        metrics = MetricRecord({"refused": 1, "epsilon": budget.spent})
        return Message(RecordDict({"metrics": metrics, "site": _site_record(site, budget)}), reply_to=msg)
    noise_std = config.validator_feedback_noise
    rng = np.random.default_rng(_seed(config.seed, site.name, "feedback", record.get("server-round", 0)))
    result = noisy_fidelity(sample, site.frame, schema, noise_std, rng)
    if abs(result["noise_multiplier"] - budget.feedback_noise) > 1e-9 * budget.feedback_noise:
        raise RuntimeError("feedback noise differs from the planned release")  # the plan would not hold
    budget.record_feedback()  # charged before anything leaves the site
    _save_budget(context, budget)
    values = {f"value:{key}": float(v) for key, v in result["values"].items()}
    metrics = MetricRecord({**values, "refused": 0, "epsilon": budget.spent, "num-examples": len(site.frame)})
    return Message(RecordDict({"metrics": metrics, "site": _site_record(site, budget)}), reply_to=msg)
