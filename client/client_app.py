"""The ClientApp every site runs: DP training of the GAN on the site's own rows.

Three kinds of message reach a site, and each answer is charged to, or checked
against, the site's own privacy budget:

- query (round 0): release DP one-way (and chosen two-way) histograms of the site's rows;
- train (every round): unpack the global G+D, train the discriminator with
  Opacus DP-SGD and the generator through it, reply with the packed update
  (under secure aggregation, masked by SecAgg+: ``client.secure_aggregation``);
- evaluate: score a synthetic table against the site's rows, either as the
  validator's noisy distance sums and coverage count of a sample, or as the
  release gate's noisy counts of real rows the final table copies or comes
  close to; both are DP releases, reserved in the plan and charged first.

The site's budget is planned once (the run's ε, lowered to its jurisdiction's
cap under the federation's policy) and its spending is kept in ``context.state``,
in an optional ledger file, and by the server for resumes, so ε is cumulative
and the site refuses, and says so, anything that would exceed it. A site whose
jurisdiction the policy does not admit refuses to take part at all.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
import sys
import time
import traceback
from collections.abc import Callable

import pandas as pd
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsynth.client.secure_aggregation import secure_aggregation_mod
from fedsynth.client.site_checks import noisy_feedback, noisy_release_counts
from fedsynth.client.site_data import SimulationMismatchError, SiteData, load_site, schema_from_text
from fedsynth.client.task import train_round
from fedsynth.client.wire_log import wire_log_mod
from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError
from fedsynth.marginals.bins import count, pair_layout, parse_pairs, schema_bins
from fedsynth.marginals.cliques import clique_counts, coarse_counts, codes, model_layout, parse_cliques
from fedsynth.marginals.estimate import estimate_rows
from fedsynth.marginals.release import add_noise, one_way_weight, release_histograms, release_record
from fedsynth.marginals.selection import selection_scores
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import pack, unpack
from fedsynth.privacy.budget import SiteBudget, measurement_noise
from fedsynth.privacy.distributed_noise import noise_shares
from fedsynth.privacy.ledger import budget_to_json, most_spent, read_ledger_file, server_ledger, write_ledger_file
from fedsynth.privacy.measurement_schedule import MeasurementSchedule, rest_noise, share_of
from fedsynth.privacy.mechanisms import epsilon_with_release
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.privacy.site_plan import PlanError, plan_site, site_epsilon
from fedsynth.protocol.messages import (
    ARRAYS_RECORD,
    BUDGET_EXHAUSTED_KEY,
    BUDGET_KEY,
    CONFIG_RECORD,
    COUNTS_RECORD,
    EPSILON_KEY,
    FEEDBACK_SUM_PREFIX,
    HISTOGRAMS_RECORD,
    JURISDICTION_KEY,
    LEDGERS_KEY,
    LR_SCALE_KEY,
    METRICS_RECORD,
    MODEL_TABLES_RECORD,
    NOISE_SHARES_KEY,
    NOISE_STD_KEY,
    ONE_WAY_NOISE_STD_KEY,
    ONE_WAY_PREFIX,
    PAIR_NOISE_STD_KEY,
    POLICY_KEY,
    PUBLIC_ROWS_KEY,
    PURPOSE_KEY,
    SCHEMA_KEY,
    SECURE_SUM_SITES_FIELD,
    SELECT_CANDIDATES_KEY,
    SELECT_MEASURE_KEY,
    SELECT_ONE_WAY_KEY,
    SELECT_PENALTY_KEY,
    SELECT_ROUND_KEY,
    SELECT_VOTE_KEY,
    SERVER_ROUND_KEY,
    SITE_NAME_KEY,
    SITE_RECORD,
    SITE_SECONDS_KEY,
    SYNTHETIC_KEY,
    THRESHOLD_KEY,
    TRAINED_KEY,
    UNIT_WEIGHT_KEY,
    VOTE_KEY,
    WEIGHT_KEY,
    FailureCode,
    Purpose,
    QueryPurpose,
    SiteFailure,
)
from fedsynth.sovereignty.policy import Policy, parse_policy
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema, load_yaml

BUDGET_STATE = "fedsynth.budget"

app = ClientApp(mods=[wire_log_mod])  # the site's own log of what it sends (client.wire_log)


class SimulatedFaultError(RuntimeError):
    """A site failure injected on purpose (``fault-rate``), to exercise dropout handling."""


class NotAdmittedError(UserError):
    """The federation's policy does not admit this site's jurisdiction."""

    def __init__(self, site: str, jurisdiction: str | None) -> None:
        super().__init__(
            f"site {site}: jurisdiction {jurisdiction!r} is not allowed by the federation policy; refusing to take part"
        )
        self.site, self.jurisdiction = site, jurisdiction


class RefusalError(UserError):
    """A request this site declines (a second release, a purpose it does not offer); its text is public."""


class NodeConfigError(UserError):
    """This site's node configuration cannot run the plan (no ledger, no public row count)."""


