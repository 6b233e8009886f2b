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

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.core.config import SYNTHETIC_FORMATS, RunConfig
from fedsynth.core.errors import CheckpointError, UserError
from fedsynth.marginals.estimate import Marginals
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import cast_record, pack
from fedsynth.privacy.budget import SiteBudget
from fedsynth.protocol.messages import (
    BUDGET_EXHAUSTED_KEY,
    EPSILON_KEY,
    LEDGERS_KEY,
    LR_SCALE_KEY,
    POLICY_KEY,
    PURPOSE_KEY,
    SCHEMA_KEY,
    SERVER_ROUND_KEY,
    SITE_SECONDS_KEY,
    SYNTHETIC_KEY,
    WEIGHT_KEY,
    Purpose,
    site_name,
)
from fedsynth.reporting.html import write_html_report
from fedsynth.reporting.markdown import write_markdown_report
from fedsynth.reporting.run_report import NOT_DP_WARNING, build_report, json_safe, write_json
from fedsynth.server.checkpoints import checkpoint_calibration, checkpoint_release, load_checkpoint, save_checkpoint
from fedsynth.server.measurement import measure_marginals, measurement_summary
from fedsynth.server.oversight import DEFAULT_POLICY, Participation, ask_sites, combine_feedback, release_gate
from fedsynth.server.round_timer import RoundTimer
from fedsynth.server.run_state import ClientLevelState, RunState, keep_ledgers
from fedsynth.server.secure_round import (
    DEFAULT_MAX_WEIGHT,
    secure_aggregation_section,
    secure_sum_round,
)
from fedsynth.server.selection import select_marginals
from fedsynth.server.synthesis import sample_release, sample_table
from fedsynth.sovereignty.policy import Policy, load_policy
from fedsynth.sovereignty.rules import release_section, sovereignty_section
from fedsynth.strategies.client_dp import GanClientDP, client_level_section
from fedsynth.strategies.factory import build_strategy
from fedsynth.strategies.gan_fedavg import GanFedAvg, RoundLog
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.datasets import resolve_schema_path
from fedsynth.tabular.schema import Schema, dump_schema_text, load_schema
from fedsynth.tabular.table import write_table
from fedsynth.validator.collapse import CollapseRule, ValidatorHistory, Verdict, synthetic_health

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


@dataclass
class Watch:
    """The run's validator state: participation, collapse history, site feedback, learning-rate scale."""

    participation: Participation
    history: ValidatorHistory
    feedback: dict[str, Any]
    lr_scale: float = 1.0

    @classmethod
    def start(cls, config: RunConfig, policy: Policy | None, state: RunState) -> Watch:
        saved = state.validator
        history = (
            ValidatorHistory.from_dict(saved["history"])
            if saved
            else ValidatorHistory(CollapseRule(), action=config.validator_action)
        )
        participation = Participation(policy)
        if saved:
            participation.restore(saved["participation"])
        watch = cls(participation, history, dict(saved["feedback"]) if saved else {})
        watch.lr_scale = float(saved.get("lr_scale", 1.0)) if saved else 1.0
        return watch

    def save(self, state: RunState) -> None:
        state.validator = {
            "history": self.history.to_dict(),
            "participation": self.participation.to_dict(),
            "feedback": self.feedback,
            "lr_scale": self.lr_scale,
        }


@dataclass
class Run:
    """One run's moving parts, put together once by ``run_federation``."""

    grid: Grid
    fed: Federation
    strategy: GanFedAvg
    watch: Watch
    state: RunState
    fields: dict[str, Any]  # sent with every request: the public schema and the federation's policy
    marginals: Marginals | None
    started: float
    warned_small_sites: bool = False

    @property
    def config(self) -> RunConfig:
        return self.fed.config

    def request(self, **more: Any) -> dict[str, Any]:
        """A request's config fields, with the coordinator's current copy of the sites' ledgers."""
        return {**self.fields, LEDGERS_KEY: json.dumps(self.state.ledgers), **more}


@dataclass
class RoundResult:
    """What a training round gave, plain or secure: the new global model (None if no usable aggregate) and
    the sites the policy excluded, with why."""

    aggregated: ArrayRecord | None
    excluded: dict[str, str]


