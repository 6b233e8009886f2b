"""A site's budget: planned up front, cumulative across rounds, never exceeded."""

from __future__ import annotations

import pytest
import torch

from fedsynth.client.task import train_round
from fedsynth.core.config import RunConfig
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.privacy.budget import SiteBudget, epsilon_of
from fedsynth.privacy.dp_training import sample_rate_for
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.tabular.codec import TableCodec


def test_plan_gives_the_largest_step_count_under_epsilon():
    budget = SiteBudget.plan(epsilon=1.0, delta=1e-5, sample_rate=0.05, planned_steps=60, accountant="rdp")
    at_max = epsilon_of([(budget.noise_multiplier, 0.05, budget.max_steps)], 1e-5, "rdp")
    beyond = epsilon_of([(budget.noise_multiplier, 0.05, budget.max_steps + 1)], 1e-5, "rdp")
    assert budget.max_steps >= 60
    assert at_max <= 1.0 < beyond


def test_state_round_trip_keeps_history():
    budget = SiteBudget(2.0, 1e-5, "prv", 1.3, 0.02, 500, history=[(1.3, 0.02, 40)])
    again = SiteBudget.from_state(budget.to_state())
    assert again == budget
    assert again.steps == 40


def _site(small_schema, small_table):
    codec = TableCodec(small_schema)
    config = RunConfig(local_steps=6, batch_size=64, rounds=3, noise_dim=8, generator_hidden=16,
                       discriminator_hidden=16, accountant="rdp", epsilon=3.0)  # fmt: skip
    real = torch.from_numpy(codec.encode(small_table))
    return codec, config, real


def test_spending_is_cumulative_across_rounds(small_schema, small_table):
    codec, config, real = _site(small_schema, small_table)
    rate = sample_rate_for(len(real), config.batch_size)
    budget = SiteBudget.plan(config.epsilon, config.delta, rate, planned_steps=18, accountant="rdp")
    spent = []
    for _ in range(3):
        # Each round rebuilds networks and the PrivacyEngine, as a ClientApp does, and
        # carries only the saved state from one round to the next.
        gen, disc = build_gan(codec, GanShape.for_run(config, codec.dim), seed=1)
        outcome = train_round(gen, disc, real, budget, config, NoiseSource.secret_source())
        budget = SiteBudget.from_state(outcome.budget.to_state())
        spent.append(budget.spent)
    assert budget.steps == 18
    assert spent[0] < spent[1] < spent[2]
    assert abs(spent[2] - epsilon_of([(budget.noise_multiplier, rate, 18)], config.delta, "rdp")) < 1e-9


def test_site_refuses_steps_beyond_its_budget(small_schema, small_table):
    codec, config, real = _site(small_schema, small_table)
    rate = sample_rate_for(len(real), config.batch_size)
    budget = SiteBudget.plan(config.epsilon, config.delta, rate, planned_steps=10, accountant="rdp")
    budget.max_steps = 10  # as if the run asked for more rounds than it planned for
    trained = []
    for _ in range(3):
        gen, disc = build_gan(codec, GanShape.for_run(config, codec.dim), seed=1)
        outcome = train_round(gen, disc, real, budget, config, NoiseSource.secret_source())
        trained.append(outcome.trained_steps)
        budget = outcome.budget
    assert trained == [6, 4, 0]
    assert outcome.budget_exhausted
    assert budget.spent <= config.epsilon


def test_epsilon_is_opacus_value_and_shared_histories_are_computed_once():
    from opacus.accountants import create_accountant

    from fedsynth.privacy.budget import _epsilon

    history = [(1.1, 0.5, 37), (4.0, 1.0, 1)]
    fresh = create_accountant(mechanism="prv")
    fresh.history = list(history)
    expected = float(fresh.get_epsilon(delta=1e-5))
    assert epsilon_of(history, 1e-5, "prv") == expected
    hits = _epsilon.cache_info().hits
    # Another site of an IID split: the same history, as lists (the shape a restored state has).
    assert epsilon_of([[1.1, 0.5, 37], [4.0, 1.0, 1]], 1e-5, "prv") == expected
    assert _epsilon.cache_info().hits == hits + 1
    assert epsilon_of([(1.1, 0.5, 38), (4.0, 1.0, 1)], 1e-5, "prv") > expected  # one more step is not a hit


