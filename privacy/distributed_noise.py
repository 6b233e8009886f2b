"""Distributed noise: under secure aggregation each site adds a share of the noise, the sum carries all of it.

Without secure aggregation every site adds the full noise for its own ε, and the coordinator's sum
over k sites carries sqrt(k) times the noise of one central release. Under SecAgg+ the coordinator
sees only the sum, so each site may add a discrete Gaussian of variance σ²/t: the sum of t such shares
is (almost) a discrete Gaussian of variance σ², the noise of one release at the planned σ (Kairouz,
Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
Aggregation", ICML 2021, Theorem 11: the Rényi divergence of the sum is at most that of the continuous
Gaussian of variance tσ²_share plus τ = 10·Σ_{k=1}^{t-1} exp(-2π²σ²_share·k/(k+1)) per coordinate).

The trust this rests on, stated in the report: at least ``t`` sites in every secure sum add their
shares honestly, and the coordinator sees only the sum (SecAgg+'s own threat model). ``t`` is the
SecAgg+ reconstruction threshold (the coordinator cannot unmask a sum of fewer sites), capped by the
site's own ``max-noise-shares`` node setting. If the sum were ever opened, a site's own share would be
all that protects its rows: the report gives that ε as well.
"""

from __future__ import annotations

import math

# The additive Rényi term τ·d of the sum (d: coordinates released) that a split may leave; above it the
# site uses fewer shares. At 1e-9 the term moves ε in the ninth decimal; it is not added to the ledger.
MAX_SUM_GAP = 1e-9


def sum_gap(share_std: float, shares: int, coordinates: int) -> float:
    """τ·d of Kairouz et al. (Theorem 11): how far a sum of ``shares`` discrete Gaussians of standard
    deviation ``share_std`` may be from one discrete Gaussian, in Rényi divergence, over ``coordinates``."""
    if shares <= 1:
        return 0.0
    variance = share_std * share_std
    tau = 10.0 * sum(math.exp(-2.0 * math.pi**2 * variance * k / (k + 1)) for k in range(1, shares))
    return tau * coordinates


def noise_shares(total_std: float, wanted: int, coordinates: int) -> int:
    """The number of shares to split noise of standard deviation ``total_std`` into: at most ``wanted``,
    and no more than keeps the sum within ``MAX_SUM_GAP`` of one discrete Gaussian (1 = no split)."""
    for shares in range(max(1, int(wanted)), 1, -1):
        if sum_gap(total_std / math.sqrt(shares), shares, coordinates) <= MAX_SUM_GAP:
            return shares
    return 1


def secure_sum_shares(sites_in_round: int, reconstruction_share: float) -> int:
    """The fewest sites whose shares a secure sum over ``sites_in_round`` sites holds: SecAgg+ unmasks a
    sum only with the shares of ``ceil(reconstruction_share * sites)`` sites, so no smaller sum exists."""
    return max(1, math.ceil(reconstruction_share * sites_in_round - 1e-9))