def run_federation(grid: Grid, config: RunConfig) -> dict:
    """Run every round, then write the synthetic table (``synthetic.csv`` or ``.parquet``), ``report.json``
    and checkpoints."""
    run, arrays = _open_run(grid, config)
    failed_in_a_row = 0
    for server_round in range(run.state.completed_round + 1, config.rounds + 1):
        tick, timer = time.time(), RoundTimer()
        result = _train_round(run, server_round, arrays, timer)
        entry = _log_round(run, server_round, result)
        if result.aggregated is not None and len(entry.aggregated) >= config.min_replies:
            arrays = cast_record(result.aggregated, "float32")  # the server's copy stays in full precision
            run.watch.participation.contributed.update(entry.aggregated)
            failed_in_a_row = 0
        else:
            failed_in_a_row += 1
            log(WARNING, "fedsynth: round %d had %d usable update(s), %d needed (min-replies); model unchanged",
                server_round, len(entry.aggregated), config.min_replies)  # fmt: skip
        verdict = _close_round(run, server_round, arrays, entry, timer, tick)
        if verdict.action == "stop":
            log(WARNING, "fedsynth: collapse in round %d (%s); stopping, keeping round %s",
                server_round, "; ".join(verdict.reasons), verdict.best_round)  # fmt: skip
            arrays = _round_arrays(run.fed, verdict.best_round)
            break
        if verdict.action == "rollback":
            arrays = _round_arrays(run.fed, verdict.rollback_to)
            run.watch.lr_scale = verdict.lr_scale
            log(WARNING, "fedsynth: collapse in round %d (%s); rolled back to round %s, learning rate x%.2f",
                server_round, "; ".join(verdict.reasons), verdict.rollback_to, verdict.lr_scale)  # fmt: skip
        if failed_in_a_row >= config.max_failed_rounds:
            raise FederationStoppedError(
                f"stopped after round {server_round}: {failed_in_a_row} rounds in a row without "
                f"{config.min_replies} usable update(s) (max-failed-rounds); resume with --resume"
            )
        if entry.sites and all(m.get(BUDGET_EXHAUSTED_KEY) for m in entry.sites.values()) and not entry.aggregated:
            log(INFO, "fedsynth: every site has spent its privacy budget; stopping after round %d", server_round)
            break
    return _finish(run, arrays)


def _open_run(grid: Grid, config: RunConfig) -> tuple[Run, ArrayRecord]:
    """Everything fixed before round 1: folders, the start (fresh or resumed), the strategy, the DP marginals."""
    started = time.time()
    if config.reproducible_noise:
        log(WARNING, "fedsynth: %s", NOT_DP_WARNING)
    fed = Federation.from_config(config)
    policy = load_policy(config.policy) if config.policy else None
    if policy is not None:
        policy.check_schema(fed.schema)
    earlier = [name for name in ("report.json", "checkpoints/state.json") if (fed.out / name).exists()]
    if earlier and not config.resume:  # `flwr run .` has no --overwrite: never replace an earlier run silently
        raise UserError(
            f"{fed.out}: holds an earlier run ({', '.join(earlier)}); choose another 'out', remove that run, "
            "or continue it with resume=true"
        )
    fed.checkpoints.mkdir(parents=True, exist_ok=True)
    arrays, state = _start(fed)
    if not config.resume:
        write_json(fed.out / CONFIG_FILE, config.to_mapping())
    strategy = build_strategy(config)
    strategy.history = state.history  # one round log: the strategy appends, the state saves it
    watch = Watch.start(config, policy, state)
    fields = {SCHEMA_KEY: dump_schema_text(fed.schema)}
    if policy is not None:
        fields[POLICY_KEY] = Path(config.policy).read_text(encoding="utf-8")
    one_way: dict[int, list[np.ndarray]] = {}
    resumed = state.measurement is not None
    marginals = measure_marginals(grid, strategy, config, fed.schema, fields, state, watch.participation, one_way)
    if marginals is not None and not resumed:
        marginals = select_marginals(grid, config, fed.schema, fields, state, marginals, one_way)
    run = Run(grid, fed, strategy, watch, state, fields, marginals, started)
    if isinstance(strategy, GanClientDP):
        # m is fixed for the whole run, a resumed one too: the divisor the noise was sized for.
        if state.client_level is None:
            state.client_level = ClientLevelState(sites=len(_admitted_nodes_after_wait(run)))
        strategy.admit(state.client_level.sites)
    return run, arrays


def _train_round(run: Run, server_round: int, arrays: ArrayRecord, timer: RoundTimer) -> RoundResult:
    """Send the global model, gather the updates (plainly or under SecAgg+), screen and aggregate them."""
    config = run.config
    train_config = ConfigRecord(run.request(**{LR_SCALE_KEY: run.watch.lr_scale}))
    sent = cast_record(arrays, config.transfer_dtype)
    messages = run.watch.participation.without_excluded(
        run.strategy.configure_train(server_round, sent, train_config, run.grid)
    )
    if config.secure_aggregation:
        with timer.part("exchange"):  # the SecAgg+ stages interleave messaging and summing
            return _secure_exchange(run, messages, server_round, arrays)
    with timer.part("exchange"):
        replies = list(run.grid.send_and_receive(messages, timeout=config.round_timeout))
    with timer.part("aggregate"):
        keep_ledgers(replies, run.state.ledgers)
        replies, excluded = run.watch.participation.screen(replies)
        aggregated, _ = run.strategy.aggregate_train(server_round, replies)
    return RoundResult(aggregated, excluded)


