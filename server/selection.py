"""Selection rounds, after round 0: the sites vote for the marginals the model misses, then measure them.

Each round the coordinator fits its pool (``marginals.pool``) to every DP marginal it holds, and sends
every site the pool's table for every candidate clique not yet covered by a measured one, with that
site's own round-0 one-way histograms (public to it). Each site votes under DP and, in the same
reply, measures the cliques voted for in the previous round (``client.client_app.measure``, purpose
``select``), both charged to its own measurement reservation (``privacy.measurement_schedule``). The
coordinator sums the noisy counts over the sites into one distribution per clique. A last message
measures the final round's votes. Everything the coordinator does here is post-processing of DP
releases; the votes and counts are the only things that leave a site. Under secure aggregation the
counts travel only into a SecAgg+ sum (``server.secure_round.secure_count_sum``), each site adding a share
of the noise (``privacy.distributed_noise``); the votes stay per site, in the clear. Under
``secure-measurement`` the first round also measures every site's one-way histograms again, into that
sum, and folds them into the round-0 counts (``privacy.measurement_schedule``: round 0 then released
only a third of the one-way share in the clear).
"""

from __future__ import annotations

import json
import math
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.core.config import RunConfig
from fedsynth.marginals.cliques import Clique, Target, candidate_cliques, target_from_counts
from fedsynth.marginals.estimate import Marginals
from fedsynth.marginals.pool import DEFAULT_POOL_ROWS, fit_pool, initial_pool, model_targets, table_of
from fedsynth.privacy.budget import measurement_noise
from fedsynth.privacy.distributed_noise import secure_sum_shares
from fedsynth.privacy.measurement_schedule import MeasurementSchedule
from fedsynth.protocol.messages import (
    CONFIG_RECORD,
    HISTOGRAMS_RECORD,
    LEDGERS_KEY,
    METRICS_RECORD,
    MODEL_TABLES_RECORD,
    NOISE_SHARES_KEY,
    NOISE_STD_KEY,
    ONE_WAY_NOISE_STD_KEY,
    ONE_WAY_PREFIX,
    PURPOSE_KEY,
    SECURE_METRICS_RECORD,
    SELECT_CANDIDATES_KEY,
    SELECT_MEASURE_KEY,
    SELECT_ONE_WAY_KEY,
    SELECT_PENALTY_KEY,
    SELECT_ROUND_KEY,
    SELECT_VOTE_KEY,
    SERVER_ROUND_KEY,
    VOTE_KEY,
    QueryPurpose,
    read_failure,
)
from fedsynth.server.run_state import RunState, keep_ledgers
from fedsynth.server.secure_round import RECONSTRUCTION_SHARE, secure_count_sum
from fedsynth.tabular.schema import Schema


