"""Checks before a simulated federation starts, so that mistakes surface as one line.

The simulation plays every site on one machine, so it may read the whole table
up front: it validates it against the schema, splits it as the sites will, and
refuses a split that leaves a site too small to train, before any Flower
process is started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError, DataError
from fedsynth.marginals.bins import parse_pairs
from fedsynth.server.secure_round import check_site_count
from fedsynth.sovereignty.policy import load_policy
from fedsynth.tabular.datasets import resolve_schema_path
from fedsynth.tabular.loading import load_table
from fedsynth.tabular.partitioning import MIN_SITE_ROWS, num_sites, parse_partition, partition_table, split_holdout
from fedsynth.tabular.schema import load_schema


@dataclass(frozen=True)
class SimulationPlan:
    config: RunConfig
    num_sites: int
    site_rows: dict[str, int]
    held_out: pd.DataFrame | None = None  # with --holdout: the rows no site gets
    training: pd.DataFrame | None = None  # the rows the sites share out


def prepare_simulation(config: RunConfig, echo: Callable[[str], None] = print) -> SimulationPlan:
    """Validate schema, data and split; return the config the federation will run with."""
    schema = load_schema(resolve_schema_path(config.data, config.schema))
    parse_pairs(config.measure_pairs, schema)  # a column the schema lacks is an error now, not in round 0
    if config.policy:  # a malformed policy, or one that does not fit the schema: now, not after Flower starts
        load_policy(config.policy).check_schema(schema)
    table, held_out = split_holdout(load_table(config.data, schema), config.holdout, config.seed)
    if config.holdout and (len(held_out) < MIN_SITE_ROWS or len(table) < MIN_SITE_ROWS):
        raise ConfigError(f"options: 'holdout' {config.holdout:g} of {len(table) + len(held_out)} rows leaves fewer "
                          f"than {MIN_SITE_ROWS} rows held out or for the sites")  # fmt: skip
    spec = parse_partition(config.partition, schema)
    count = num_sites(spec, table, config.clients)
    if config.secure_aggregation:
        check_site_count(count)  # before Flower starts, not in round 1
    # Every simulated site exists from the start, so a rule asking for more sites than the split makes can
    # never be met: say so now instead of starting Flower to wait for them.
    for key, needed in (("min-sites", config.min_sites), ("min-replies", config.min_replies)):
        if needed > count:
            raise ConfigError(f"options: '{key}' {needed} is more than the {count} site(s) this simulation has")
    sites = partition_table(table, spec, count, config.seed)
    site_rows = {name: len(frame) for name, frame in sites}
    small = {name: n for name, n in site_rows.items() if n < MIN_SITE_ROWS}
    if small:
        listed = ", ".join(f"{name} ({n} rows)" for name, n in small.items())
        raise DataError(f"{config.data}: partition '{spec.describe()}' leaves sites too small to train: {listed}")
    if len(held_out):
        echo(f"Holdout: {len(held_out)} rows kept out of every site (written to real/holdout.csv)")
    echo(f"Data: {config.data}, {len(table)} rows for the sites, {len(schema.columns)} columns; "
         f"split {spec.describe()} into {count} sites: "
         + ", ".join(f"{name} {n}" for name, n in site_rows.items()))  # fmt: skip
    # min-sites stays as configured, so that `flwr run .` (which never passes through here) runs the same
    # configuration: in a simulation every SuperNode exists from the start and each site checks that the
    # split gives as many sites as there are SuperNodes, so waiting for more adds nothing.
    resolved = dataclasses.replace(config, clients=count if spec.kind != "column" else 0)
    return SimulationPlan(config=resolved, num_sites=count, site_rows=site_rows, held_out=held_out, training=table)
