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

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from fedsynth.privacy.measurement_schedule import share_of

History = list[tuple[float, float, int]]

# Opacus's default RDP orders stop at 63, which cannot express ε below ln(1/δ)/62 (0.19 at δ=1e-5) at all:
# a site budget of ε=0.2 failed with "The privacy budget is too low". Larger orders only tighten the
# bound (ε is a minimum over orders), and at the usual ε ≥ 1 the optimum lies below 63, so the figures
# there are Opacus's own.
_DEFAULT_ORDERS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus's
RDP_ORDERS: list[float] = [
    *_DEFAULT_ORDERS, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048,
]  # fmt: skip
# At the very largest order the bound is still valid, only looser.
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)
# PRV with sampling rate 1 (a plain Gaussian release) takes log(0) on a branch it then discards.
warnings.filterwarnings("ignore", message="divide by zero encountered in log", category=RuntimeWarning)


def epsilon_of(history: History, delta: float, accountant: str) -> float:
    """ε spent by a history of (noise multiplier, sample rate, steps), per Opacus."""
    if not history or sum(steps for _, _, steps in history) == 0:
        return 0.0
    return _epsilon(tuple((float(z), float(q), int(steps)) for z, q, steps in history), delta, accountant)


@functools.lru_cache(maxsize=1024)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    """Cached: ε is a pure function of the history, and the sites of an IID split share their histories
    round after round; one PRV evaluation costs up to 0.4 s at high sampling rates."""
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    if accountant != "rdp":
        return float(acc.get_epsilon(delta=delta))
    # Opacus's orders first: the large ones cost O(order) each for subsampled steps, and are needed only
    # when the best order is the largest of the default ones (small ε).
    epsilon, best = acc.get_privacy_spent(delta=delta)
    if best >= max(_DEFAULT_ORDERS):
        epsilon, _ = acc.get_privacy_spent(delta=delta, alphas=RDP_ORDERS)
    return float(epsilon)


def _orders(accountant: str) -> dict[str, Any]:
    """The RDP orders to search, as keyword arguments for Opacus (other accountants take none)."""
    return {"alphas": RDP_ORDERS} if accountant == "rdp" else {}


def _noise_multiplier(**kwargs: Any) -> float:
    """Opacus's noise search, with the larger RDP orders only when its default ones cannot reach the target."""
    try:
        return float(get_noise_multiplier(**kwargs))
    except ValueError:
        if kwargs.get("accountant") != "rdp":
            raise
        return float(get_noise_multiplier(**kwargs, alphas=RDP_ORDERS))


def clear_epsilon_cache() -> None:
    """Forget every cached ε (a benchmark that replays one round must pay for its ε each time)."""
    _epsilon.cache_clear()


def _max_steps(
    noise: float, sample_rate: float, epsilon: float, delta: float, accountant: str, hint: int, prefix: History
) -> int:
    """Largest step count whose ε (after the ``prefix`` releases) stays at or below the target."""

    def fits(steps: int) -> bool:
        return epsilon_of([*prefix, (noise, sample_rate, steps)], delta, accountant) <= epsilon

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


def _sgd_noise(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str, prefix: History) -> float:
    """Smallest DP-SGD noise multiplier (to 1%) whose ``steps`` fit under ε after ``prefix``."""
    if not prefix:
        return _noise_multiplier(
            target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant
        )
    if epsilon_of(prefix, delta, accountant) >= epsilon:
        raise ValueError(
            f"the planned releases (DP histograms, validator feedback, release check) alone would spend the whole "
            f"budget ε={epsilon:g}; lower measure-fraction or validator-feedback-every, or raise "
            f"validator-feedback-noise or release-check-noise"
        )
    low, high = 0.0, 1.0
    while epsilon_of([*prefix, (high, sample_rate, steps)], delta, accountant) > epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise ValueError("the privacy budget is too small for this many steps")
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        if epsilon_of([*prefix, (mid, sample_rate, steps)], delta, accountant) > epsilon:
            low = mid
        else:
            high = mid
    return high


def measurement_noise(epsilon: float, delta: float, fraction: float, accountant: str) -> float:
    """Noise multiplier of the one histogram release that spends ``fraction`` of ε (as if spent alone).

    It depends on the run's public settings only, so a site can release its histograms (and so learn
    its DP row count) before anything else is planned.
    """
    if fraction <= 0:
        return 0.0
    return float(
        get_noise_multiplier(  # one unsampled release: every order is a closed form, cheap
            target_epsilon=fraction * epsilon,
            target_delta=delta,
            sample_rate=1.0,
            steps=1,
            accountant=accountant,
            **_orders(accountant),
        )
    )


