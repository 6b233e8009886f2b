"""FedAvg over the packed generator + discriminator record.

One aggregation idea, as in Flower's own strategies: a weighted average (by
``num-examples``) of every array in the packed ``G.*`` + ``D.*`` record, so both
networks are averaged each round. What it adds to Flower's ``FedAvg``:

- each reply is checked on its own (exactly one record, the global model's keys
  and shapes, finite values, a valid weight) and a bad one is dropped and
  recorded, instead of one bad reply aborting the whole round;
- a site that took no step this round (its privacy budget is spent) is left out
  of the average, since its weights would only pull the model back;
- per-site metrics of every round (ε spent, steps, losses) are kept for the
  report, keyed by the site's name.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore import log

from fedsynth.errors import UserError

SITE_RECORD = "site"
WEIGHT_KEY = "num-examples"
TRAINED_KEY = "trained-steps"


class SitesUnavailableError(UserError):
    """Too few sites connected for a round to start."""


@dataclass
class RoundLog:
    """What happened to every reply in one round."""

    round: int
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    aggregated: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    idle: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # sampled, but no reply before the timeout


def site_name(msg: Message) -> str:
    """The name a site gave itself, or its node id."""
    if msg.has_content() and SITE_RECORD in msg.content.config_records:
        name = msg.content.config_records[SITE_RECORD].get("name")
        if name:
            return str(name)
    return f"node-{msg.metadata.src_node_id}"


def check_reply(msg: Message, reference: ArrayRecord) -> str | None:
    """Why a reply cannot be aggregated, or ``None`` when it can."""
    content = msg.content
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}"
    if len(content.metric_records) != 1:
        return f"expected one MetricRecord, got {len(content.metric_records)}"
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(WEIGHT_KEY)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
        return f"'{WEIGHT_KEY}' must be a positive number, got {weight!r}"
    arrays = next(iter(content.array_records.values()))
    if set(arrays.keys()) != set(reference.keys()):
        missing = sorted(set(reference.keys()) - set(arrays.keys()))[:3]
        extra = sorted(set(arrays.keys()) - set(reference.keys()))[:3]
        return f"keys differ from the global model (missing {missing}, unexpected {extra})"
    for key, ref in reference.items():
        value = arrays[key].numpy()
        if tuple(value.shape) != tuple(ref.shape):
            return f"'{key}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if not np.all(np.isfinite(value)):
            return f"'{key}' holds NaN or Inf"
    return None


class GanFedAvg(FedAvg):
    """Weighted FedAvg of the packed G+D record with per-reply checks and a round log."""

    def __init__(self, connect_timeout: float = 600.0, **kwargs: Any) -> None:
        kwargs.setdefault("fraction_evaluate", 0.0)
        kwargs.setdefault("weighted_by_key", WEIGHT_KEY)
        super().__init__(**kwargs)
        self.connect_timeout = connect_timeout
        self.history: list[RoundLog] = []
        self.node_names: dict[int, str] = {}
        self._global: ArrayRecord | None = None
        self._sampled: list[int] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global model to every connected site, after waiting (bounded) for enough of them.

        Flower's own sampling waits for ``min_available_nodes`` forever; here the wait
        ends after ``connect_timeout`` seconds with a clear error instead.
        """
        self._global = arrays
        deadline = time.monotonic() + self.connect_timeout
        while len(nodes := list(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise SitesUnavailableError(
                    f"round {server_round}: only {len(nodes)} site(s) connected, "
                    f"{self.min_available_nodes} needed (min-sites) within {self.connect_timeout:g}s"
                )
            time.sleep(0.5)
        count = max(int(len(nodes) * self.fraction_train), min(self.min_train_nodes, len(nodes)))
        self._sampled = sorted(random.sample(nodes, count))
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, self._sampled, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        entry = RoundLog(round=server_round)
        self.history.append(entry)
        usable = []
        replies = list(replies)
        answered = {msg.metadata.src_node_id for msg in replies}
        entry.missing = [self.node_names.get(n, f"node-{n}") for n in self._sampled if n not in answered]
        for msg in replies:
            name = site_name(msg)
            self.node_names[msg.metadata.src_node_id] = name
            if msg.has_error():
                entry.failed[name] = msg.error.reason
                log(WARNING, "round %d: site %s failed: %s", server_round, name, msg.error.reason)
                continue
            reason = check_reply(msg, self._global) if self._global is not None else None
            metrics = next(iter(msg.content.metric_records.values()), None)
            if metrics is not None:
                entry.sites[name] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
            if reason is not None:
                entry.rejected[name] = reason
                log(WARNING, "round %d: update from %s rejected: %s", server_round, name, reason)
                continue
            if metrics.get(TRAINED_KEY, 1) == 0:
                entry.idle.append(name)
                continue
            usable.append((name, msg.content))
        if not usable:
            log(WARNING, "round %d: no usable update; the global model is unchanged", server_round)
            return None, None
        entry.aggregated = [name for name, _ in usable]
        contents = [content for _, content in usable]
        arrays = aggregate_arrayrecords(contents, self.weighted_by_key)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        log(INFO, "round %d: averaged %d site update(s): %s", server_round, len(usable), ", ".join(entry.aggregated))
        return arrays, metrics

    def latest_site_metrics(self) -> dict[str, dict[str, Any]]:
        """The most recent metrics each site reported (its cumulative ε among them)."""
        latest: dict[str, dict[str, Any]] = {}
        for entry in self.history:
            latest.update(entry.sites)
        return latest
