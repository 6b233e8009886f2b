"""A site's privacy plan, stated once, from every public input: the one call a site's handler makes.

As Opacus's ``make_private_with_epsilon`` states privacy up front, ``plan_site`` takes everything a
site's budget depends on and returns its ``SiteBudget`` (noise multipliers, sampling rate, the most
DP-SGD steps, and the releases it reserves):

- the ε it may spend: the run's ε, lowered to its jurisdiction's cap under the federation's policy and
  to the site's own cap (its node config), whichever is lowest (``site_epsilon``);
- δ, the accountant, the batch size, the planned rounds × local steps, ``measure-fraction``;
- its public row count n̂ (declared in node config, or the DP estimate from its own histogram
  release), which sets the sampling rate q = min(1, B / n̂) and must make δ < 1 / n̂;
- the releases reserved before DP-SGD gets the rest: the DP histograms, the planned validator
  feedback releases at ``validator-feedback-noise``, the release check at ``release-check-noise``
  when the federation's policy asks for it.

Nothing here reads private data. Spending is kept apart (``SiteBudget.history``, ``privacy.ledger``):
a plan never replaces what was spent.
"""

from __future__ import annotations

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError
from fedsynth.privacy.budget import SiteBudget
from fedsynth.privacy.dp_training import sample_rate_for


class PlanError(UserError):
    """The site's public inputs cannot make a valid plan (no row count, δ too large for it)."""


def site_epsilon(run_epsilon: float, jurisdiction_cap: float | None = None, site_cap: float | None = None) -> float:
    """The ε a site may spend: the run's, lowered to its jurisdiction's cap and to its own cap."""
    caps = [c for c in (jurisdiction_cap, site_cap) if c is not None]
    return float(min([run_epsilon, *caps]))


def plan_for_rate(
    config: RunConfig,
    sample_rate: float,
    epsilon: float | None = None,
    feedback_noise: float = 0.0,
    release_check_noise: float = 0.0,
) -> SiteBudget:
    """The budget for the whole run at a given sampling rate (benchmarks and tests plan this way).

    ``epsilon`` overrides the run's ε (a cap); ``feedback_noise`` is the noise multiplier of each
    planned validator feedback release; ``release_check_noise`` (> 0) reserves the release check.
    """
    return SiteBudget.plan(
        epsilon=config.epsilon if epsilon is None else epsilon,
        delta=config.delta,
        sample_rate=sample_rate,
        planned_steps=config.rounds * config.local_steps,
        accountant=config.accountant,
        measure_fraction=config.measure_fraction,
        feedback_noise=feedback_noise,
        feedback_releases=len(config.feedback_rounds),
        release_check_noise=release_check_noise,
    )


def plan_site(
    config: RunConfig,
    public_rows: float,
    *,
    jurisdiction_cap: float | None = None,
    site_cap: float | None = None,
    release_check: bool = True,
) -> SiteBudget:
    """The site's plan from every public input (module docstring); its history starts empty."""
    if not public_rows:
        raise PlanError(
            "no public row count: run with measure-fraction above 0 (the DP histograms give one) "
            "or declare 'rows' in the node config"
        )
    if not public_rows >= 1:
        raise PlanError("node config 'rows' must be a public row count of at least 1")
    if config.delta >= 1.0 / public_rows:
        raise PlanError(f"delta {config.delta:g} is not below 1/rows for this site's public row count")
    epsilon = site_epsilon(config.epsilon, jurisdiction_cap, site_cap)
    try:
        budget = plan_for_rate(
            config,
            sample_rate_for(public_rows, config.batch_size),
            epsilon,
            feedback_noise=config.validator_feedback_noise,
            release_check_noise=config.release_check_noise if release_check else 0.0,
        )
    except ValueError as exc:
        # The plan is a function of public settings and the DP row count, so its reason may leave the site.
        raise PlanError(f"site budget ε={epsilon:g}: {exc}") from None
    budget.public_rows = float(public_rows)
    return budget
