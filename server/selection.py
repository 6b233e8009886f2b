"""Selection rounds, after round 0: the sites vote for the marginals the model misses, then measure them.

Each round the coordinator fits its pool (``marginals.pool``) to every DP marginal it holds, and sends
every site the pool's table for every candidate clique not yet covered by a measured one, with that
site's own round-0 one-way histograms (public to it). Each site votes under DP and, in the same
reply, measures the cliques voted for in the previous round (``client.client_app.measure``, purpose
``select``), both charged to its own measurement reservation (``privacy.measurement_schedule``). The
coordinator sums the noisy counts over the sites into one distribution per clique. A last message
measures the final round's votes. Everything the coordinator does here is post-processing of DP
releases; the votes and counts are the only things that leave a site.
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
from fedsynth.privacy.measurement_schedule import MeasurementSchedule
from fedsynth.protocol.messages import (
    CONFIG_RECORD,
    HISTOGRAMS_RECORD,
    LEDGERS_KEY,
    METRICS_RECORD,
    MODEL_TABLES_RECORD,
    NOISE_STD_KEY,
    ONE_WAY_PREFIX,
    PURPOSE_KEY,
    SELECT_CANDIDATES_KEY,
    SELECT_MEASURE_KEY,
    SELECT_PENALTY_KEY,
    SELECT_ROUND_KEY,
    SELECT_VOTE_KEY,
    SERVER_ROUND_KEY,
    VOTE_KEY,
    QueryPurpose,
)
from fedsynth.server.run_state import RunState, keep_ledgers
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
        measurement_noise(config.epsilon, config.delta, config.measure_fraction, config.accountant), rounds
    )
    penalty_std = schedule.clique_noise / math.sqrt(len(one_way))
    measured: list[Target] = []
    pending: list[Clique] = []
    votes_by_round: list[list[str]] = []
    for selection_round in range(1, rounds + 2):
        open_candidates = [
            c for c in candidates if c not in pending and not any(c.covered_by(t.clique) for t in measured)
        ]
        voting = selection_round <= rounds and bool(open_candidates)
        if not voting and not pending:
            break
        if not voting:
            open_candidates = []
        tables = [table_of(pool, c) for c in open_candidates]
        replies = _ask(grid, config, fields, state, one_way, names, selection_round, pending, open_candidates,
                       tables, voting, penalty_std)  # fmt: skip
        sums, variance, votes = [np.zeros(c.size) for c in pending], 0.0, []
        for msg in replies:
            if msg.has_error():
                continue
            try:
                counts = msg.content.array_records[HISTOGRAMS_RECORD]
                rows = [counts[c.key(names)].numpy().astype(float).reshape(-1) for c in pending]
                if any(r.shape != (c.size,) or not np.all(np.isfinite(r)) for r, c in zip(rows, pending, strict=True)):
                    continue
                metrics = msg.content.metric_records[METRICS_RECORD]
                vote = int(metrics[VOTE_KEY]) if voting else -1
            except (KeyError, ValueError):
                continue
            for total, row in zip(sums, rows, strict=True):
                total += row
            if pending:
                variance += float(metrics[NOISE_STD_KEY]) ** 2
            if 0 <= vote < len(open_candidates):
                votes.append(vote)
        measured += [target_from_counts(c, s, math.sqrt(variance)) for c, s in zip(pending, sums, strict=True)
                     if variance > 0]  # fmt: skip
        pending = [open_candidates[v] for v in sorted(set(votes))]
        votes_by_round.append([c.key(names) for c in pending])
        if measured:
            pool = fit_pool(pool, targets + measured, rng)
        log(INFO, "fedsynth: selection round %d/%d: %d clique(s) measured so far, voted for: %s",
            selection_round, rounds, len(measured), ", ".join(votes_by_round[-1]) or "none")  # fmt: skip
    if not measured:
        log(WARNING, "fedsynth: the selection rounds measured no clique; the model keeps the one-way marginals")
    marginals.cliques = measured
    if state.measurement is not None:
        state.measurement["marginals"] = marginals.to_state()
        state.measurement["selection"] = {"rounds": rounds, "cliques": [t.clique.key(names) for t in measured],
                                          "votes": votes_by_round}  # fmt: skip
    return marginals


def _ask(
    grid: Grid,
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
) -> list[Message]:
    """One select message per site that released round 0; the replies, ledgers kept."""
    request = {
        **fields,
        PURPOSE_KEY: QueryPurpose.SELECT,
        SERVER_ROUND_KEY: 0,
        SELECT_ROUND_KEY: selection_round,
        SELECT_MEASURE_KEY: json.dumps([[names[i] for i in c.columns] for c in pending]),
        SELECT_VOTE_KEY: int(voting),
        SELECT_CANDIDATES_KEY: json.dumps([[names[i] for i in c.columns] for c in candidates]),
        SELECT_PENALTY_KEY: penalty_std,
        LEDGERS_KEY: json.dumps(state.ledgers),
    }
    shared = {c.key(names): Array(t.astype(np.float64)) for c, t in zip(candidates, tables, strict=True)}
    messages = []
    for node, histograms in one_way.items():
        pairs = zip(names, histograms, strict=True)
        own = {ONE_WAY_PREFIX + name: Array(np.asarray(h, dtype=np.float64)) for name, h in pairs}
        tables = ArrayRecord({**shared, **own})
        content = RecordDict({CONFIG_RECORD: ConfigRecord(request), MODEL_TABLES_RECORD: tables})
        messages.append(Message(content, dst_node_id=node, message_type=MessageType.QUERY))
    replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
    keep_ledgers(replies, state.ledgers)
    return replies
