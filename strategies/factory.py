"""Choose the aggregation strategy a run's configuration names."""

from __future__ import annotations

from fedsynth.config import RunConfig
from strategies.gan_fedavg import GanFedAvg


def build_strategy(config: RunConfig) -> GanFedAvg:
    """The strategy for ``config.aggregation``, waiting for ``min-sites`` sites each round."""
    return GanFedAvg(
        connect_timeout=config.round_timeout, min_available_nodes=config.min_sites, min_train_nodes=config.min_sites
    )
