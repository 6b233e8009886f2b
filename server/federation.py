"""The coordinator's side of a run, independent of how Flower started it.

Builds the global G+D from the public schema and drives the rounds with the
aggregation strategy: send the model, collect the replies (bounded by a
timeout), aggregate, checkpoint, save the run state, print progress. At the end
it samples the synthetic table and writes the report. The server never reads a
data row: it knows the schema, the sites' updates and their metrics.

The round loop is written out here rather than left to ``Strategy.start`` so
that a run can resume from its last checkpoint, stop when every site's budget is
spent or too many rounds fail, and so that each round's record is saved.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from client.client_app import LEDGERS_KEY, SCHEMA_KEY
from fedsynth.config import RunConfig
from fedsynth.errors import CheckpointError, UserError
from models.gan import GanShape, build_gan
from models.packing import pack
from privacy.budget import SiteBudget
from server.checkpoints import load_checkpoint, save_checkpoint
from server.report import build_report, write_json
from server.run_state import RunState
from server.sampling import sample_table
from strategies.factory import build_strategy
from strategies.gan_fedavg import GanFedAvg, site_name
from tabular.codec import TableCodec
from tabular.datasets import resolve_schema_path
from tabular.schema import Schema, dump_schema_text, load_schema
from tabular.table import write_table

CONFIG_FILE = "config.json"  # the run's configuration, read back by --resume


class FederationStoppedError(UserError):
    """The run cannot go on (too few sites, too many failed rounds)."""


@dataclass
class Federation:
    """The fixed parts of a run: configuration, schema, network shape, folders."""

    config: RunConfig
    schema: Schema
    shape: GanShape
    out: Path

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @classmethod
    def from_config(cls, config: RunConfig) -> Federation:
        schema = load_schema(resolve_schema_path(config.data, config.schema))
        shape = GanShape.for_run(config, TableCodec(schema).dim)
        return cls(config, schema, shape, Path(config.out))


def _start(fed: Federation) -> tuple[ArrayRecord, RunState]:
    """Fresh initial weights, or the last consistent checkpoint and state on resume."""
    if not fed.config.resume:
        return pack(*build_gan(TableCodec(fed.schema), fed.shape, seed=fed.config.seed)), RunState()
    state = RunState.load(fed.checkpoints)
    payload = load_checkpoint(fed.checkpoints / state.checkpoint)
    if payload["round"] != state.completed_round:
        raise CheckpointError(f"{state.checkpoint}: holds round {payload['round']}, state says {state.completed_round}")
    if payload["shape"] != fed.shape or payload["schema"].to_dict() != fed.schema.to_dict():
        raise CheckpointError(f"{state.checkpoint}: schema or network shape differ from this run's configuration")
    state.resumed_at.append(state.completed_round)
    spent = ", ".join(f"{name} ε={_ledger_epsilon(entry):.3f}" for name, entry in sorted(state.ledgers.items()))
    log(INFO, "fedsynth: resuming after round %d; spent so far: %s", state.completed_round, spent or "nothing")
    return payload["record"], state


def _ledger_epsilon(entry: dict[str, Any]) -> float:
    return SiteBudget.from_state(entry).spent


def _collect_ledgers(replies: list[Message], state: RunState) -> None:
    """Keep each site's latest privacy ledger (sent back to it if the run resumes)."""
    for msg in replies:
        if msg.has_error() or "site" not in msg.content.config_records:
            continue
        budget = msg.content.config_records["site"].get("budget")
        if budget:
            state.ledgers[site_name(msg)] = json.loads(str(budget))


