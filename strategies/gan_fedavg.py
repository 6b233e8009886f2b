"""FedAvg over the packed generator + discriminator record.

One aggregation idea, as in Flower's own strategies: a weighted average (by
``num-examples``) of every array in the packed ``G.*`` + ``D.*`` record, so both
networks are averaged each round. What it adds to Flower's ``FedAvg``:

- each reply is checked on its own (exactly one record, the global model's keys
  and shapes, finite values, a valid weight) and a bad one is dropped and
  recorded, instead of one bad reply aborting the whole round;
- a site that took no step this round (its privacy budget is spent) is left out
  of the average, since its weights would only pull the model back;
- an update whose L2 distance to the global model is far beyond the round's
  median distance (``outlier-factor``) is rejected and recorded before
  aggregation;
- per-site metrics of every round (ε spent, steps, losses) are kept for the
  report, keyed by the site's name.

The combination itself is one method, ``combine``: the robust strategies in
``strategies.robust`` (median, trimmed mean, multi-Krum) override only that.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fedsynth.core.errors import UserError
from fedsynth.protocol.messages import (
    SECURE_METRICS_RECORD,
    SERVER_ROUND_KEY,
    TRAINED_KEY,
    WEIGHT_KEY,
    read_failure,
    site_name,
)

DISTANCE_KEY = "update-distance"  # per-site figure added to the round log: L2 distance to the global model
MIN_UPDATES_FOR_OUTLIERS = 3


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


def decode_update(msg: Message, reference: ArrayRecord | None) -> tuple[np.ndarray | None, str | None]:
    """A reply's update as one float64 vector in ``reference``'s key order, or why it cannot be aggregated.

    Every array is decoded once, here: a Flower ``Array`` holds bytes, and decoding them
    again for each later use cost several milliseconds per round. Without a reference
    (no global model sent yet) the reply's own keys and order are used.
    """
    content = msg.content
    if len(content.array_records) != 1:
        return None, f"expected one ArrayRecord, got {len(content.array_records)}"
    if len(content.metric_records) != 1:
        return None, f"expected one MetricRecord, got {len(content.metric_records)}"
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(WEIGHT_KEY)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
        return None, f"'{WEIGHT_KEY}' must be a positive number, got {weight!r}"
    arrays = next(iter(content.array_records.values()))
    reference = arrays if reference is None else reference
    if set(arrays.keys()) != set(reference.keys()):
        missing = sorted(set(reference.keys()) - set(arrays.keys()))[:3]
        extra = sorted(set(arrays.keys()) - set(reference.keys()))[:3]
        return None, f"keys differ from the global model (missing {missing}, unexpected {extra})"
    parts = []
    for key, ref in reference.items():
        value = arrays[key].numpy()
        if tuple(value.shape) != tuple(ref.shape):
            return None, f"'{key}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if not np.all(np.isfinite(value)):
            return None, f"'{key}' holds NaN or Inf"
        parts.append(np.asarray(value, dtype=np.float64).ravel())
    return np.concatenate(parts), None


def flatten(record: ArrayRecord, keys: list[str]) -> np.ndarray:
    """Every array of ``record``, in ``keys`` order, as one float64 vector."""
    return np.concatenate([np.asarray(record[key].numpy(), dtype=np.float64).ravel() for key in keys])


def unflatten(vector: np.ndarray, reference: ArrayRecord) -> ArrayRecord:
    """The inverse of ``flatten`` over ``reference``'s keys, shapes and dtypes."""
    arrays, start = {}, 0
    for key, ref in reference.items():
        value = ref.numpy()
        arrays[key] = Array(np.asarray(vector[start : start + value.size].reshape(value.shape), dtype=value.dtype))
        start += value.size
    return ArrayRecord(arrays)


def weighted_mean(matrix: np.ndarray, weights: list[float]) -> np.ndarray:
    """FedAvg: the ``weights``-weighted mean of every coordinate of the (n, d) updates."""
    w = np.asarray(weights, dtype=np.float64)
    return w @ matrix / w.sum()