def _log_round(run: Run, server_round: int, result: RoundResult) -> RoundLog:
    """The round's entry in the round log, with exclusions, and the client-level release counted."""
    history = run.strategy.history
    if not history or history[-1].round != server_round:
        history.append(RoundLog(round=server_round, failed={"all": "client-level DP skipped the round"}))
    entry = history[-1]
    if result.aggregated is not None and run.state.client_level is not None:
        run.state.client_level.releases += 1  # one Gaussian mechanism on the site updates
    entry.failed.update({name: f"excluded: {why}" for name, why in result.excluded.items()})
    # An excluded site was sampled but never sent a message: it is excluded, not missing. The strategy may know
    # it only by its node id (its refusal never reached the strategy), so match both.
    excluded = run.watch.participation.excluded_nodes
    gone = set(excluded.values()) | {f"node-{node}" for node in excluded}
    entry.missing = [n for n in entry.missing if n not in gone]
    return entry


def _close_round(
    run: Run, server_round: int, arrays: ArrayRecord, entry: RoundLog, timer: RoundTimer, tick: float
) -> Verdict:
    """Checkpoint the round, let the validator judge it, and save the state a resume starts from."""
    fed, state = run.fed, run.state
    name = f"round-{server_round:03d}.pt"
    with timer.part("checkpoint"):
        save_checkpoint(fed.checkpoints / name, arrays, fed.schema, fed.shape, server_round)
    with timer.part("validator"):
        verdict = _validate_round(run, arrays, server_round)
    state.completed_round, state.checkpoint = server_round, name
    state.round_seconds.append(time.time() - tick)
    parts = {**timer.finish(), **_site_seconds(entry)}
    state.round_parts.append(parts)
    run.watch.save(state)
    saving = time.perf_counter()
    state.save(fed.checkpoints)
    parts["state_save_after"] = time.perf_counter() - saving  # not in the round's seconds; kept for the report
    _log_progress(server_round, run.config, entry, state.round_seconds[-1])
    if not run.warned_small_sites and entry.sites:  # once per run (per resume), when the sites first report
        _warn_small_sites(run.config, entry)
        run.warned_small_sites = True
    return verdict


NOISY_SITE = 5.0  # a DP-SGD noise multiplier above this drowns a site's gradients: say so once, with what helps


def _warn_small_sites(config: RunConfig, entry: RoundLog) -> None:
    """Name the sites whose budget, for their size, leaves mostly noise in their updates, and what would help.

    Reads public figures only: each site's planned noise multiplier and its DP row count from its reply."""
    for name, metrics in sorted(entry.sites.items()):
        noise = float(metrics.get("noise-multiplier", 0.0))
        if noise > NOISY_SITE:
            log(WARNING, "fedsynth: site %s (about %d rows) trains with noise multiplier %.1f at ε=%g: its updates "
                "will be mostly noise; fewer rounds or local-steps, a larger budget, or pooling it with a "
                "neighbouring site would help", name, int(metrics.get(WEIGHT_KEY, 0)), noise,
                float(metrics.get("epsilon-budget", config.epsilon)))  # fmt: skip


def _secure_exchange(run: Run, messages: list, server_round: int, arrays: ArrayRecord) -> RoundResult:
    """One round under SecAgg+: the sites' metrics and ledgers arrive in the clear, the updates only as a sum."""
    known_rows = [int(m[WEIGHT_KEY]) for m in run.strategy.latest_site_metrics().values() if WEIGHT_KEY in m]
    max_weight = max(known_rows, default=DEFAULT_MAX_WEIGHT)  # the tightest scale that cannot overflow
    outcome = secure_sum_round(run.grid, messages, server_round, arrays, run.config.round_timeout, max_weight)
    keep_ledgers(outcome.replies, run.state.ledgers)
    replies, excluded = run.watch.participation.screen(outcome.replies)
    aggregate = outcome.aggregate
    inside_the_sum = [site_name(m) for m in outcome.replies if m.has_content() and site_name(m) in excluded]
    if inside_the_sum:
        # The policy excludes a site whose update is already in the sum, and a sum cannot be taken apart.
        log(WARNING, "fedsynth: round %d: discarding the secure sum, it includes %s", server_round, inside_the_sum)
        aggregate = None
    aggregated = run.strategy.record_secure_round(server_round, replies, aggregate)
    run.state.secure_rounds.append(outcome.summary(server_round))
    return RoundResult(aggregated, excluded)


