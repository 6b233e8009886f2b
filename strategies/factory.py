"""Choose the aggregation strategy a run's configuration names."""

from __future__ import annotations

from typing import Any

from fedsynth.core.config import RunConfig
from fedsynth.strategies.client_dp import client_dp_strategy
from fedsynth.strategies.gan_fedavg import GanFedAvg
from fedsynth.strategies.robust import GanMedian, GanMultiKrum, GanTrimmedMean


def build_strategy(config: RunConfig) -> GanFedAvg:
    """The strategy for ``config.aggregation``, waiting for ``min-sites`` sites each round."""
    common: dict[str, Any] = {
        "connect_timeout": config.round_timeout,
        "outlier_factor": config.outlier_factor,
        "min_available_nodes": config.min_sites,
        "min_train_nodes": config.min_sites,
    }
    if config.client_dp_noise > 0:
        return client_dp_strategy(config, **common)
    if config.aggregation == "median":
        return GanMedian(**common)
    if config.aggregation == "trimmed-mean":
        return GanTrimmedMean(trim_fraction=config.trim_fraction, **common)
    if config.aggregation == "krum":
        return GanMultiKrum(byzantine=config.krum_byzantine, **common)
    return GanFedAvg(**common)