def select_marginals(
    grid: Grid,
    config: RunConfig,
    schema: Schema,
    fields: dict,
    state: RunState,
    marginals: Marginals,
    one_way: dict[int, list[np.ndarray]],
) -> Marginals:
    """Run the selection rounds and add the measured cliques to ``marginals`` (kept in the run state)."""
    rounds = config.selection_rounds(len(schema.columns))
    if rounds == 0 or not one_way:
        return marginals
    names = schema.names
    coarse, targets = model_targets(marginals)
    candidates = candidate_cliques(coarse)
    rng = np.random.default_rng(config.seed)
    pool = fit_pool(initial_pool(targets[: len(coarse)], DEFAULT_POOL_ROWS, rng), targets, rng)
    # The public noise each site's clique counts carry at the run's ε, for AIM's small-table preference.
    schedule = MeasurementSchedule(
        measurement_noise(config.epsilon, config.delta, config.measure_fraction, config.accountant),
        rounds,
        secure_one_way=config.secure_measurement,
    )
    # Under secure aggregation each site adds a share of it (privacy.distributed_noise): the sum carries less.
    secure = config.secure_measurement and len(one_way) >= 2  # a secure sum of one site would be its counts
    shares = secure_sum_shares(len(one_way), RECONSTRUCTION_SHARE) if secure else 1
    penalty_std = schedule.clique_noise / math.sqrt(len(one_way) * shares)
    measured: list[Target] = []
    pending: list[Clique] = []
    votes_by_round: list[list[str]] = []
    refusals_by_round: list[list[str]] = []  # the sites' one-line reasons, when a site sent an error instead
    secure_sums: list[dict] = []  # per secure round: sites in the sum, plain elements the coordinator received
    one_way_keys = {ONE_WAY_PREFIX + spec.column.name: spec.size for spec in marginals.layout}
    one_way_again = 0.0  # noise std of the one-way histograms measured again in round 1 (secure_one_way); 0: not
    for selection_round in range(1, rounds + 2):
        # A candidate inside a measured or pending clique adds nothing that clique's counts do not give.
        known = [t.clique for t in measured] + pending
        open_candidates = [c for c in candidates if not any(c.covered_by(k) for k in known)]
        voting = selection_round <= rounds and bool(open_candidates)
        ask_one_way = selection_round == 1 and schedule.secure_one_way_noise > 0
        if not voting and not pending and not ask_one_way:
            break
        if not voting:
            open_candidates = []
        tables = [table_of(pool, c) for c in open_candidates]
        messages = _messages(config, fields, state, one_way, names, selection_round, pending, open_candidates, tables,
                             voting, penalty_std, ask_one_way)  # fmt: skip
        layout = {c.key(names): c.size for c in pending} | (one_way_keys if ask_one_way else {})
        if layout and secure:
            summed, outcome = secure_count_sum(grid, messages, MODEL_TABLES_RECORD, layout, config.round_timeout)
            replies = outcome.replies
            in_sum = [m for m in replies if not m.has_error()] if summed is not None else []
            secure_sums.append({**outcome.summary(selection_round), "noise_shares": [
                int(_reply_metrics(m).get(NOISE_SHARES_KEY, 1)) for m in in_sum]})  # fmt: skip
            if summed is None:
                log(WARNING, "fedsynth: selection round %d: secure sum failed, counts lost", selection_round)
        else:
            replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
            std_keys = ([NOISE_STD_KEY] if pending else []) + ([ONE_WAY_NOISE_STD_KEY] if ask_one_way else [])
            summed, in_sum = _plain_sums(replies, layout, std_keys)
        sums, variance = _part(summed, in_sum, [c.key(names) for c in pending], NOISE_STD_KEY)
        if ask_one_way:
            one_way_sums, one_way_variance = _part(summed, in_sum, list(one_way_keys), ONE_WAY_NOISE_STD_KEY)
            if one_way_variance > 0:
                one_way_again = math.sqrt(one_way_variance)
                marginals.add_one_way_measurement(one_way_sums, one_way_again)
                coarse, targets = model_targets(marginals)
        keep_ledgers(replies, state.ledgers)
        step = f"selection round {selection_round}/{rounds}" if voting else "last selection measurement"
        failed = [m for m in replies if m.has_error()]
        refusals = sorted({read_failure(m).reason for m in failed})
        refusals_by_round.append(refusals)
        if refusals:  # without this, sites that all refuse look like sites that found nothing to vote for
            log(WARNING, "fedsynth: %s: %d site(s) sent an error instead of a reply: %s", step, len(failed),
                "; ".join(refusals))  # fmt: skip
        votes = _votes(replies, len(open_candidates)) if voting else []
        if variance > 0:  # 0: no site's counts came back (a failed secure sum loses them all)
            std = math.sqrt(variance)
            measured += [target_from_counts(c, total, std) for c, total in zip(pending, sums, strict=True)]
        pending = without_covered([open_candidates[v] for v in most_voted(votes)])
        votes_by_round.append([c.key(names) for c in pending])
        if measured or (ask_one_way and one_way_again):
            pool = fit_pool(pool, targets + measured, rng)
        log(INFO, "fedsynth: %s: %s%d clique(s) measured so far%s, voted for: %s", step,
            "one-way histograms measured again, " if ask_one_way and one_way_again else "", len(measured),
            " (noise shares summed under SecAgg+)" if secure and (measured or one_way_again) else "",
            ", ".join(votes_by_round[-1]) or "none")  # fmt: skip
    if not measured:
        log(WARNING, "fedsynth: the selection rounds measured no clique; the model keeps the one-way marginals")
    marginals.cliques = measured
    if state.measurement is not None:
        state.measurement["marginals"] = marginals.to_state()
        if one_way_again:  # what the report states: the second one-way release and the noise now
            state.measurement["secure_one_way_noise_std_per_count"] = one_way_again
            state.measurement["noise_std_per_count"] = marginals.one_way_std
        state.measurement["selection"] = {"rounds": rounds, "cliques": [t.clique.key(names) for t in measured],
                                          "votes": votes_by_round, "refusals": refusals_by_round,
                                          "secure_sums": secure_sums}  # fmt: skip
    return marginals


MAX_CLIQUES_PER_ROUND = 4  # a round's clique noise grows with sqrt(cliques): with many sites, measure the most voted


def most_voted(votes: list[int], limit: int = MAX_CLIQUES_PER_ROUND) -> list[int]:
    """The candidates to measure next: the ``limit`` most voted (ties: the lower index), in index order.

    Every site's vote is a DP release; counting them is post-processing. Without the limit, k sites
    could pick k cliques and each would carry sqrt(k) times the noise of one.
    """
    tally: dict[int, int] = {}
    for vote in votes:
        tally[vote] = tally.get(vote, 0) + 1
    return sorted(sorted(tally, key=lambda v: (-tally[v], v))[:limit])