def _site_seconds(entry: RoundLog) -> dict[str, float]:
    """The sites' own handler seconds this round (their compute, without Flower's messaging)."""
    seconds = [float(m[SITE_SECONDS_KEY]) for m in entry.sites.values() if SITE_SECONDS_KEY in m]
    return {"site_seconds_sum": sum(seconds), "site_seconds_max": max(seconds, default=0.0)}


def _round_arrays(fed: Federation, server_round: int | None) -> ArrayRecord:
    """The global model after ``server_round`` (0 or None: the initial weights)."""
    if not server_round:
        return pack(*build_gan(TableCodec(fed.schema), fed.shape, seed=fed.config.seed))
    return load_checkpoint(fed.checkpoints / f"round-{server_round:03d}.pt")["record"]


def _admitted_nodes_after_wait(run: Run) -> list[int]:
    run.strategy.wait_for_sites(run.grid, "client-level DP")
    return _admitted_nodes(run)


def _admitted_nodes(run: Run) -> list[int]:
    return [n for n in run.grid.get_node_ids() if n not in run.watch.participation.excluded_nodes]


def _validate_round(run: Run, arrays: ArrayRecord, server_round: int) -> Verdict:
    """Score the new global generator's output (no real data), and ask sites for DP feedback when due."""
    fed, watch, config = run.fed, run.watch, run.config
    sample = sample_table(arrays, fed.schema, fed.shape, config.validator_rows, seed=config.seed + server_round)
    verdict = watch.history.observe(server_round, synthetic_health(sample, fed.schema, seed=config.seed))
    if server_round in config.feedback_rounds:
        request = run.request(**{PURPOSE_KEY: Purpose.FEEDBACK, SYNTHETIC_KEY: sample.to_csv(index=False),
                                 SERVER_ROUND_KEY: server_round})  # fmt: skip
        answers, failures = ask_sites(run.grid, _admitted_nodes(run), request, config.round_timeout,
                                      ledgers=run.state.ledgers)  # fmt: skip
        combined = combine_feedback(answers)
        combined["failed"] = failures
        watch.feedback[str(server_round)] = combined
    return verdict


