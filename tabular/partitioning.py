"""Splitting one table into simulated sites with Flower Datasets.

The split is described by a short spec:

- ``column:NAME``: one site per value of a categorical column (natural sites);
- ``iid``: rows shuffled and dealt evenly to ``clients`` sites;
- ``dirichlet:ALPHA[:COLUMN]``: label skew on a categorical column, each site's
  share of every value drawn from Dirichlet(ALPHA); small ALPHA, strong skew.

It runs in simulation, where one machine plays every site: the setup splits the table, and each
simulated site takes its own partition (``client.site_data``).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.core.errors import ConfigError
from fedsynth.tabular.schema import Schema

MIN_SITE_ROWS = 10  # the fewest rows a site trains on (a simulated split warns before any site refuses)

DEFAULT_SITES = 4


@dataclass(frozen=True)
class PartitionSpec:
    kind: str  # "column" | "iid" | "dirichlet"
    column: str | None = None
    alpha: float | None = None

    def describe(self) -> str:
        if self.kind == "column":
            return f"column:{self.column}"
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}:{self.column}"
        return "iid"


def parse_partition(text: str, schema: Schema) -> PartitionSpec:
    """Parse and check a partition spec against the schema."""
    parts = text.strip().split(":")
    kind = parts[0].lower()
    if kind == "iid" and len(parts) == 1:
        return PartitionSpec("iid")
    if kind == "column" and len(parts) == 2:
        return PartitionSpec("column", column=_discrete_column(text, parts[1], schema))
    if kind == "dirichlet" and len(parts) in (2, 3):
        try:
            alpha = float(parts[1])
        except ValueError:
            raise ConfigError(f"partition '{text}': ALPHA must be a number") from None
        if not alpha > 0:
            raise ConfigError(f"partition '{text}': ALPHA must be positive")
        if len(parts) == 3:
            column = _discrete_column(text, parts[2], schema)
        else:
            discrete = [c.name for c in schema.columns if not c.is_numeric]
            if not discrete:
                raise ConfigError(f"partition '{text}': the schema has no categorical column to skew on")
            column = discrete[0]
        return PartitionSpec("dirichlet", column=column, alpha=alpha)
    raise ConfigError(f"partition '{text}': expected column:NAME, iid or dirichlet:ALPHA[:COLUMN]")


def _discrete_column(text: str, name: str, schema: Schema) -> str:
    if name not in schema.names:
        raise ConfigError(f"partition '{text}': no column '{name}' in {schema.source}")
    if schema.column(name).is_numeric:
        raise ConfigError(f"partition '{text}': column '{name}' is numeric; use a categorical column")
    return name


def num_sites(spec: PartitionSpec, frame: pd.DataFrame, clients: int) -> int:
    """How many sites the spec yields (natural sites: one per value present)."""
    if spec.kind == "column":
        present = frame[spec.column].nunique()
        if clients and clients != present:
            raise ConfigError(
                f"partition 'column:{spec.column}' gives {present} sites, but clients={clients} was asked for"
            )
        return int(present)
    return clients or DEFAULT_SITES


def split_holdout(frame: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows the sites get, rows held out): ``share`` of the rows, chosen by ``seed``, kept out of every site.

    The same split in the setup (which writes the held-out rows) and at every simulated site (which drops
    them before taking its partition); the order of the rows in each part is the table's.
    """
    held = round(share * len(frame))
    if held == 0:
        return frame, frame.iloc[0:0]
    order = np.random.default_rng(seed).permutation(len(frame))
    return frame.iloc[np.sort(order[held:])], frame.iloc[np.sort(order[:held])]


def partition_table(
    frame: pd.DataFrame, spec: PartitionSpec, clients: int, seed: int
) -> list[tuple[str, pd.DataFrame]]:
    """All sites' partitions as (site name, rows), in partition-id order."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

    count = num_sites(spec, frame, clients)
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    dataset = Dataset.from_pandas(shuffled, preserve_index=False)
    if spec.kind == "column":
        partitioner = NaturalIdPartitioner(partition_by=spec.column)
    elif spec.kind == "iid":
        partitioner = IidPartitioner(num_partitions=count)
    else:
        partitioner = DirichletPartitioner(
            num_partitions=count, partition_by=spec.column, alpha=spec.alpha, min_partition_size=0, seed=seed
        )
    partitioner.dataset = dataset
    sites = []
    # flwr-datasets shows a progress bar while indexing; keep the run's output readable.
    with contextlib.redirect_stderr(io.StringIO()):
        for pid in range(count):
            part = partitioner.load_partition(pid).to_pandas()
            if spec.kind == "column":
                name = f"{spec.column}={partitioner.partition_id_to_natural_id[pid]}"
            else:
                name = f"site-{pid}"
            sites.append((name, part[frame.columns].reset_index(drop=True)))
    return sites
