"""How a site's measurement reservation is split between the one-way histograms and the selection rounds.

The plan reserves the measurement as one Gaussian mechanism at noise multiplier z (``measure-fraction``
of ε, ``privacy.budget.measurement_noise``), that is ρ = 1/(2z²) in zCDP. Gaussian mechanisms (and
the noisy max, at ρ = 1/(2s²)) compose by adding their ρ, and the Rényi accountant adds their curves
α·ρ exactly, so the reservation can be spent in parts without changing the plan: a share
``one_way_share`` on the one-way histograms (round 0), the rest evenly over ``rounds`` selection
rounds, each split ``SELECT_SHARE`` to the vote and the remainder to measuring the cliques voted for
(AIM's split). Part p of the reservation is a Gaussian mechanism at noise multiplier z / sqrt(p).

Under ``secure-measurement`` the one-way share is itself split in two (``secure_one_way``): a small
part (``PLAIN_ONE_WAY_SHARE``) stays in the round-0 release, which each site needs in the clear (its DP
row count, and FLAIM's raking of the votes to its own one-ways), and the rest measures the one-way
histograms once more in the first selection round, into the SecAgg+ sum with distributed noise. Summed
in the clear over k sites, one-way counts carry k times the variance of one release; in the secure sum
about one release's (``privacy.distributed_noise``). On titanic (4 sites) that takes the pooled one-way
noise from 32.8 to about 21 per count at the same ε.
The last measurement (no vote follows) spends whatever the site has left (``rest_noise``): when the
candidates run out before the planned rounds do, the rounds not held would otherwise go unspent (as
AIM spends its last round's budget on its final measurement). Everything here is a function of public
settings and of what the site has spent, never of its data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SELECT_SHARE = 0.1  # share of a selection round's budget spent on the vote (AIM's default)
DEFAULT_ONE_WAY_SHARE = 0.3
PLAIN_ONE_WAY_SHARE = 0.1  # of the reservation, with secure one-ways: the round-0 release in the clear


@dataclass(frozen=True)
class MeasurementSchedule:
    """Noise multipliers of every release in the measurement reservation (module docstring)."""

    reserved_noise: float  # z of the whole reservation; 0: the run measures nothing
    rounds: int  # selection rounds; 0: the one-way histograms take the whole reservation
    one_way_share: float = DEFAULT_ONE_WAY_SHARE
    secure_one_way: bool = False  # part of the one-way share measured again in the first round's secure sum

    def _noise(self, share: float) -> float:
        return self.reserved_noise / math.sqrt(share) if share > 0 else 0.0

    @property
    def _one_way_shares(self) -> tuple[float, float]:
        """(the round-0 release's share, in the clear; the share measured again in the secure sum)."""
        if not self.rounds:
            return 1.0, 0.0
        plain = min(PLAIN_ONE_WAY_SHARE, self.one_way_share) if self.secure_one_way else self.one_way_share
        return plain, self.one_way_share - plain

    @property
    def one_way_noise(self) -> float:
        """Noise multiplier of the round-0 one-way histograms (released in the clear)."""
        return self._noise(self._one_way_shares[0])

    @property
    def secure_one_way_noise(self) -> float:
        """Noise multiplier of the one-way histograms measured again in the first selection round; 0: none."""
        return self._noise(self._one_way_shares[1])

    @property
    def select_noise(self) -> float:
        """Noise multiplier (= Gumbel scale) of one site's vote in one selection round."""
        return self._noise((1.0 - self.one_way_share) * SELECT_SHARE / self.rounds) if self.rounds else 0.0

    @property
    def clique_noise(self) -> float:
        """Noise multiplier of one round's clique measurement (L2 sensitivity sqrt(cliques measured))."""
        return self._noise((1.0 - self.one_way_share) * (1.0 - SELECT_SHARE) / self.rounds) if self.rounds else 0.0


def rest_noise(reserved_noise: float, spent: float) -> float:
    """Noise multiplier of one Gaussian release spending what is left of a reservation at ``reserved_noise``,
    ``spent`` (a share) of it used; 0 when nothing is left."""
    left = 1.0 - spent
    return reserved_noise / math.sqrt(left) if reserved_noise > 0 and left > 1e-9 else 0.0


def share_of(reserved_noise: float, noise: float) -> float:
    """The part of a reservation at ``reserved_noise`` that one Gaussian release at ``noise`` spends."""
    return (reserved_noise / noise) ** 2 if noise > 0 else 0.0
