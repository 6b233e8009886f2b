"""Where a site's rows come from.

In deployment a SuperNode is started with ``--node-config 'data-path="..."'``
and reads only its own file. In simulation one machine plays every site: each
virtual node takes partition ``partition-id`` of the run's table, split by Flower
Datasets. Either way the rows are validated against the federation's public
schema before anything is trained on them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from fedsynth.core.errors import DataError, UserError
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.loading import load_table
from fedsynth.tabular.partitioning import MIN_SITE_ROWS, parse_partition, partition_table, split_holdout
from fedsynth.tabular.schema import Schema, load_yaml, parse_schema
from fedsynth.tabular.table import read_table


class SimulationMismatchError(UserError):
    """Flower started a different number of simulated sites than the partition gives."""


@dataclass(frozen=True)
class SiteData:
    name: str
    frame: pd.DataFrame
    encoded: torch.Tensor
    jurisdiction: str | None = None


def simulated_jurisdiction(site: str, mapping: str) -> str:
    """A simulated site's jurisdiction: from ``site-jurisdictions`` ("key=jurisdiction,..."), keyed by
    the site's name or natural value, else the natural value itself (``region=south`` -> ``south``)."""
    natural = site.split("=", 1)[-1]
    table = {k.strip(): v.strip() for k, v in (item.rsplit("=", 1) for item in mapping.split(",") if "=" in item)}
    return table.get(site, table.get(natural, natural))


@functools.lru_cache(maxsize=8)
def _simulated_sites(
    data: str, schema_text: str, partition: str, clients: int, seed: int, holdout: float = 0.0
) -> tuple[tuple[str, pd.DataFrame], ...]:
    # Cached per process: Flower's simulation reuses worker processes across rounds,
    # so each worker reads and splits the table once.
    schema = schema_from_text(schema_text)
    table, _ = split_holdout(load_table(data, schema), holdout, seed)  # held-out rows reach no site
    return tuple(partition_table(table, parse_partition(partition, schema), clients, seed))


@functools.lru_cache(maxsize=8)
def schema_from_text(text: str) -> Schema:
    """The federation's schema as the server sent it."""
    return parse_schema(load_yaml(text), source="federation schema")


def load_site(node_config: dict[str, Any], run_config: dict[str, Any], schema_text: str) -> SiteData:
    """This node's validated, encoded rows."""
    schema = schema_from_text(schema_text)
    if "data-path" in node_config:
        path = str(node_config["data-path"])
        frame = read_table(path, schema)
        name = str(node_config.get("site", path))
        jurisdiction = str(node_config["jurisdiction"]) if "jurisdiction" in node_config else None
    elif "partition-id" in node_config:
        sites = _simulated_sites(
            str(run_config["data"]),
            schema_text,
            str(run_config["partition"]),
            int(run_config["clients"]),
            int(run_config["seed"]),
            float(run_config.get("holdout", 0.0)),
        )
        pid = int(node_config["partition-id"])
        started = int(node_config.get("num-partitions", len(sites)))
        if started != len(sites):  # e.g. `flwr run .` with Flower's default of 2 SuperNodes: sites would be lost
            raise SimulationMismatchError(
                f"the partition '{run_config['partition']}' gives {len(sites)} sites but the simulation started "
                f"{started} SuperNodes: use `fedsynth simulate`, or `flwr run . --federation-config "
                f'"num-supernodes={len(sites)}"`'
            )
        if pid >= len(sites):
            raise DataError(f"partition {pid} does not exist: the split gives {len(sites)} sites")
        name, frame = sites[pid]
        jurisdiction = simulated_jurisdiction(name, str(run_config.get("site-jurisdictions", "")))
    else:
        raise DataError("node config has neither 'data-path' (deployment) nor 'partition-id' (simulation)")
    if len(frame) < MIN_SITE_ROWS:
        raise DataError(f"site {name}: only {len(frame)} rows; at least {MIN_SITE_ROWS} are needed to train",
                        public=f"site {name}: fewer than {MIN_SITE_ROWS} rows, too few to train")  # fmt: skip
    encoded = torch.from_numpy(TableCodec(schema).encode(frame))
    return SiteData(name=name, frame=frame, encoded=encoded, jurisdiction=jurisdiction)
