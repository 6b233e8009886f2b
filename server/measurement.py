"""Round 0: collect the sites' DP histograms and build the federation's marginals.

Each site answers a Flower query message with its noisy one-way histograms and
the two-way histograms of the pairs ``measure-pairs`` names
(``client.client_app.measure``), one Gaussian mechanism already charged to its
own accountant. The server only sums them; the result is public and is kept in
the run state (so a resumed run does not measure, and pay, again) and in the
final checkpoint.
"""

from __future__ import annotations

import json
import math
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError
from fedsynth.marginals.bins import pair_layout, parse_pairs, schema_bins
from fedsynth.marginals.estimate import Marginals
from fedsynth.marginals.release import one_way_weight, read_release
from fedsynth.protocol.messages import (
    CONFIG_RECORD,
    HISTOGRAMS_RECORD,
    LEDGERS_KEY,
    METRICS_RECORD,
    NOISE_STD_KEY,
    PAIR_NOISE_STD_KEY,
    SERVER_ROUND_KEY,
    read_failure,
)
from fedsynth.server.oversight import Participation
from fedsynth.server.run_state import RunState, keep_ledgers
from fedsynth.strategies.gan_fedavg import GanFedAvg
from fedsynth.tabular.schema import Schema


class MeasurementFailedError(UserError):
    """Too few sites released their histograms."""