@functools.lru_cache(maxsize=256)
def _plan(
    epsilon: float,
    delta: float,
    sample_rate: float,
    planned_steps: int,
    accountant: str,
    measure_fraction: float,
    feedback_noise: float,
    feedback_releases: int,
    release_check_noise: float = 0.0,
) -> tuple[float, int, float]:
    """(DP-SGD noise, max steps, measurement noise): a pure function of the plan's inputs.

    The planned releases come first (histograms, validator feedback, the release check at noise
    multiplier ``release_check_noise`` when above 0); DP-SGD gets what remains. Cached, because
    accounting searches cost seconds and the many simulated sites of an IID split share one
    sampling rate.
    """
    prefix: History = []
    measure_noise = measurement_noise(epsilon, delta, measure_fraction, accountant)
    if measure_noise:
        prefix = [(measure_noise, 1.0, 1)]
    if feedback_releases and feedback_noise > 0:
        prefix.append((feedback_noise, 1.0, feedback_releases))
    if release_check_noise > 0:
        prefix.append((release_check_noise, 1.0, 1))
    noise = _sgd_noise(epsilon, delta, sample_rate, planned_steps, accountant, prefix)
    max_steps = _max_steps(noise, sample_rate, epsilon, delta, accountant, planned_steps, prefix)
    return noise, max_steps, measure_noise


