"""A site's privacy budget, planned once and spent cumulatively.

In the spirit of Opacus's ``make_private_with_epsilon``, the budget is stated up
front: given the target (ε, δ), the site's sampling rate and the number of DP
steps the run plans, ``SiteBudget.plan`` picks the noise multiplier with Opacus's
accountant, and works out the largest number of steps that still fits under ε
at that noise. Training then asks ``steps_allowed`` before each round and never
takes a step that would go over.

What was spent is the Opacus accountant's own ``history`` (noise multiplier,
sample rate, steps), kept per site across rounds and restored into each round's
accountant, so ε is cumulative over the whole run (and across a resume).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

History = list[tuple[float, float, int]]

# RDP's default orders do not reach very small ε tightly; the bound stays valid (only looser).
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)


def epsilon_of(history: History, delta: float, accountant: str) -> float:
    """ε spent by a history of (noise multiplier, sample rate, steps), per Opacus."""
    if not history or sum(steps for _, _, steps in history) == 0:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta=delta))


def _max_steps(noise: float, sample_rate: float, epsilon: float, delta: float, accountant: str, hint: int) -> int:
    """Largest step count whose ε stays at or below the target (binary search)."""

    def fits(steps: int) -> bool:
        return epsilon_of([(noise, sample_rate, steps)], delta, accountant) <= epsilon

    low = 0
    high = max(1, hint)
    while fits(high):  # grow until it no longer fits
        low, high = high, high * 2
        if high > 10_000_000:
            return low
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


@dataclass
class SiteBudget:
    """The planned noise and the cumulative spending of one site."""

    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    max_steps: int
    history: History = field(default_factory=list)

    @classmethod
    def plan(
        cls, epsilon: float, delta: float, sample_rate: float, planned_steps: int, accountant: str = "prv"
    ) -> SiteBudget:
        """Choose the noise so that ``planned_steps`` steps spend at most ``epsilon``."""
        noise = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=planned_steps,
            accountant=accountant,
        )
        max_steps = _max_steps(noise, sample_rate, epsilon, delta, accountant, hint=planned_steps)
        return cls(epsilon, delta, accountant, float(noise), float(sample_rate), max_steps)

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.history)

    @property
    def spent(self) -> float:
        return epsilon_of(self.history, self.delta, self.accountant)

    def steps_allowed(self, wanted: int) -> int:
        """How many of ``wanted`` further steps fit in the budget (0 when exhausted)."""
        return max(0, min(wanted, self.max_steps - self.steps))

    @property
    def exhausted(self) -> bool:
        return self.steps >= self.max_steps

    def to_state(self) -> dict[str, Any]:
        """Flat mapping for Flower's ``ConfigRecord`` (kept in ``context.state``)."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "noise-multiplier": self.noise_multiplier,
            "sample-rate": self.sample_rate,
            "max-steps": self.max_steps,
            "history-noise": [float(h[0]) for h in self.history],
            "history-rate": [float(h[1]) for h in self.history],
            "history-steps": [int(h[2]) for h in self.history],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SiteBudget:
        history = list(
            zip(
                (float(x) for x in state["history-noise"]),
                (float(x) for x in state["history-rate"]),
                (int(x) for x in state["history-steps"]),
                strict=True,
            )
        )
        return cls(
            epsilon=float(state["epsilon"]),
            delta=float(state["delta"]),
            accountant=str(state["accountant"]),
            noise_multiplier=float(state["noise-multiplier"]),
            sample_rate=float(state["sample-rate"]),
            max_steps=int(state["max-steps"]),
            history=history,
        )