def public_failures(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Let only public reasons leave the site when a handler fails, as a structured failure reply.

    Flower would send an exception's text to the coordinator. A data error names a cell value and a
    row number, and an unexpected exception may quote anything, so the site logs the full text on its
    own terminal and replies with a ``protocol.messages.SiteFailure``: a code and a reason that names
    files, columns and public settings only.
    """

    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except SimulatedFaultError:
            raise  # a crash on purpose: Flower reports it as the site's failure
        except UserError as exc:
            if exc.public != str(exc):
                print(f"fedsynth site: {exc}", file=sys.stderr)
            return _failure(exc).reply_to(msg)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            reason = f"the site failed with {type(exc).__name__} (details in the site's own log)"
            return SiteFailure(FailureCode.FAILED, reason).reply_to(msg)

    return wrapped


def _failure(exc: UserError) -> SiteFailure:
    if isinstance(exc, NotAdmittedError):
        return SiteFailure(FailureCode.NOT_ADMITTED, exc.public, exc.site, exc.jurisdiction)
    if isinstance(exc, RefusalError):
        return SiteFailure(FailureCode.REFUSED, exc.public)
    if isinstance(exc, (NodeConfigError, PlanError, SimulationMismatchError)):
        return SiteFailure(FailureCode.NODE_CONFIG, exc.public)
    return SiteFailure(FailureCode.DATA, exc.public)


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _policy(record: ConfigRecord) -> Policy | None:
    text = str(record.get(POLICY_KEY, "") or "")
    return parse_policy(load_yaml(text), source="federation policy") if text else None


def _admitted(policy: Policy | None, site: SiteData) -> None:
    """Refuse before touching any data-dependent step when the policy excludes this site."""
    if policy is not None and not policy.admits(site.jurisdiction):
        raise NotAdmittedError(site.name, site.jurisdiction)


def _restore_budget(context: Context, config: RunConfig, site_name: str, ledgers_json: str | None) -> SiteBudget | None:
    """What this site has spent so far: the largest ε of its own state, its own ledger file and the
    coordinator's copy. The coordinator's copy can only add spending; the plan is always the site's own."""
    in_state = None
    if BUDGET_STATE in context.state.config_records:
        in_state = SiteBudget.from_state(dict(context.state.config_records[BUDGET_STATE]))
    on_disk = read_ledger_file(context.node_config["ledger"]) if "ledger" in context.node_config else None
    candidates = (in_state, on_disk, server_ledger(ledgers_json, site_name))
    restored = most_spent(config.delta, config.accountant, *candidates)
    if restored is not None:  # like spending, an answered release check is never forgotten
        restored.release_checked = any(c.release_checked for c in candidates if c is not None)
    return restored


def _caps(context: Context, site: SiteData, record: ConfigRecord) -> tuple[float | None, float | None]:
    """(jurisdiction cap under the federation's policy, the site's own cap from its node config)."""
    policy = _policy(record)
    jurisdiction_cap = None
    if policy is not None and site.jurisdiction is not None:
        jurisdiction_cap = policy.epsilon_cap(site.jurisdiction, float("inf"))
        jurisdiction_cap = None if jurisdiction_cap == float("inf") else jurisdiction_cap
    site_cap = float(context.node_config["epsilon"]) if "epsilon" in context.node_config else None
    return jurisdiction_cap, site_cap


def _public_rows(context: Context, restored: SiteBudget | None) -> float:
    """The row count this site's mechanism is built on: declared public in its node config (``rows``),
    else the DP estimate from its own histogram release; 0 when it has neither yet."""
    if "rows" in context.node_config:
        return float(context.node_config["rows"])
    return restored.public_rows if restored is not None else 0.0


def _site_budget(context: Context, config: RunConfig, site: SiteData, record: ConfigRecord) -> SiteBudget:
    """This site's own plan (``privacy.site_plan``), with the spending it has on record."""
    ledgers = str(record[LEDGERS_KEY]) if LEDGERS_KEY in record else None
    return _plan_with_spending(context, config, site, record, _restore_budget(context, config, site.name, ledgers))


def _plan_with_spending(
    context: Context, config: RunConfig, site: SiteData, record: ConfigRecord, restored: SiteBudget | None
) -> SiteBudget:
    """The site's plan carrying ``restored``'s spending (what ``_restore_budget`` found on record)."""
    policy = _policy(record)  # None: the default policy, whose release rules ask for no copies
    jurisdiction_cap, site_cap = _caps(context, site, record)
    budget = plan_site(
        config,
        _public_rows(context, restored),
        jurisdiction_cap=jurisdiction_cap,
        site_cap=site_cap,
        release_check=policy is None or policy.release.no_copies or policy.release.min_distance > 0,
    )
    if restored is not None:
        budget.history = list(restored.history)
        budget.release_checked = restored.release_checked
        budget.measure_spent = restored.measure_spent
        budget.shared_noise = list(restored.shared_noise)
    return budget


def _save_budget(context: Context, budget: SiteBudget) -> None:
    context.state.config_records[BUDGET_STATE] = ConfigRecord(budget.to_state())
    if "ledger" in context.node_config:
        write_ledger_file(context.node_config["ledger"], budget)


def _open(msg: Message, context: Context) -> tuple[RunConfig, ConfigRecord, SiteData]:
    """The run configuration, the message's config record and this site's data, policy checked."""
    config = RunConfig.from_mapping(dict(context.run_config))
    if "data-path" in context.node_config and "ledger" not in context.node_config:
        # A deployed site must own its spending: without a ledger of its own it would depend on the
        # coordinator to remember what it spent.
        raise NodeConfigError("node config has no 'ledger' path: a deployed site keeps its own privacy ledger")
    record = msg.content[CONFIG_RECORD]
    site = load_site(dict(context.node_config), config.to_mapping(), str(record[SCHEMA_KEY]))
    _admitted(_policy(record), site)
    return config, record, site


def _site_record(site: SiteData, budget: SiteBudget | None) -> ConfigRecord:
    fields = {SITE_NAME_KEY: site.name, JURISDICTION_KEY: site.jurisdiction or ""}
    if budget is not None:
        fields.update({"accountant": budget.accountant, BUDGET_KEY: budget_to_json(budget)})
    return ConfigRecord(fields)


@app.query()
@public_failures
def measure(msg: Message, context: Context) -> Message:
    """Release this site's DP histograms (one-way, and the two-way ones ``measure-pairs`` names) in one
    Gaussian mechanism, charged to its budget; at most once per run. Their totals give the site its
    DP row count, on which its DP-SGD plan is then built."""
    config, record, site = _open(msg, context)
    purpose = str(record.get(PURPOSE_KEY, QueryPurpose.HISTOGRAMS))
    if purpose == QueryPurpose.SELECT:
        return _select(msg, context, config, record, site, secure_sum_sites=1)  # a plain reply: the full noise
    if purpose != QueryPurpose.HISTOGRAMS:
        raise RefusalError(f"query purpose {purpose!r} is not offered by this site")
    ledgers = str(record[LEDGERS_KEY]) if LEDGERS_KEY in record else None
    restored = _restore_budget(context, config, site.name, ledgers)
    if restored is not None and restored.measured:
        raise RefusalError("this site released its histograms already in this run; a second release is refused")
    epsilon = site_epsilon(config.epsilon, *_caps(context, site, record))
    noise_multiplier = measurement_noise(epsilon, config.delta, config.measure_fraction, config.accountant)
    if not noise_multiplier:
        raise RefusalError("this run plans no measurement (measure-fraction is 0)")
    schema = schema_from_text(str(record[SCHEMA_KEY]))
    layout = schema_bins(schema, config.histogram_bins)
    pairs = pair_layout(layout, parse_pairs(config.measure_pairs, schema), config.measure_pair_bins)
    weight = one_way_weight(config.measure_one_way_weight, len(layout), len(pairs))
    # With selection rounds planned, the histograms take only their share of the reservation.
    schedule = MeasurementSchedule(noise_multiplier, config.selection_rounds(len(layout)),
                                   secure_one_way=config.secure_measurement)  # fmt: skip
    # Charge first, then release: a crash in between over-counts, never under-counts.
    history = list(restored.history) if restored else []
    charged = SiteBudget(epsilon, config.delta, config.accountant, 0.0, 0.0, 0, history, noise_multiplier)
    charged.record_measurement(schedule.one_way_noise)
    _save_budget(context, charged)
    noise = NoiseSource.for_run(config.reproducible_noise, config.seed, site.name, "measure")
    release = release_histograms(site.frame, layout, pairs, schedule.one_way_noise, weight, noise)
    charged.public_rows = estimate_rows(release.one_way)  # post-processing of what was just released
    _save_budget(context, charged)
    budget = _site_budget(context, config, site, record)  # the DP-SGD plan, built on that DP row count
    _save_budget(context, budget)
    arrays = release_record(layout, pairs, release.one_way + release.two_way)
    metrics = MetricRecord({NOISE_STD_KEY: release.one_way_std, PAIR_NOISE_STD_KEY: release.two_way_std,
                            EPSILON_KEY: budget.spent, WEIGHT_KEY: round(budget.public_rows)})  # fmt: skip
    reply = {HISTOGRAMS_RECORD: arrays, METRICS_RECORD: metrics, SITE_RECORD: _site_record(site, budget)}
    return Message(RecordDict(reply), reply_to=msg)


def _select(
    msg: Message, context: Context, config: RunConfig, record: ConfigRecord, site: SiteData, secure_sum_sites: int
) -> Message:
    """One selection round (``server.selection``): measure the cliques voted for before, and vote.

    Both are charged to the site's measurement reservation before anything leaves
    (``privacy.measurement_schedule``): the counts as one Gaussian mechanism of L2 sensitivity
    sqrt(cliques) (discrete Gaussian), the vote as a noisy max of scores of L∞ sensitivity 1
    (``marginals.selection``). Beyond the reservation or the budget it is refused.

    Under ``secure-measurement`` the first round also asks for the site's one-way histograms again
    (``SELECT_ONE_WAY_KEY``): once per run, at the plan's ``secure_one_way_noise`` (one Gaussian
    mechanism of L2 sensitivity sqrt(columns)), beside the cliques' counts.

    ``secure_sum_sites`` > 1 (set by the site's own secure-aggregation mod, never by the coordinator):
    the counts go only into a secure sum that holds at least that many sites' noise shares, so the site
    adds one share (``privacy.distributed_noise``), capped by its node setting ``max-noise-shares``.
    """
    schema = schema_from_text(str(record[SCHEMA_KEY]))
    restored = _restore_budget(context, config, site.name, str(record[LEDGERS_KEY]) if LEDGERS_KEY in record else None)
    if restored is None or not restored.measured:
        raise RefusalError("selection rounds come after the histograms, and only when the run plans them")
    budget = _plan_with_spending(context, config, site, record, restored)
    layout = schema_bins(schema, config.histogram_bins)
    coarse = model_layout(layout, config.measure_pair_bins)
    schedule = MeasurementSchedule(budget.measure_noise, config.selection_rounds(len(layout)),
                                   secure_one_way=config.secure_measurement)  # fmt: skip
    if schedule.rounds == 0:
        raise RefusalError("selection rounds come after the histograms, and only when the run plans them")
    pending = parse_cliques(str(record[SELECT_MEASURE_KEY]), schema, coarse)
    voting = bool(int(record[SELECT_VOTE_KEY]))
    one_way_noise = _secure_one_way_noise(budget, schedule) if int(record.get(SELECT_ONE_WAY_KEY, 0)) else 0.0
    # The last measurement (no vote asked) spends what is left: rounds the candidates did not need included.
    left_after_one_way = budget.measure_spent + share_of(budget.measure_noise, one_way_noise)
    clique_noise = schedule.clique_noise if voting else rest_noise(budget.measure_noise, left_after_one_way)
    if pending and not clique_noise:
        raise RefusalError("selection round: the measurement reservation is spent; a further release is refused")
    allowed = _shares_allowed(context, secure_sum_sites)
    counts_std = clique_noise * float(len(pending)) ** 0.5  # of the sum the coordinator sees
    shares = noise_shares(counts_std, allowed, sum(c.size for c in pending))
    one_way_std = one_way_noise * float(len(layout)) ** 0.5
    one_way_shares = noise_shares(one_way_std, allowed, sum(spec.size for spec in layout))
    releases = [(one_way_noise, one_way_shares)] if one_way_noise else []
    releases += [(clique_noise, shares)] if pending else []
    releases += [(schedule.select_noise, 1)] if voting else []
    for noise_multiplier, release_shares in releases:
        _refuse_over_budget(budget, noise_multiplier, "a selection round")
        try:
            budget.record_measurement(noise_multiplier, release_shares)  # charge first, then release
        except RuntimeError as exc:
            raise RefusalError(f"selection round: {exc}") from None
    _save_budget(context, budget)
    row_codes = codes(site.frame, coarse)
    label = (config.seed, site.name, "select", int(record.get(SELECT_ROUND_KEY, 0)))
    share_std = counts_std / shares**0.5
    noisy = add_noise([clique_counts(row_codes, c) for c in pending], share_std, NoiseSource.for_run(
        config.reproducible_noise, *label, "counts"))  # fmt: skip
    one_way_share_std = one_way_std / one_way_shares**0.5
    one_way_again = add_noise(count(site.frame, layout) if one_way_noise else [], one_way_share_std,
                              NoiseSource.for_run(config.reproducible_noise, *label, "one-way"))  # fmt: skip
    vote = -1
    if voting:
        tables = msg.content[MODEL_TABLES_RECORD]
        candidates = parse_cliques(str(record[SELECT_CANDIDATES_KEY]), schema, coarse)
        model = [tables[c.key(schema.names)].numpy() for c in candidates]
        one_way = [
            coarse_counts(tables[ONE_WAY_PREFIX + spec.column.name].numpy(), spec, coarse_spec)
            for spec, coarse_spec in zip(layout, coarse, strict=True)
        ]
        scores = selection_scores(row_codes, candidates, model, one_way, budget.public_rows,
                                  float(record[SELECT_PENALTY_KEY]))  # fmt: skip
        # A scale a hair above the noise multiplier keeps OpenDP's ρ within the charged 1/(2 z²).
        vote = NoiseSource.for_run(config.reproducible_noise, *label, "vote").noisy_max(
            scores, schedule.select_noise * (1 + 1e-9)
        )
    arrays = ArrayRecord({c.key(schema.names): Array(v) for c, v in zip(pending, noisy, strict=True)})
    arrays.update({ONE_WAY_PREFIX + spec.column.name: Array(v) for spec, v in zip(layout, one_way_again, strict=False)})
    metrics = MetricRecord({VOTE_KEY: vote, NOISE_STD_KEY: share_std, ONE_WAY_NOISE_STD_KEY: one_way_share_std,
                            NOISE_SHARES_KEY: shares if pending else one_way_shares,
                            EPSILON_KEY: budget.spent, WEIGHT_KEY: 1})  # weight 1: a secure sum of counts  # fmt: skip
    reply = {HISTOGRAMS_RECORD: arrays, METRICS_RECORD: metrics, SITE_RECORD: _site_record(site, budget)}
    return Message(RecordDict(reply), reply_to=msg)


@app.train(mods=[secure_aggregation_mod])
@public_failures
def train(msg: Message, context: Context) -> Message:
    """One round of local DP training (or, under secure aggregation, a selection round's secure counts)."""
    started = time.perf_counter()
    config, record, site = _open(msg, context)
    if record.get(PURPOSE_KEY) == QueryPurpose.SELECT:
        # Only a SecAgg+ exchange reaches here with the field set: the mod strips it from plain messages.
        return _select(msg, context, config, record, site, int(record.get(SECURE_SUM_SITES_FIELD, 1)))
    server_round = int(record[SERVER_ROUND_KEY])
    seed = _seed(config.seed, site.name, server_round)
    simulated = "partition-id" in context.node_config
    if simulated and config.fault_rate > 0 and random.Random(seed).random() < config.fault_rate:
        raise SimulatedFaultError(f"simulated failure of {site.name} in round {server_round}")
    torch.manual_seed(seed)

    codec = TableCodec(schema_from_text(str(record[SCHEMA_KEY])))
    generator, discriminator = build_gan(codec, GanShape.for_run(config, codec.dim))
    unpack(msg.content[ARRAYS_RECORD], generator, discriminator)
    budget = _site_budget(context, config, site, record)
    lr_scale = float(record.get(LR_SCALE_KEY, 1.0))
    noise = NoiseSource.for_run(config.reproducible_noise, config.seed, site.name, server_round, "dp-sgd")
    outcome = train_round(generator, discriminator, site.encoded, budget, config, noise, lr_scale=lr_scale)
    _save_budget(context, outcome.budget)
    arrays = pack(generator, discriminator, config.transfer_dtype)
    spent = outcome.budget.spent

    metrics = MetricRecord(
        {
            WEIGHT_KEY: round(outcome.budget.public_rows),  # public (declared or DP), never the exact count
            UNIT_WEIGHT_KEY: 1,
            TRAINED_KEY: outcome.trained_steps,
            "steps": outcome.budget.steps,
            "max-steps": outcome.budget.max_steps,
            EPSILON_KEY: spent,
            "epsilon-budget": outcome.budget.epsilon,
            "delta": outcome.budget.delta,
            "noise-multiplier": outcome.budget.noise_multiplier,
            "sample-rate": outcome.budget.sample_rate,
            BUDGET_EXHAUSTED_KEY: int(outcome.budget_exhausted),
            "loss-discriminator-fake": outcome.loss_discriminator_fake,
            "loss-generator": outcome.loss_generator,
        }
    )
    if simulated:  # a deployed site's timings stay with it (they grow with its data)
        metrics[SITE_SECONDS_KEY] = time.perf_counter() - started
    reply = RecordDict(
        {
            ARRAYS_RECORD: arrays,
            METRICS_RECORD: metrics,
            SITE_RECORD: _site_record(site, outcome.budget),
        }
    )
    return Message(reply, reply_to=msg)


@app.evaluate()
@public_failures
def evaluate(msg: Message, context: Context) -> Message:
    """Score a synthetic table against this site's rows, as a DP release charged before it leaves.

    Two purposes, each reserved in the site's plan and answered only as often as planned:

    - ``feedback`` (every ``validator-feedback-every`` rounds): noisy per-column distance sums and a
      noisy coverage count of the validator's sample (``client.site_checks.noisy_feedback``) at
      ``validator-feedback-noise``;
    - ``release-check`` (once, for the final table): noisy counts of real rows the released table
      copies or comes close to (``client.site_checks.noisy_release_counts``) at ``release-check-noise``.

    Anything beyond the plan, or beyond the site's budget, is refused with a public reason.
    """
    config, record, site = _open(msg, context)
    schema = schema_from_text(str(record[SCHEMA_KEY]))
    synthetic = pd.read_csv(io.StringIO(str(record[SYNTHETIC_KEY])), dtype=str, keep_default_na=False)
    purpose = str(record[PURPOSE_KEY])
    budget = _site_budget(context, config, site, record)
    if purpose == Purpose.FEEDBACK:
        return _feedback(msg, context, config, site, schema, synthetic, budget)
    if purpose != Purpose.RELEASE_CHECK:
        raise RefusalError(f"evaluate purpose {purpose!r} is not offered by this site")
    if budget.release_checked:
        raise RefusalError("this site answered the release check already in this run; a second one is refused")
    if not budget.release_check_noise > 0:
        raise RefusalError("this site's plan reserves no release check (the federation policy asks for none)")
    _refuse_over_budget(budget, budget.release_check_noise, "the release check")
    # Charge first, then release: a crash in between over-counts, never under-counts.
    budget.record_release_check()
    budget.release_checked = True
    _save_budget(context, budget)
    noise = NoiseSource.for_run(config.reproducible_noise, config.seed, site.name, "release-check")
    released = noisy_release_counts(
        synthetic, site.frame, schema, float(record[THRESHOLD_KEY]), budget.release_check_noise, noise
    )
    return Message(
        RecordDict({COUNTS_RECORD: ConfigRecord(released), SITE_RECORD: _site_record(site, budget)}), reply_to=msg
    )


def _secure_one_way_noise(budget: SiteBudget, schedule: MeasurementSchedule) -> float:
    """The noise multiplier of the one-way histograms measured again in a selection round, or a refusal:
    the plan has that release only under ``secure-measurement``, and only once."""
    noise = schedule.secure_one_way_noise
    if not noise:
        raise RefusalError("this run's plan measures the one-way histograms only in round 0; refused")
    if (noise, 1.0, 1) in budget.history:  # the ledger holds it already: a second one is not in the plan
        raise RefusalError("this site measured its one-way histograms again already in this run; refused")
    return noise


def _shares_allowed(context: Context, secure_sum_sites: int) -> int:
    """How many noise shares the site counts on: the secure sum's threshold, capped by its own node setting."""
    if "max-noise-shares" not in context.node_config:
        return max(1, secure_sum_sites)
    try:
        cap = int(context.node_config["max-noise-shares"])
    except (TypeError, ValueError):
        cap = 0
    if cap < 1:
        raise NodeConfigError("node config 'max-noise-shares' must be a whole number of at least 1")
    return max(1, min(secure_sum_sites, cap))


def _refuse_over_budget(budget: SiteBudget, noise_multiplier: float, what: str) -> None:
    spent_after = epsilon_with_release(budget.history, noise_multiplier, budget.delta, budget.accountant)
    if spent_after > budget.epsilon * (1 + 1e-9):
        raise RefusalError(f"{what} would take this site over its privacy budget; refused")


def _feedback(
    msg: Message,
    context: Context,
    config: RunConfig,
    site: SiteData,
    schema: Schema,
    synthetic: pd.DataFrame,
    budget: SiteBudget,
) -> Message:
    """One validator feedback release: noisy sums the server divides by this site's public row count."""
    if budget.feedback_given >= budget.feedback_planned:
        raise RefusalError(
            f"this site's plan reserves {budget.feedback_planned} feedback release(s) and all were made; refused"
        )
    _refuse_over_budget(budget, budget.feedback_noise, "validator feedback")
    budget.record_feedback()  # charge first, then release
    _save_budget(context, budget)
    server_round = int(msg.content[CONFIG_RECORD].get(SERVER_ROUND_KEY, 0))
    noise = NoiseSource.for_run(config.reproducible_noise, config.seed, site.name, server_round, "feedback")
    released = noisy_feedback(synthetic, site.frame, schema, budget.feedback_noise, noise)
    metrics = MetricRecord(
        {
            **{FEEDBACK_SUM_PREFIX + key: value for key, value in released["values"].items()},
            NOISE_STD_KEY: released["noise_std"],
            PUBLIC_ROWS_KEY: float(budget.public_rows),
            EPSILON_KEY: budget.spent,
        }
    )
    return Message(RecordDict({METRICS_RECORD: metrics, SITE_RECORD: _site_record(site, budget)}), reply_to=msg)