def run_federation(grid: Grid, config: RunConfig) -> dict:
    """Run every round, then write ``synthetic.csv``, ``report.json`` and checkpoints."""
    started = time.time()
    fed = Federation.from_config(config)
    fed.checkpoints.mkdir(parents=True, exist_ok=True)
    arrays, state = _start(fed)
    if not config.resume:
        write_json(fed.out / CONFIG_FILE, config.to_mapping())
    strategy = build_strategy(config)
    strategy.history = list(state.history)
    schema_text = dump_schema_text(fed.schema)
    failed_in_a_row = 0

    for server_round in range(state.completed_round + 1, config.rounds + 1):
        tick = time.time()
        train_config = ConfigRecord({SCHEMA_KEY: schema_text, LEDGERS_KEY: json.dumps(state.ledgers)})
        messages = strategy.configure_train(server_round, arrays, train_config, grid)
        replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
        _collect_ledgers(replies, state)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        entry = strategy.history[-1]
        if aggregated is not None and len(entry.aggregated) >= config.min_replies:
            arrays = aggregated
            failed_in_a_row = 0
        else:
            failed_in_a_row += 1
            log(WARNING, "fedsynth: round %d had %d usable update(s), %d needed (min-replies); model unchanged",
                server_round, len(entry.aggregated), config.min_replies)  # fmt: skip

        name = f"round-{server_round:03d}.pt"
        save_checkpoint(fed.checkpoints / name, arrays, fed.schema, fed.shape, server_round)
        state.completed_round, state.checkpoint = server_round, name
        state.history = strategy.history
        state.round_seconds.append(time.time() - tick)
        state.save(fed.checkpoints)
        _log_progress(server_round, config, entry, state.round_seconds[-1])

        if failed_in_a_row >= config.max_failed_rounds:
            raise FederationStoppedError(
                f"stopped after round {server_round}: {failed_in_a_row} rounds in a row without "
                f"{config.min_replies} usable update(s) (max-failed-rounds); resume with --resume"
            )
        if entry.sites and all(m.get("budget-exhausted") for m in entry.sites.values()) and not entry.aggregated:
            log(INFO, "fedsynth: every site has spent its privacy budget; stopping after round %d", server_round)
            break

    return _finish(fed, arrays, state, strategy, started)


def _finish(fed: Federation, arrays: ArrayRecord, state: RunState, strategy: GanFedAvg, started: float) -> dict:
    training_done = time.time()
    save_checkpoint(fed.checkpoints / "final.pt", arrays, fed.schema, fed.shape, state.completed_round)
    site_metrics = strategy.latest_site_metrics()
    rows = fed.config.rows or int(sum(m.get("num-examples", 0) for m in site_metrics.values()))
    table = sample_table(arrays, fed.schema, fed.shape, rows, seed=fed.config.seed)
    write_table(table, fed.out / "synthetic.csv")
    finished = time.time()
    timings = {
        "total_seconds": finished - started,
        "training_seconds": training_done - started,
        "sampling_seconds": finished - training_done,
        "rounds_seconds": state.round_seconds,
        "resumed_after_rounds": state.resumed_at,
    }
    outputs = {
        "synthetic": "synthetic.csv",
        "rows": rows,
        "checkpoints": "checkpoints/",
        "final_checkpoint": "checkpoints/final.pt",
    }
    report = build_report(fed.config, site_metrics, strategy.history, timings, outputs)
    write_json(fed.out / "report.json", report)
    log(INFO, "fedsynth: wrote %s rows to %s (ε max %.3f, δ %g)", rows, fed.out / "synthetic.csv",
        report["privacy"]["epsilon_max"], fed.config.delta)  # fmt: skip
    return report


def _log_progress(server_round: int, config: RunConfig, entry: Any, seconds: float) -> None:
    sites = "  ".join(f"{name} ε={m.get('epsilon', float('nan')):.3f}" for name, m in sorted(entry.sites.items()))
    for label, names in (("failed", entry.failed), ("rejected", entry.rejected), ("no reply", entry.missing)):
        if names:
            sites += f"  {label}: {', '.join(names)}"
    log(INFO, "fedsynth: round %d/%d done in %.1fs  %s", server_round, config.rounds, seconds, sites)