def _finish(run: Run, arrays: ArrayRecord) -> dict:
    """Sample the table, ask the release gate, and write what the run produced."""
    training_done = time.time()
    fed, state, strategy, watch, config = run.fed, run.state, run.strategy, run.watch, run.config
    calibration = run.marginals if config.calibrate else None
    extra = {"calibration": checkpoint_calibration(calibration, config.histogram_bins)} if calibration else {}
    save_checkpoint(fed.checkpoints / "final.pt", arrays, fed.schema, fed.shape, state.completed_round, extra=extra)
    site_metrics = _with_ledgers(strategy.latest_site_metrics(), state)
    rows = config.rows or int(sum(m.get(WEIGHT_KEY, 0) for m in site_metrics.values()))
    table, raking = sample_release(arrays, fed.schema, fed.shape, rows, seed=config.seed, marginals=calibration)

    policy = watch.participation.policy or DEFAULT_POLICY
    epsilons = {name: float(m.get(EPSILON_KEY, 0.0)) for name, m in site_metrics.items()}
    decision = release_gate(run.grid, _admitted_nodes(run), table, policy, run.fields, watch.participation,
                            epsilons, config.epsilon, config.round_timeout, fed.schema, state.ledgers)  # fmt: skip
    state.save(fed.checkpoints)  # the sites' ledgers now hold the release check's charge: keep it for a resume
    extra["release"] = checkpoint_release(decision.approved, decision.reasons, run.fields.get(POLICY_KEY, ""))
    save_checkpoint(fed.checkpoints / "final.pt", arrays, fed.schema, fed.shape, state.completed_round, extra=extra)
    site_metrics = _with_ledgers(strategy.latest_site_metrics(), state)  # ε now includes the release check
    synthetic = fed.out / f"synthetic.{config.synthetic_format}"
    for earlier in SYNTHETIC_FORMATS:  # never leave an earlier table looking released
        if (fed.out / f"synthetic.{earlier}") != synthetic and (fed.out / f"synthetic.{earlier}").exists():
            (fed.out / f"synthetic.{earlier}").unlink()
    if decision.approved:
        write_table(decision.table, synthetic)
    elif synthetic.exists():
        synthetic.unlink()  # never leave an earlier table looking released
    finished = time.time()
    timings = {
        "total_seconds": finished - run.started,
        "training_seconds": training_done - run.started,
        "sampling_seconds": finished - training_done,
        "rounds_seconds": state.round_seconds,
        "round_parts": state.round_parts,
        "resumed_after_rounds": state.resumed_at,
    }
    outputs = {
        "synthetic": synthetic.name if decision.approved else None,
        "rows": len(decision.table) if decision.approved else 0,
        "checkpoints": "checkpoints/",
        "final_checkpoint": "checkpoints/final.pt",
    }
    report = build_report(config, site_metrics, strategy.history, timings, outputs)
    report["privacy"]["measurement"] = measurement_summary(config, state, raking)
    report["privacy"]["validator_feedback"] = _feedback_costs(state, watch)
    if state.client_level is not None:
        level = state.client_level
        report["privacy"]["client_level"] = client_level_section(config, level.sites, level.releases)
    if config.secure_aggregation:
        report["secure_aggregation"] = secure_aggregation_section(state.secure_rounds)
    report["validator"] = {
        **watch.history.to_dict(),
        "judged": "the raw generator's sample after each round (validator-rows rows, before calibration)",
        "released_table": _released_health(decision.table, fed.schema, watch.history.rule, config.seed),
        "site_feedback": watch.feedback,
    }
    report["sovereignty"] = sovereignty_section(policy, decision)
    report["release"] = release_section(decision, synthetic.name)
    report = json_safe(report)
    write_json(fed.out / "report.json", report)
    write_html_report(write_markdown_report(report, fed.out))
    outcome = f"wrote {len(decision.table)} rows to {synthetic}" if decision.approved else "release WITHHELD"
    released_health = report["validator"]["released_table"]
    log(INFO, "fedsynth: collapse monitor: raw generator %s; released table %s; see %s",
        report["validator"]["final"]["verdict"],
        ("healthy" if released_health["healthy"] else "collapsed") if released_health["judged"] else "not judged",
        fed.out / "report.md")  # fmt: skip
    if config.reproducible_noise:
        log(WARNING, "fedsynth: %s. %s", outcome, report["privacy"]["warning"])
    else:
        log(INFO, "fedsynth: %s (ε max %.3f, δ %g)", outcome, report["privacy"]["epsilon_max"], config.delta)
    return report


def _released_health(table: Any, schema: Schema, rule: CollapseRule, seed: int) -> dict[str, Any]:
    """The collapse rule applied to the table as released (after calibration and the policy), on its own:
    the round verdicts judge the raw generator, which calibration can change a great deal."""
    if len(table) == 0 or len(table.columns) != len(schema.names):
        return {"judged": False, "why": "no full table was released" if len(table) else "the table is empty"}
    reasons = rule.check(synthetic_health(table, schema, seed=seed))
    return {"judged": True, "healthy": not reasons, "reasons": reasons, "rows": len(table)}


def _with_ledgers(site_metrics: dict[str, dict[str, Any]], state: RunState) -> dict[str, dict[str, Any]]:
    """Each site's last metrics, with ε and steps recomputed from its ledger: that includes
    releases made after its last training reply (the release check)."""
    out = {}
    for name, metrics in site_metrics.items():
        merged = dict(metrics)
        if name in state.ledgers:
            budget = SiteBudget.from_state(state.ledgers[name])
            merged.update({EPSILON_KEY: budget.spent, "steps": budget.steps})
            if budget.shared_noise:  # the trust the figure rests on: report.privacy.distributed_noise
                merged["epsilon-if-sums-opened"] = budget.spent_if_sum_opened
        out[name] = merged
    return out


def _feedback_costs(state: RunState, watch: Watch) -> dict[str, Any]:
    """Per site: how many validator feedback releases were made and charged."""
    out: dict[str, Any] = {"rounds": sorted(int(r) for r in watch.feedback)}
    for name, entry in sorted(state.ledgers.items()):
        budget = SiteBudget.from_state(entry)
        out[name] = {"releases": budget.feedback_given, "noise_multiplier": budget.feedback_noise}
    return out


def _log_progress(server_round: int, config: RunConfig, entry: Any, seconds: float) -> None:
    sites = "  ".join(f"{name} ε={m.get('epsilon', float('nan')):.3f}" for name, m in sorted(entry.sites.items()))
    for label, names in (("failed", entry.failed), ("rejected", entry.rejected), ("no reply", entry.missing)):
        if names:
            sites += f"  {label}: {', '.join(names)}"
    log(INFO, "fedsynth: round %d/%d done in %.1fs  %s", server_round, config.rounds, seconds, sites)
