"""A site's plan is one call on public inputs: caps, row count, δ, and the releases it reserves."""

from __future__ import annotations

import pytest

from fedsynth.core.config import RunConfig
from fedsynth.privacy.budget import epsilon_of
from fedsynth.privacy.dp_training import sample_rate_for
from fedsynth.privacy.site_plan import PlanError, plan_site, site_epsilon

# measure-fraction 0.5: at the default 0.9 the histograms, two feedback releases and the release check do not
# fit in a cap of ε = 1 (the plan then refuses with its reason: test_a_plan_that_cannot_fit_says_why_in_one_line).
CONFIG = RunConfig(epsilon=2.0, delta=1e-5, rounds=2, local_steps=5, batch_size=50, validator_feedback_every=1,
                   measure_fraction=0.5)  # fmt: skip


def test_the_lowest_cap_wins():
    assert site_epsilon(2.0) == 2.0
    assert site_epsilon(2.0, jurisdiction_cap=1.5) == 1.5
    assert site_epsilon(2.0, jurisdiction_cap=1.5, site_cap=0.5) == 0.5
    assert site_epsilon(2.0, site_cap=3.0) == 2.0  # a site cannot raise the federation's offer


def test_the_plan_reserves_every_planned_release_and_stays_in_budget():
    plan = plan_site(CONFIG, 1000.0, jurisdiction_cap=1.0)
    assert plan.epsilon == 1.0 and plan.public_rows == 1000.0
    assert plan.sample_rate == sample_rate_for(1000.0, 50) == 0.05
    assert plan.feedback_planned == 2 and plan.feedback_noise == CONFIG.validator_feedback_noise
    assert plan.release_check_noise == CONFIG.release_check_noise and plan.measure_noise > 0
    # Everything planned, spent in full, stays within ε.
    history = [(plan.measure_noise, 1.0, 1), (plan.feedback_noise, 1.0, 2), (plan.release_check_noise, 1.0, 1),
               (plan.noise_multiplier, plan.sample_rate, plan.max_steps)]  # fmt: skip
    assert plan.max_steps >= CONFIG.rounds * CONFIG.local_steps
    assert epsilon_of(history, CONFIG.delta, "rdp") <= 1.0 + 1e-6
    without_check = plan_site(CONFIG, 1000.0, jurisdiction_cap=1.0, release_check=False)
    assert without_check.release_check_noise == 0.0
    assert without_check.noise_multiplier < plan.noise_multiplier  # DP-SGD gets what the check would have used


@pytest.mark.parametrize(("rows", "needle"), [(0.0, "no public row count"), (0.5, "at least 1"),
                                              (50_000.0, None), (90_000.0, None), (99_999.0, None)])  # fmt: skip
def test_rows_and_delta_are_checked(rows, needle):
    if needle is None:
        assert plan_site(CONFIG, rows).public_rows == rows
    else:
        with pytest.raises(PlanError, match=needle):
            plan_site(CONFIG, rows)
    with pytest.raises(PlanError, match="not below 1/rows"):
        plan_site(RunConfig(delta=0.01), 100.0)


def test_a_plan_that_cannot_fit_says_why_in_one_line():
    crowded = RunConfig(epsilon=2.0, delta=1e-5, rounds=2, local_steps=5, batch_size=50, validator_feedback_every=1)
    with pytest.raises(PlanError, match="lower measure-fraction"):
        plan_site(crowded, 1000.0, jurisdiction_cap=1.0)
