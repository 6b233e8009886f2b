"""Client-level DP: Flower's server-side fixed-clipping wrapper around our FedAvg, with its ε.

Beside record-level DP (each site's DP-SGD), a federation can protect whole
sites: each site's update to the packed G+D record is clipped to one L2 norm C
*jointly* over both networks (clipping G and D separately at C each would make
the sensitivity sqrt(2)·C), the clipped updates are averaged with equal weights,
and Gaussian noise of std z·C/m is added (m = sites per round). That is Flower's
``DifferentialPrivacyServerSideFixedClipping``; Flower computes no ε for our
strategy, so ``client_level_epsilon`` does, with Opacus's RDP accountant: every
site takes part in every round (sampling rate 1), one Gaussian mechanism per
round that changed the model.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from fedsynth.config import RunConfig
from privacy.budget import epsilon_of
from strategies.gan_fedavg import GanFedAvg

UNIT_WEIGHT_KEY = "unit-weight"  # every site reports 1: the DP mean must weigh sites equally


def wrap_client_dp(inner: GanFedAvg, config: RunConfig, num_sites: int) -> DifferentialPrivacyServerSideFixedClipping:
    """Flower's server-side fixed clipping (joint over G+D) and noise around ``inner``."""
    if inner.weighted_by_key != UNIT_WEIGHT_KEY:
        raise ValueError("client-level DP needs a strategy weighted by the unit weight")
    return DifferentialPrivacyServerSideFixedClipping(
        inner, noise_multiplier=config.client_dp_noise, clipping_norm=config.client_dp_clip,
        num_sampled_clients=num_sites,
    )  # fmt: skip


def client_level_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε of ``releases`` Gaussian mechanisms at ``noise_multiplier``, every site in every round."""
    return epsilon_of([(noise_multiplier, 1.0, releases)], delta, "rdp") if releases else 0.0


def client_level_section(config: RunConfig, num_sites: int, releases: int) -> dict[str, Any]:
    """The report's statement of the client-level guarantee."""
    return {
        "unit": "site",
        "neighbouring": "add or remove one site's whole update",
        "mechanism": "Flower DifferentialPrivacyServerSideFixedClipping: joint L2 clipping of each site's "
        "G+D update, equal-weight mean, Gaussian noise std z*C/m",
        "clipping_norm": config.client_dp_clip,
        "noise_multiplier": config.client_dp_noise,
        "sites_per_round": num_sites,
        "sample_rate": 1.0,
        "releases": releases,
        "accountant": "rdp (Opacus)",
        "delta": config.delta,
        "epsilon": client_level_epsilon(config.client_dp_noise, releases, config.delta),
        "covers": "model updates only; the DP histograms and validator feedback are record-level releases",
    }