def without_covered(cliques: list[Clique]) -> list[Clique]:
    """``cliques`` less those inside another of them: measured together, the smaller would only split the
    round's noise (it grows with sqrt(cliques)) for counts the larger one already gives."""
    return [c for c in cliques if not any(c != other and c.covered_by(other) for other in cliques)]


def _messages(
    config: RunConfig,
    fields: dict,
    state: RunState,
    one_way: dict[int, list[np.ndarray]],
    names: list[str],
    selection_round: int,
    pending: list[Clique],
    candidates: list[Clique],
    tables: list[np.ndarray],
    voting: bool,
    penalty_std: float,
    ask_one_way: bool = False,
) -> list[Message]:
    """One select message per site that released round 0: the model's tables and the site's own one-ways."""
    request = {
        **fields,
        PURPOSE_KEY: QueryPurpose.SELECT,
        SERVER_ROUND_KEY: 0,
        SELECT_ROUND_KEY: selection_round,
        SELECT_MEASURE_KEY: json.dumps([[names[i] for i in c.columns] for c in pending]),
        SELECT_VOTE_KEY: int(voting),
        SELECT_ONE_WAY_KEY: int(ask_one_way),
        SELECT_CANDIDATES_KEY: json.dumps([[names[i] for i in c.columns] for c in candidates]),
        SELECT_PENALTY_KEY: penalty_std,
        LEDGERS_KEY: json.dumps(state.ledgers),
    }
    shared = {c.key(names): Array(t.astype(np.float64)) for c, t in zip(candidates, tables, strict=True)}
    messages = []
    for node, histograms in one_way.items():
        pairs = zip(names, histograms, strict=True)
        own = {ONE_WAY_PREFIX + name: Array(np.asarray(h, dtype=np.float64)) for name, h in pairs}
        tables_record = ArrayRecord({**shared, **own})
        content = RecordDict({CONFIG_RECORD: ConfigRecord(request), MODEL_TABLES_RECORD: tables_record})
        messages.append(Message(content, dst_node_id=node, message_type=MessageType.QUERY))
    return messages


def _reply_metrics(msg: Message) -> dict:
    """A select reply's public figures: its metric record, or under secure aggregation the legacy one."""
    if METRICS_RECORD in msg.content.metric_records:
        return dict(msg.content.metric_records[METRICS_RECORD])
    return dict(msg.content.config_records[SECURE_METRICS_RECORD])


def _plain_sums(
    replies: list[Message], layout: dict[str, int], std_keys: list[str]
) -> tuple[dict[str, np.ndarray], list[Message]]:
    """The sum over the replies of every requested count vector (``layout``: key -> length), and the
    replies that went into it: one missing a vector or a noise scale (``std_keys``), or holding a
    malformed one, is left out (its noise unknown, its counts could not be weighed)."""
    sums = {key: np.zeros(size) for key, size in layout.items()}
    used = []
    if not layout:
        return sums, used
    for msg in replies:
        if msg.has_error():
            continue
        try:
            counts = msg.content.array_records[HISTOGRAMS_RECORD]
            rows = {key: counts[key].numpy().astype(float).reshape(-1) for key in layout}
            if not all(math.isfinite(float(_reply_metrics(msg)[key])) for key in std_keys):
                continue
        except (KeyError, ValueError):
            continue
        if any(rows[key].shape != (size,) or not np.all(np.isfinite(rows[key])) for key, size in layout.items()):
            continue
        for key in layout:
            sums[key] += rows[key]
        used.append(msg)
    return sums, used


def _part(
    summed: dict[str, np.ndarray] | None, in_sum: list[Message], keys: list[str], std_key: str
) -> tuple[list[np.ndarray], float]:
    """The sums of ``keys`` and the variance of their noise: the sum of the noise variances the sites in
    the sum report under ``std_key`` (0 when nothing was summed or nothing of this part asked)."""
    if summed is None or not keys:
        return [], 0.0
    try:
        variance = sum(float(_reply_metrics(m)[std_key]) ** 2 for m in in_sum)
    except (KeyError, ValueError):
        return [], 0.0
    return [summed[key] for key in keys], variance


def _votes(replies: list[Message], candidates: int) -> list[int]:
    """The candidate each site voted for (replies without a valid vote are left out)."""
    votes = []
    for msg in replies:
        if msg.has_error() or not msg.has_content():
            continue
        try:
            vote = int(_reply_metrics(msg)[VOTE_KEY])
        except (KeyError, ValueError):
            continue
        if 0 <= vote < candidates:
            votes.append(vote)
    return votes
