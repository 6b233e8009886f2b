"""Client-level DP: each site's whole G+D update clipped, summed, noised and divided by a public m.

Beside record-level DP (each site's DP-SGD), a federation can protect whole
sites. Each site's update to the packed G+D record, Δ_i = w_i − w_global, is
clipped to one L2 norm C *jointly* over both networks (clipping G and D
separately at C each would make the sensitivity sqrt(2)·C). The clipped updates
are summed, Gaussian noise of std z·C is added to the sum, and the result is
divided by m, the number of sites admitted to the federation: a public number,
fixed for the run. A site that fails, idles or is rejected adds zero.

Why a fixed divisor: dividing by the number of updates received (k) instead,
as a plain mean does, lets one site move the mean by up to 2C/(k+1) (its own
update and the divisor), while the noise was sized for C/m. With the sum and a
fixed m, adding or removing one site's update moves the sum by at most C, so
each round is exactly the Gaussian mechanism with noise multiplier z, which
``client_level_epsilon`` accounts for with Opacus's RDP accountant (every site
in every round: sampling rate 1). The noise comes from the secret source every
DP mechanism uses (``privacy.secret_noise``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from fedsynth.core.config import RunConfig
from fedsynth.privacy.budget import epsilon_of
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.protocol.messages import UNIT_WEIGHT_KEY
from fedsynth.strategies.gan_fedavg import GanFedAvg, flatten


class GanClientDP(GanFedAvg):
    """FedAvg with client-level DP: clip each update jointly to C, sum, add N(0, (zC)²), divide by m."""

    name = "client-dp"

    def __init__(
        self,
        noise_multiplier: float,
        clipping_norm: float,
        noise_for_round: Callable[[int], NoiseSource],
        **kwargs: Any,
    ) -> None:
        # No outlier rule: it is not needed for the guarantee (the sum's sensitivity is C whatever is
        # left out), and a rejection would be a decision on one site's update outside the mechanism.
        super().__init__(weighted_by_key=UNIT_WEIGHT_KEY, **{**kwargs, "outlier_factor": 0.0})
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.noise_for_round = noise_for_round
        self.sites = 0  # m: set once the admitted sites are known (``admit``)
        self._round = 0

    def admit(self, sites: int) -> None:
        """Fix m, the public number of sites the mean divides by, for the whole run."""
        if sites < 1:
            raise ValueError(f"client-level DP needs at least one admitted site, got {sites}")
        self.sites = sites

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self._round = server_round
        return super().aggregate_train(server_round, replies)

    def combine(self, matrix: np.ndarray, weights: list[float]) -> tuple[np.ndarray, list[int]]:
        """w_global + (Σ clip(Δ_i, C) + N(0, (zC)² I)) / m."""
        if not self.sites:
            raise RuntimeError("client-level DP: the number of admitted sites was never set")
        if self._global is None:
            raise RuntimeError("client-level DP needs the global model the updates are taken from")
        origin = flatten(self._global, list(self._global.keys()))
        deltas = matrix - origin
        norms = np.linalg.norm(deltas, axis=1)
        deltas *= np.minimum(1.0, self.clipping_norm / np.maximum(norms, 1e-12))[:, None]
        noise = self.noise_for_round(self._round).gaussian(origin.size, self.noise_multiplier * self.clipping_norm)
        return origin + (deltas.sum(axis=0) + noise) / self.sites, list(range(len(matrix)))


def client_dp_strategy(config: RunConfig, **common: Any) -> GanClientDP:
    """The client-level DP strategy for a run, drawing each round's noise from the run's noise source."""
    return GanClientDP(
        noise_multiplier=config.client_dp_noise,
        clipping_norm=config.client_dp_clip,
        noise_for_round=lambda server_round: NoiseSource.for_run(
            config.reproducible_noise, config.seed, "client-dp", server_round
        ),
        **common,
    )


def client_level_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε of ``releases`` Gaussian mechanisms at ``noise_multiplier``, every site in every round."""
    return epsilon_of([(noise_multiplier, 1.0, releases)], delta, "rdp") if releases else 0.0


def client_level_section(config: RunConfig, num_sites: int, releases: int) -> dict[str, Any]:
    """The report's statement of the client-level guarantee."""
    return {
        "unit": "site",
        "neighbouring": "add or remove one site's whole update",
        "mechanism": "joint L2 clipping of each site's G+D update to C, sum over the sites that trained, "
        "Gaussian noise std z*C on the sum (secret noise), divided by m, the admitted sites (public, fixed)",
        "clipping_norm": config.client_dp_clip,
        "noise_multiplier": config.client_dp_noise,
        "sites_per_round": num_sites,
        "divisor": num_sites,
        "sample_rate": 1.0,
        "releases": releases,
        "accountant": "rdp (Opacus)",
        "delta": config.delta,
        "epsilon": client_level_epsilon(config.client_dp_noise, releases, config.delta),
        "covers": "model updates only; the DP histograms are record-level releases",
    }