def measure_marginals(
    grid: Grid,
    strategy: GanFedAvg,
    config: RunConfig,
    schema: Schema,
    fields: dict,
    state: RunState,
    participation: Participation,
    site_one_way: dict[int, list[np.ndarray]] | None = None,
) -> Marginals | None:
    """The DP marginals of this run: measured now, or restored from the run state.

    ``site_one_way``, when given, receives every releasing site's own one-way histograms by node id
    (for the selection rounds, ``server.selection``)."""
    if config.measure_fraction == 0:
        return None
    layout = schema_bins(schema, config.histogram_bins)
    pairs = pair_layout(layout, parse_pairs(config.measure_pairs, schema), config.measure_pair_bins)
    if state.measurement is not None:  # measured before this resume: never again
        marginals = Marginals.from_state(schema, state.measurement["marginals"], config.histogram_bins)
        marginals.rake_mix = config.rake_mix  # sampling settings, not part of the release
        marginals.release_from = config.release_from
        return marginals
    nodes = strategy.wait_for_sites(grid, "measurement")
    query = ConfigRecord({**fields, LEDGERS_KEY: json.dumps(state.ledgers), SERVER_ROUND_KEY: 0})
    messages = [
        Message(RecordDict({CONFIG_RECORD: query}), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes
    ]
    replies, excluded = participation.screen(grid.send_and_receive(messages, timeout=config.round_timeout))
    keep_ledgers(replies, state.ledgers)  # a site is charged for its release even if its reply is unusable
    sums = [np.zeros(spec.size) for spec in layout]
    pair_sums = [np.zeros(pair.shape) for pair in pairs]
    variance, pair_variance, sites, failed = 0.0, 0.0, [], {}
    for msg in replies:
        name = strategy.name_of(msg)  # the strategy learns every site's name before round 1
        if msg.has_error():
            failed[name] = read_failure(msg).reason
            continue
        try:
            one_way, two_way = read_release(msg.content.array_records[HISTOGRAMS_RECORD], layout, pairs)
        except ValueError as exc:
            failed[name] = str(exc)
            continue
        for total, values in zip([*sums, *pair_sums], [*one_way, *two_way], strict=True):
            total += values
        if site_one_way is not None:
            site_one_way[msg.metadata.src_node_id] = one_way
        metrics = msg.content.metric_records[METRICS_RECORD]
        variance += float(metrics[NOISE_STD_KEY]) ** 2
        pair_variance += float(metrics.get(PAIR_NOISE_STD_KEY, metrics[NOISE_STD_KEY])) ** 2
        sites.append(name)
    failed.update({name: f"excluded: {why}" for name, why in excluded.items()})
    reasons = set(failed.values())
    if not sites and len(reasons) == 1:  # every site gave the same reason (a mismatch, a data error): say it once
        raise MeasurementFailedError(f"measurement: every site refused: {reasons.pop()}")
    if len(sites) < config.min_replies:
        raise MeasurementFailedError(
            f"measurement: {len(sites)} site(s) released histograms, {config.min_replies} needed (min-replies); "
            f"failed: {failed or 'none'}"
        )
    noise_std, pair_noise_std = math.sqrt(variance), math.sqrt(pair_variance)
    marginals = Marginals.from_noisy_counts(
        layout, sums, noise_std, pairs, pair_sums, config.measure_pair_bins, pair_noise_std
    )
    marginals.rake_mix = config.rake_mix
    marginals.release_from = config.release_from
    state.measurement = {
        "marginals": marginals.to_state(),
        "sites": sites,
        "failed": failed,
        "noise_std_per_count": noise_std,
        "pair_noise_std_per_count": pair_noise_std if pairs else None,
        "one_way_weight": one_way_weight(config.measure_one_way_weight, len(layout), len(pairs)),
        "histograms": len(layout) + len(pairs),
    }
    noise = f"{noise_std:.1f} per one-way count" + (f", {pair_noise_std:.1f} per two-way count" if pairs else "")
    log(INFO, "fedsynth: measured DP histograms from %d site(s): %d one-way, %d two-way (summed noise std %s)",
        len(sites), len(layout), len(pairs), noise)  # fmt: skip
    return marginals


def measurement_summary(config: RunConfig, state: RunState, raking: dict[str, Any] | None = None) -> dict:
    """What the report says about the histogram release (and, when the released table was raked, how)."""
    if state.measurement is None:
        return {"released": False}
    entry = state.measurement
    pairs = [entry_pair["columns"] for entry_pair in entry["marginals"].get("pairs", [])]
    used_for = []
    if config.calibrate and config.release_from == "marginals":
        used_for.append("the released table: rows of a pool fitted to every measured marginal (post-processing)")
    elif config.calibrate:
        used_for.append("calibration of the synthetic table's one-way marginals (post-processing)")
        if pairs:
            used_for.append("raking the synthetic table to the two-way marginals (post-processing)")
    return {
        "released": True,
        "what": "one-way histograms of every column and two-way histograms of the pairs listed, "
        "one Gaussian mechanism (L2 sensitivity sqrt(one-way x weight^2 + two-way)), charged to each site's accountant",
        "budget_fraction": config.measure_fraction,
        "bins_per_numeric_column": config.histogram_bins,
        "pairs": pairs,
        "pair_bins_per_numeric_column": config.measure_pair_bins if pairs else None,
        "rake_mix": config.rake_mix if pairs else None,
        "histograms": entry.get("histograms", len(entry["marginals"]["probabilities"])),
        "sites": entry["sites"],
        "failed": entry["failed"],
        # With the one-way histograms measured again in a secure sum: the noise of both combined.
        "noise_std_per_count": entry["noise_std_per_count"],
        "secure_one_way_noise_std_per_count": entry.get("secure_one_way_noise_std_per_count"),
        "one_way_weight": entry.get("one_way_weight") if pairs else None,
        "pair_noise_std_per_count": entry.get("pair_noise_std_per_count"),
        "used_for": used_for,
        "raking": raking,
        "selection": _selection_summary(config, entry),
        "released_from": config.release_from,
    }


def _selection_summary(config: RunConfig, entry: dict) -> dict | None:
    """What the selection rounds measured (``server.selection``), for the report."""
    selection = entry.get("selection")
    if not selection:
        return None
    return {
        "what": "adaptive selection (AIM-style): each round every site votes under DP (noisy max, charged) for the "
        "2-, 3- or small 4-way marginal its rows say the model misses most, then every site measures the cliques "
        "voted for (discrete Gaussian, charged; the last measurement spends what is left); all within "
        "measure-fraction of ε",
        "rounds": selection["rounds"],
        "cliques": selection["cliques"],
        "votes": selection["votes"],
        # Per round, the one-line reasons of sites that answered with an error (their votes and counts are lost).
        "refusals": selection.get("refusals", []),
        "bins_per_numeric_column": config.measure_pair_bins,
        # Rounds whose counts the coordinator received only as a SecAgg+ sum of noise-shared counts.
        "secure_sums": selection.get("secure_sums", []),
    }