def test_a_planned_release_check_is_reserved_before_dp_sgd_gets_the_rest():
    common = {"epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.05, "planned_steps": 60, "accountant": "rdp",
              "measure_fraction": 0.3}  # fmt: skip
    without = SiteBudget.plan(**common)
    budget = SiteBudget.plan(**common, release_check_noise=20.0)
    assert (without.release_check_noise, budget.release_check_noise) == (0.0, 20.0)
    assert budget.noise_multiplier > without.noise_multiplier  # DP-SGD pays for the reserved check
    assert budget.max_steps >= 60
    everything = [(budget.measure_noise, 1.0, 1), (budget.noise_multiplier, 0.05, budget.max_steps), (20.0, 1.0, 1)]
    assert epsilon_of(everything, 1e-5, "rdp") <= 1.0
    # Without the reservation, the same steps plus the check would go over.
    over = [(without.measure_noise, 1.0, 1), (without.noise_multiplier, 0.05, without.max_steps), (20.0, 1.0, 1)]
    assert epsilon_of(over, 1e-5, "rdp") > 1.0


def test_recording_the_release_check_adds_exactly_its_entry_and_survives_a_round_trip():
    budget = SiteBudget.plan(epsilon=1.0, delta=1e-5, sample_rate=0.05, planned_steps=60, accountant="rdp",
                             release_check_noise=15.0)  # fmt: skip
    budget.history = [(budget.noise_multiplier, 0.05, 60)]
    before = budget.spent
    budget.record_release_check()
    budget.release_checked = True
    assert budget.history == [(budget.noise_multiplier, 0.05, 60), (15.0, 1.0, 1)]
    assert before < budget.spent <= 1.0
    again = SiteBudget.from_state(budget.to_state())
    assert again == budget
    assert (again.release_check_noise, again.release_checked) == (15.0, True)
    older = {k: v for k, v in budget.to_state().items() if k != "release-check-noise"}  # a ledger from before
    assert SiteBudget.from_state(older).release_check_noise == 0.0
    unplanned = SiteBudget.plan(epsilon=1.0, delta=1e-5, sample_rate=0.05, planned_steps=60, accountant="rdp")
    with pytest.raises(RuntimeError, match="no release check"):
        unplanned.record_release_check()


@pytest.mark.parametrize("epsilon", [0.2, 0.1])
def test_a_small_budget_plans_where_opacus_default_orders_cannot_reach(epsilon):
    """Opacus's default RDP orders (up to 63) cannot express ε below ln(1/δ)/62 ≈ 0.19: ε=0.2 a site
    failed with "The privacy budget is too low". The planned releases must fit and spend at most ε."""
    from opacus.accountants import create_accountant

    budget = SiteBudget.plan(epsilon=epsilon, delta=1e-5, sample_rate=0.1, planned_steps=20, accountant="rdp",
                             measure_fraction=0.5)  # fmt: skip
    assert budget.measure_noise > 0 and budget.noise_multiplier > 0 and budget.max_steps >= 20
    spent = [(budget.measure_noise, 1.0, 1), (budget.noise_multiplier, 0.1, budget.max_steps)]
    assert 0 < epsilon_of(spent, 1e-5, "rdp") <= epsilon
    opacus = create_accountant("rdp")
    opacus.history = [(budget.measure_noise, 1.0, 1)]
    assert opacus.get_epsilon(1e-5) > epsilon / 2  # the default orders overstate it: that was the bug


def test_at_usual_budgets_the_extra_orders_change_nothing():
    from opacus.accountants import create_accountant

    history = [(1.1, 0.02, 300), (8.0, 1.0, 1)]
    opacus = create_accountant("rdp")
    opacus.history = list(history)
    assert epsilon_of(history, 1e-5, "rdp") == pytest.approx(opacus.get_epsilon(1e-5), rel=1e-12)
