"""The coordinator's side of a run, independent of how Flower started it.

Builds the global G+D from the public schema, drives the rounds with the
aggregation strategy, checkpoints after every round, prints progress, and at
the end samples the synthetic table and writes the report. The server never
reads a data row: it knows the schema, the sites' updates and their metrics.
"""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from client.client_app import SCHEMA_KEY
from fedsynth.config import RunConfig
from models.gan import GanShape, build_gan
from models.packing import pack
from server.checkpoints import save_checkpoint
from server.report import build_report, write_json
from server.sampling import sample_table
from strategies.gan_fedavg import GanFedAvg
from tabular.codec import TableCodec
from tabular.datasets import resolve_schema_path
from tabular.schema import dump_schema_text, load_schema
from tabular.table import write_table


def run_federation(grid: Grid, config: RunConfig) -> dict:
    """Run every round, then write ``synthetic.csv``, ``report.json`` and checkpoints."""
    started = time.time()
    schema = load_schema(resolve_schema_path(config.data, config.schema))
    out = Path(config.out)
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)

    codec = TableCodec(schema)
    shape = GanShape.for_run(config, codec.dim)
    initial = pack(*build_gan(codec, shape, seed=config.seed))
    strategy = GanFedAvg(min_available_nodes=config.min_sites, min_train_nodes=config.min_sites)
    latest = {"arrays": initial}
    round_seconds: list[float] = []
    tick = [time.time()]

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            tick[0] = time.time()
            return None
        latest["arrays"] = arrays
        save_checkpoint(checkpoints / f"round-{server_round:03d}.pt", arrays, schema, shape, server_round)
        round_seconds.append(time.time() - tick[0])
        tick[0] = time.time()
        _log_progress(server_round, config, strategy, round_seconds[-1])
        return None

    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=config.rounds,
        timeout=config.round_timeout,
        train_config=ConfigRecord({SCHEMA_KEY: dump_schema_text(schema)}),
        evaluate_fn=after_round,
    )
    training_done = time.time()

    final = latest["arrays"]
    save_checkpoint(checkpoints / "final.pt", final, schema, shape, len(strategy.history))
    site_metrics = strategy.latest_site_metrics()
    rows = config.rows or int(sum(m.get("num-examples", 0) for m in site_metrics.values()))
    table = sample_table(final, schema, shape, rows, seed=config.seed)
    write_table(table, out / "synthetic.csv")
    finished = time.time()

    timings = {
        "total_seconds": finished - started,
        "training_seconds": training_done - started,
        "sampling_seconds": finished - training_done,
        "rounds_seconds": round_seconds,
    }
    outputs = {
        "synthetic": "synthetic.csv",
        "rows": rows,
        "checkpoints": "checkpoints/",
        "final_checkpoint": "checkpoints/final.pt",
    }
    report = build_report(config, site_metrics, strategy.history, timings, outputs)
    write_json(out / "report.json", report)
    log(
        INFO,
        "fedsynth: wrote %s rows to %s (ε max %.3f, δ %g)",
        rows,
        out / "synthetic.csv",
        report["privacy"]["epsilon_max"],
        config.delta,
    )
    return report


def _log_progress(server_round: int, config: RunConfig, strategy: GanFedAvg, seconds: float) -> None:
    entry = strategy.history[-1] if strategy.history else None
    sites = ""
    if entry is not None:
        sites = "  ".join(f"{name} ε={m.get('epsilon', float('nan')):.3f}" for name, m in sorted(entry.sites.items()))
        if entry.failed:
            sites += f"  failed: {', '.join(entry.failed)}"
    log(INFO, "fedsynth: round %d/%d done in %.1fs  %s", server_round, config.rounds, seconds, sites)