@dataclass
class SiteBudget:
    """The planned noise and the cumulative spending of one site.

    ``history`` is the Opacus accountant's history: DP-SGD steps at
    ``(noise_multiplier, sample_rate)`` and, if the run measures DP histograms,
    one Gaussian release at ``(measure_noise, 1.0)``; if it plans a release check,
    one Gaussian release at ``(release_check_noise, 1.0)`` at the end of the run.
    """

    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    max_steps: int
    history: History = field(default_factory=list)
    measure_noise: float = 0.0  # 0: the run measures no histograms
    feedback_noise: float = 0.0  # noise multiplier of one validator feedback release; 0: none planned
    feedback_planned: int = 0
    public_rows: float = 0.0  # the site's public row count (declared, or its DP estimate); 0: not known yet
    release_checked: bool = False  # the release gate's counts were answered (once per run)
    release_check_noise: float = 0.0  # noise multiplier of the DP release check; 0: none planned
    measure_spent: float = 0.0  # share of the measurement reservation spent (histograms, votes, cliques)
    # Releases whose noise the site split with others under secure aggregation (privacy.distributed_noise):
    # (noise multiplier charged, shares). The history holds the charged multiplier, valid while the sum is sealed.
    shared_noise: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def plan(
        cls,
        epsilon: float,
        delta: float,
        sample_rate: float,
        planned_steps: int,
        accountant: str = "prv",
        measure_fraction: float = 0.0,
        feedback_noise: float = 0.0,
        feedback_releases: int = 0,
        release_check_noise: float = 0.0,
    ) -> SiteBudget:
        """Choose the noise so that every planned release and ``planned_steps`` steps spend at most ``epsilon``.

        ``measure_fraction`` of ε (as if spent alone) goes to one Gaussian release of
        histograms; ``feedback_releases`` validator feedback releases at noise multiplier
        ``feedback_noise`` and, when ``release_check_noise`` > 0, one release check at that
        noise multiplier are reserved too; DP-SGD gets what remains under composition.
        """
        noise, max_steps, measure_noise = _plan(
            epsilon, delta, sample_rate, planned_steps, accountant, measure_fraction, feedback_noise, feedback_releases,
            float(release_check_noise),
        )  # fmt: skip
        return cls(
            epsilon, delta, accountant, noise, float(sample_rate), max_steps,
            measure_noise=measure_noise, feedback_noise=feedback_noise if feedback_releases else 0.0,
            feedback_planned=feedback_releases, release_check_noise=max(0.0, float(release_check_noise)),
        )  # fmt: skip

    @property
    def steps(self) -> int:
        """DP-SGD steps taken so far."""
        return sum(s for n, q, s in self.history if (n, q) == (self.noise_multiplier, self.sample_rate))

    @property
    def measured(self) -> bool:
        """True once any part of the measurement reservation was spent (the histograms come first)."""
        return self.measure_spent > 0 or any((n, q) == (self.measure_noise, 1.0) for n, q, _ in self.history)

    def record_measurement(self, noise: float | None = None, shares: int = 1) -> None:
        """Charge one Gaussian release in the measurement reservation: the whole of it (``noise`` None) or
        the part a release at noise multiplier ``noise`` spends (``privacy.measurement_schedule``).
        Refused when it would spend more than the reservation holds. ``shares`` > 1: the site adds only
        its share of the noise and the secure sum carries ``noise`` (``privacy.distributed_noise``)."""
        if not self.measure_noise:
            raise RuntimeError("this budget plans no measurement")
        noise = self.measure_noise if noise is None else float(noise)
        part = share_of(self.measure_noise, noise)
        if self.measure_spent + part > 1.0 + 1e-9:
            raise RuntimeError("the measurement reservation is spent; a further release is refused")
        self.history.append((noise, 1.0, 1))
        self.measure_spent += part
        if shares > 1:
            self.shared_noise.append((noise, int(shares)))

    @property
    def spent_if_sum_opened(self) -> float:
        """ε if every secure sum this site's noise shares went into were opened: each shared release then
        protected only by the site's own share (noise / sqrt(shares)). Equals ``spent`` without shares."""
        if not self.shared_noise:
            return self.spent
        history = list(self.history)
        for noise, shares in self.shared_noise:
            index = history.index((noise, 1.0, 1))
            history[index] = (noise / shares**0.5, 1.0, 1)
        return epsilon_of(history, self.delta, self.accountant)

    @property
    def feedback_given(self) -> int:
        """Validator feedback releases charged so far (entries at its noise multiplier and rate 1)."""
        if not self.feedback_noise:
            return 0
        given = sum(s for n, q, s in self.history if (n, q) == (self.feedback_noise, 1.0))
        # The release check is an entry of the same shape; at the same noise multiplier it is not feedback.
        return given - int(self.release_checked and self.release_check_noise == self.feedback_noise)

    def record_feedback(self) -> None:
        """Charge one validator feedback release (refused beyond the planned number)."""
        if self.feedback_given >= self.feedback_planned:
            raise RuntimeError(f"all {self.feedback_planned} planned feedback releases were already made")
        for i, (n, q, s) in enumerate(self.history):
            if (n, q) == (self.feedback_noise, 1.0):
                self.history[i] = (n, q, s + 1)
                return
        self.history.append((self.feedback_noise, 1.0, 1))

    def record_release_check(self) -> None:
        """Charge the planned release check (one Gaussian release) to the accountant's history."""
        if not self.release_check_noise > 0:
            raise RuntimeError("this budget plans no release check")
        self.history.append((self.release_check_noise, 1.0, 1))

    @property
    def spent(self) -> float:
        return epsilon_of(self.history, self.delta, self.accountant)

    def steps_allowed(self, wanted: int) -> int:
        """How many of ``wanted`` further steps fit in the budget (0 when exhausted).

        The plan's step count assumes the history holds only the planned releases. A history restored
        from elsewhere may hold more (spending is only ever added), so ε itself is checked as well.
        """
        allowed = max(0, min(wanted, self.max_steps - self.steps))
        if allowed == 0 or self._fits(allowed):
            return allowed
        return _max_steps(
            self.noise_multiplier, self.sample_rate, self.epsilon, self.delta, self.accountant, allowed, self.history
        )

    def _fits(self, steps: int) -> bool:
        entry = (self.noise_multiplier, self.sample_rate, steps)
        return epsilon_of([*self.history, entry], self.delta, self.accountant) <= self.epsilon

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
            "measure-noise": self.measure_noise,
            "feedback-noise": self.feedback_noise,
            "feedback-planned": self.feedback_planned,
            "public-rows": self.public_rows,
            "release-checked": int(self.release_checked),
            "release-check-noise": self.release_check_noise,
            "measure-spent": self.measure_spent,
            "history-noise": [float(h[0]) for h in self.history],
            "history-rate": [float(h[1]) for h in self.history],
            "history-steps": [int(h[2]) for h in self.history],
            "shared-noise": [float(n) for n, _ in self.shared_noise],
            "shared-shares": [int(k) for _, k in self.shared_noise],
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
            measure_noise=float(state.get("measure-noise", 0.0)),
            feedback_noise=float(state.get("feedback-noise", 0.0)),
            feedback_planned=int(state.get("feedback-planned", 0)),
            public_rows=float(state.get("public-rows", 0.0)),
            release_checked=bool(int(state.get("release-checked", 0))),
            release_check_noise=float(state.get("release-check-noise", 0.0)),
            measure_spent=float(state.get("measure-spent", 0.0)),
            shared_noise=[(float(n), int(k)) for n, k in zip(state.get("shared-noise", []),
                                                             state.get("shared-shares", []), strict=True)],
        )  # fmt: skip