def norm_outliers(distances: list[float], factor: float) -> list[int]:
    """Indices whose distance exceeds ``factor`` x the median distance (none with < 3 updates or factor 0)."""
    if factor <= 0 or len(distances) < MIN_UPDATES_FOR_OUTLIERS:
        return []
    median = float(np.median(distances))
    if median <= 0:  # at least half the updates equal the global model: no scale to judge by
        return []
    return [i for i, d in enumerate(distances) if d > factor * median]


class GanFedAvg(FedAvg):
    """Weighted FedAvg of the packed G+D record with per-reply checks and a round log."""

    name = "fedavg"

    def __init__(self, connect_timeout: float = 600.0, outlier_factor: float = 10.0, **kwargs: Any) -> None:
        kwargs.setdefault("fraction_evaluate", 0.0)
        kwargs.setdefault("weighted_by_key", WEIGHT_KEY)
        super().__init__(**kwargs)
        self.connect_timeout = connect_timeout
        self.outlier_factor = outlier_factor
        self.history: list[RoundLog] = []
        self.node_names: dict[int, str] = {}
        self._global: ArrayRecord | None = None
        self._sampled: list[int] = []

    def wait_for_sites(self, grid: Grid, label: str) -> list[int]:
        """Connected node ids, once at least ``min_available_nodes`` are connected (bounded wait)."""
        deadline = time.monotonic() + self.connect_timeout
        while len(nodes := list(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise SitesUnavailableError(
                    f"{label}: only {len(nodes)} site(s) connected, "
                    f"{self.min_available_nodes} needed (min-sites) within {self.connect_timeout:g}s"
                )
            time.sleep(0.5)
        return nodes

    def name_of(self, msg: Message) -> str:
        """The site's name; a failed reply carries none, so use the name its node gave earlier."""
        node = msg.metadata.src_node_id
        if msg.has_error():
            return self.node_names.get(node, site_name(msg))
        self.node_names[node] = name = site_name(msg)
        return name

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global model to every connected site, after waiting (bounded) for enough of them.

        Flower's own sampling waits for ``min_available_nodes`` forever; here the wait
        ends after ``connect_timeout`` seconds with a clear error instead.
        """
        self._global = arrays
        nodes = self.wait_for_sites(grid, f"round {server_round}")
        count = max(int(len(nodes) * self.fraction_train), min(self.min_train_nodes, len(nodes)))
        self._sampled = sorted(random.sample(nodes, count))
        config[SERVER_ROUND_KEY] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, self._sampled, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        entry, answered = self._start_round_log(server_round, replies)
        usable, vectors = [], []
        reference = self._global  # without a global model yet, the first good reply sets the key order
        for name, msg in answered:
            vector, reason = decode_update(msg, reference)
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
            vectors.append(vector)
            reference = reference if reference is not None else _arrays(msg.content)
        usable, vectors = self._reject_norm_outliers(server_round, entry, usable, vectors)
        if not usable:
            log(WARNING, "round %d: no usable update; the global model is unchanged", server_round)
            return None, None
        weights = [float(_metrics(content)[self.weighted_by_key]) for _, content in usable]
        combined, used = self.combine(np.stack(vectors), weights)
        arrays = unflatten(combined, reference)
        for index, (name, _) in enumerate(usable):
            if index not in used:
                entry.rejected[name] = f"left out by {self.name} (farthest from the other updates)"
        usable = [usable[i] for i in sorted(used)]
        entry.aggregated = [name for name, _ in usable]
        contents = [content for _, content in usable]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        log(INFO, "round %d: combined %d site update(s) (%s): %s",
            server_round, len(usable), self.name, ", ".join(entry.aggregated))  # fmt: skip
        return arrays, metrics

    def _start_round_log(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[RoundLog, list[tuple[str, Message]]]:
        """A new round log with the failed and missing sites recorded, and the named replies with content."""
        entry = RoundLog(round=server_round)
        self.history.append(entry)
        replies = list(replies)
        answered = {msg.metadata.src_node_id for msg in replies}
        entry.missing = [self.node_names.get(n, f"node-{n}") for n in self._sampled if n not in answered]
        with_content = []
        for msg in replies:
            name = self.name_of(msg)
            if msg.has_error():
                entry.failed[name] = read_failure(msg).reason
                log(WARNING, "round %d: site %s failed: %s", server_round, name, entry.failed[name])
                continue
            with_content.append((name, msg))
        return entry, with_content

    def record_secure_round(
        self, server_round: int, replies: Iterable[Message], aggregate: ArrayRecord | None
    ) -> ArrayRecord | None:
        """Log a round whose updates were summed under secure aggregation, and return the usable mean.

        The replies carry each site's metrics but no arrays: only the unmasked mean
        ``aggregate`` exists. Per-reply checks cannot run, so the mean itself is
        checked; sites that took no step entered the sum with weight 0.
        """
        entry, answered = self._start_round_log(server_round, replies)
        for name, msg in answered:
            metrics = msg.content.config_records.get(SECURE_METRICS_RECORD)
            entry.sites[name] = {k: v for k, v in (metrics or {}).items() if not isinstance(v, list)}
            (entry.idle if entry.sites[name].get(TRAINED_KEY, 1) == 0 else entry.aggregated).append(name)
        if aggregate is None or not entry.aggregated:
            entry.aggregated = []
            log(WARNING, "round %d: secure aggregation gave no usable sum; the global model is unchanged", server_round)
            return None
        if not all(np.all(np.isfinite(array.numpy())) for array in aggregate.values()):
            entry.rejected["secure sum"] = "holds NaN or Inf"
            entry.aggregated = []
            return None
        log(INFO, "round %d: securely summed %d site update(s): %s",
            server_round, len(entry.aggregated), ", ".join(entry.aggregated))  # fmt: skip
        return aggregate

    def combine(self, matrix: np.ndarray, weights: list[float]) -> tuple[np.ndarray, list[int]]:
        """The new global vector from the round's accepted updates (rows of ``matrix``), and the rows it used.

        FedAvg: the mean weighted by each site's row count, over every array of both networks.
        """
        return weighted_mean(matrix, weights), list(range(len(matrix)))

    def _reject_norm_outliers(
        self, server_round: int, entry: RoundLog, usable: list[tuple[str, RecordDict]], vectors: list[np.ndarray]
    ) -> tuple[list[tuple[str, RecordDict]], list[np.ndarray]]:
        """Drop (and record) updates whose distance to the global model dwarfs the round's median."""
        if self._global is None or not usable:
            return usable, vectors
        origin = flatten(self._global, list(self._global.keys()))
        distances = [float(np.linalg.norm(vector - origin)) for vector in vectors]
        for (name, _), distance in zip(usable, distances, strict=True):
            entry.sites.setdefault(name, {})[DISTANCE_KEY] = distance
        outliers = set(norm_outliers(distances, self.outlier_factor))
        if not outliers:
            return usable, vectors
        median = float(np.median(distances))
        for index in sorted(outliers):
            name, distance = usable[index][0], distances[index]
            entry.rejected[name] = (
                f"norm outlier: L2 distance {distance:.4g} to the global model is {distance / median:.1f}x "
                f"the round's median {median:.4g} (outlier-factor {self.outlier_factor:g})"
            )
            log(WARNING, "round %d: update from %s rejected: %s", server_round, name, entry.rejected[name])
        keep = [i for i in range(len(usable)) if i not in outliers]
        return [usable[i] for i in keep], [vectors[i] for i in keep]

    def latest_site_metrics(self) -> dict[str, dict[str, Any]]:
        """The most recent metrics each site reported (its cumulative ε among them)."""
        latest: dict[str, dict[str, Any]] = {}
        for entry in self.history:
            latest.update(entry.sites)
        return latest


def _arrays(content: RecordDict) -> ArrayRecord:
    return next(iter(content.array_records.values()))


def _metrics(content: RecordDict) -> MetricRecord:
    return next(iter(content.metric_records.values()))
