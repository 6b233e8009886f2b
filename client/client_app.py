"""The ClientApp every site runs: DP training of the GAN on the site's own rows.

Per round: unpack the global G+D, train the discriminator with Opacus DP-SGD
and the generator through it, and reply with the packed update and metrics.
The site's privacy budget is planned on its first round and its spending is
kept in ``context.state`` for the rest of the run, so ε is cumulative and the
site refuses, and says so, any step that would exceed its budget.
"""

from __future__ import annotations

import hashlib
import random

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.site_data import load_site, schema_from_text
from client.task import plan_budget, train_round
from fedsynth.config import RunConfig
from models.gan import GanShape, build_gan
from models.packing import pack, unpack
from privacy.budget import SiteBudget
from privacy.dp_training import sample_rate_for
from privacy.ledger import budget_to_json, most_spent, read_ledger_file, server_ledger, write_ledger_file
from tabular.codec import TableCodec

BUDGET_STATE = "fedsynth.budget"
SCHEMA_KEY = "schema-yaml"
LEDGERS_KEY = "ledgers-json"

app = ClientApp()


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


class SimulatedFaultError(RuntimeError):
    """A site failure injected on purpose (``fault-rate``), to exercise dropout handling."""


def _restore_budget(context: Context, config: RunConfig, site_name: str, ledgers_json: str | None) -> SiteBudget | None:
    in_state = None
    if BUDGET_STATE in context.state.config_records:
        in_state = SiteBudget.from_state(dict(context.state.config_records[BUDGET_STATE]))
    on_disk = read_ledger_file(context.node_config["ledger"]) if "ledger" in context.node_config else None
    return most_spent(in_state, on_disk, server_ledger(ledgers_json, site_name))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local DP training."""
    config = RunConfig.from_mapping(dict(context.run_config))
    train_config = msg.content["config"]
    schema_text = str(train_config[SCHEMA_KEY])
    server_round = int(train_config["server-round"])
    site = load_site(dict(context.node_config), config.to_mapping(), schema_text)
    seed = _seed(config.seed, site.name, server_round)
    simulated = "partition-id" in context.node_config
    if simulated and config.fault_rate > 0 and random.Random(seed).random() < config.fault_rate:
        raise SimulatedFaultError(f"simulated failure of {site.name} in round {server_round}")
    torch.manual_seed(seed)

    codec = TableCodec(schema_from_text(schema_text))
    generator, discriminator = build_gan(codec, GanShape.for_run(config, codec.dim))
    unpack(msg.content["arrays"], generator, discriminator)

    ledgers = str(train_config[LEDGERS_KEY]) if LEDGERS_KEY in train_config else None
    budget = _restore_budget(context, config, site.name, ledgers)
    if budget is None:
        budget = plan_budget(config, sample_rate_for(len(site.frame), config.batch_size))
    outcome = train_round(generator, discriminator, site.encoded, budget, config)
    context.state.config_records[BUDGET_STATE] = ConfigRecord(outcome.budget.to_state())
    if "ledger" in context.node_config:
        write_ledger_file(context.node_config["ledger"], outcome.budget)

    metrics = MetricRecord(
        {
            "num-examples": len(site.frame),
            "trained-steps": outcome.trained_steps,
            "steps": outcome.budget.steps,
            "max-steps": outcome.budget.max_steps,
            "epsilon": outcome.budget.spent,
            "delta": outcome.budget.delta,
            "noise-multiplier": outcome.budget.noise_multiplier,
            "sample-rate": outcome.budget.sample_rate,
            "budget-exhausted": int(outcome.budget_exhausted),
            "loss-discriminator-fake": outcome.loss_discriminator_fake,
            "loss-generator": outcome.loss_generator,
        }
    )
    site_record = ConfigRecord(
        {"name": site.name, "accountant": outcome.budget.accountant, "budget": budget_to_json(outcome.budget)}
    )
    reply = RecordDict({"arrays": pack(generator, discriminator), "metrics": metrics, "site": site_record})
    return Message(reply, reply_to=msg)
