"""Adaptive selection: what a site's vote may depend on, what it costs, and the pool it is scored against.

The privacy claims checked here are the ones ``marginals.selection`` and ``privacy.measurement_schedule``
rest on: every score moves by at most 1 when a row is added, the noisy max is charged at OpenDP's own
ρ, and the split reservation spends exactly what the plan reserved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.audit.mechanisms import audit_selection
from fedsynth.core.config import RunConfig
from fedsynth.marginals.bins import schema_bins
from fedsynth.marginals.cliques import (
    Clique,
    candidate_cliques,
    clique_counts,
    codes,
    model_layout,
    parse_cliques,
    target_from_counts,
)
from fedsynth.marginals.estimate import Marginals
from fedsynth.marginals.pool import decode, fit_pool, initial_pool, model_targets, sample_model, table_of
from fedsynth.marginals.selection import rake_table, selection_scores
from fedsynth.privacy.budget import SiteBudget, epsilon_of, measurement_noise
from fedsynth.privacy.measurement_schedule import MeasurementSchedule, rest_noise, share_of
from fedsynth.privacy.secret_noise import NoiseSource, noisy_max_rho
from fedsynth.server.selection import most_voted, without_covered


def _layouts(schema):
    fine = schema_bins(schema, 32)
    return fine, model_layout(fine, 8)


def test_every_score_moves_by_at_most_one_when_a_row_is_added(small_schema, small_table):
    _, coarse = _layouts(small_schema)
    candidates = candidate_cliques(coarse)
    rng = np.random.default_rng(1)
    tables = [rng.dirichlet(np.ones(c.size)) for c in candidates]
    one_way = [rng.random(spec.size) * 50 for spec in coarse]
    before = selection_scores(codes(small_table, coarse), candidates, tables, one_way, 400.0, 3.0)
    for index in range(0, len(small_table), 37):
        row = small_table.iloc[[index]]
        after = selection_scores(codes(pd.concat([small_table, row]), coarse), candidates, tables, one_way, 400.0, 3.0)
        assert np.abs(after - before).max() <= 1.0 + 1e-9
        assert np.abs(after - before).max() > 0.5  # the row is seen: the bound is not met by ignoring data


def test_raking_a_table_to_one_way_margins_matches_them():
    clique = Clique((0, 1), (3, 4))
    table = np.random.default_rng(0).dirichlet(np.ones(12))
    one_way = [np.array([10.0, 30.0, 60.0]), np.array([5.0, -2.0, 20.0, 75.0])]  # noisy: one negative count
    raked = rake_table(table, clique, one_way).reshape(3, 4)
    np.testing.assert_allclose(raked.sum(axis=1), [0.1, 0.3, 0.6], atol=1e-2)
    np.testing.assert_allclose(raked.sum(axis=0), [0.05, 0.0, 0.2, 0.75], atol=1e-2)


def test_the_vote_is_charged_at_opendp_s_own_rho():
    for scale in (0.5, 3.0, 60.0):
        charged = 1.0 / (2.0 * scale**2)  # the Gaussian-equivalent entry (scale, 1.0, 1)
        assert noisy_max_rho(scale * (1 + 1e-9)) <= charged
        assert noisy_max_rho(scale) == pytest.approx(charged, rel=1e-9)


def test_the_noisy_max_picks_the_clear_winner_and_is_random_otherwise():
    scores = np.array([0.0, 100.0, 0.0])
    assert NoiseSource.secret_source().noisy_max(scores, 1.0) == 1
    assert NoiseSource.reproducible("t").noisy_max(scores, 1.0) == 1
    picks = {NoiseSource.secret_source().noisy_max(np.zeros(4), 1.0) for _ in range(60)}
    assert len(picks) >= 3
    with pytest.raises(ValueError):
        NoiseSource.secret_source().noisy_max(np.array([np.nan, 1.0]), 1.0)


@pytest.mark.parametrize("secure_one_way", [False, True])
def test_the_split_reservation_spends_exactly_what_the_plan_reserved(secure_one_way):
    reserved = measurement_noise(1.0, 1e-5, 0.5, "rdp")
    schedule = MeasurementSchedule(reserved, rounds=13, secure_one_way=secure_one_way)
    one_way = [schedule.one_way_noise] + ([schedule.secure_one_way_noise] if secure_one_way else [])
    history = [(z, 1.0, 1) for z in one_way] + [(schedule.select_noise, 1.0, 1)] * 13
    history += [(schedule.clique_noise, 1.0, 1)] * 13
    assert epsilon_of(history, 1e-5, "rdp") == pytest.approx(epsilon_of([(reserved, 1.0, 1)], 1e-5, "rdp"), rel=1e-6)
    parts = sum(share_of(reserved, z) for z in one_way) + 13 * (
        share_of(reserved, schedule.select_noise) + share_of(reserved, schedule.clique_noise)
    )
    assert parts == pytest.approx(1.0)
    # The secure one-ways take part of the one-way share only: the rounds keep theirs; without rounds, none.
    assert schedule.clique_noise == MeasurementSchedule(reserved, rounds=13).clique_noise
    assert (schedule.secure_one_way_noise > 0) == secure_one_way
    assert MeasurementSchedule(reserved, 0, secure_one_way=secure_one_way).secure_one_way_noise == 0.0


def test_a_second_one_way_measurement_is_folded_in_by_inverse_variance(small_schema):
    layout, _ = _layouts(small_schema)
    rng = np.random.default_rng(0)
    truth = [rng.integers(20, 200, spec.size).astype(float) for spec in layout]
    first = [t + rng.normal(0, 30.0, t.shape) for t in truth]
    second = [t + rng.normal(0, 10.0, t.shape) for t in truth]
    marginals = Marginals.from_noisy_counts(layout, first, 30.0)
    marginals.add_one_way_measurement(second, 10.0)
    # Weights 1/900 and 1/100: the second, less noisy measurement counts nine times as much.
    for combined, a, b in zip(marginals.one_way_counts, first, second, strict=True):
        np.testing.assert_allclose(combined, (a + 9 * b) / 10)
    assert marginals.one_way_std == pytest.approx((1 / 900 + 1 / 100) ** -0.5)
    again = Marginals.from_noisy_counts(layout, marginals.one_way_counts, marginals.one_way_std)
    for p, q in zip(marginals.probabilities, again.probabilities, strict=True):
        np.testing.assert_allclose(p, q)  # the marginals are derived from the combined counts
    assert marginals.total_rows == again.total_rows


def test_a_site_refuses_to_measure_beyond_its_reservation():
    reserved = measurement_noise(1.0, 1e-5, 0.5, "rdp")
    schedule = MeasurementSchedule(reserved, rounds=2)
    budget = SiteBudget(1.0, 1e-5, "rdp", 0.0, 0.0, 0, [], reserved)
    budget.record_measurement(schedule.one_way_noise)
    for _ in range(2):
        budget.record_measurement(schedule.select_noise)
        budget.record_measurement(schedule.clique_noise)
    assert budget.measure_spent == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="reservation is spent"):
        budget.record_measurement(schedule.clique_noise)
    restored = SiteBudget.from_state(budget.to_state())
    assert restored.measure_spent == pytest.approx(1.0) and restored.measured


def test_four_way_candidates_are_only_the_small_tables(small_schema):
    _, coarse = _layouts(small_schema)
    sizes = [spec.size for spec in coarse]
    for limit in (1, int(np.prod(sizes))):
        four_way = [c for c in candidate_cliques(coarse, max_four_way_cells=limit) if len(c.columns) == 4]
        assert [c.columns for c in four_way] == ([(0, 1, 2, 3)] if limit >= np.prod(sizes) else [])
    # Pairs always, triples up to max_cells: the four-way limit changes nothing else.
    assert len(candidate_cliques(coarse, max_four_way_cells=1)) == len(candidate_cliques(coarse)) - sum(
        len(c.columns) == 4 for c in candidate_cliques(coarse)
    )


def test_the_last_measurement_spends_what_is_left_and_nothing_more():
    reserved = measurement_noise(1.0, 1e-5, 0.5, "rdp")
    schedule = MeasurementSchedule(reserved, rounds=4)
    budget = SiteBudget(1.0, 1e-5, "rdp", 0.0, 0.0, 0, [], reserved)
    budget.record_measurement(schedule.one_way_noise)
    budget.record_measurement(schedule.select_noise)  # round 1: a vote; the candidates then ran out
    rest = rest_noise(reserved, budget.measure_spent)
    # All that the one-way share and one vote left (0.7 - 0.7 x 0.1 / 4 of it), not one round's counts.
    assert rest == pytest.approx(reserved / np.sqrt(0.7 - 0.7 * 0.1 / 4)) and rest < schedule.clique_noise / 2
    budget.record_measurement(rest)
    assert budget.measure_spent == pytest.approx(1.0)
    assert budget.spent == pytest.approx(epsilon_of([(reserved, 1.0, 1)], 1e-5, "rdp"), rel=1e-6)
    assert rest_noise(reserved, budget.measure_spent) == 0.0  # nothing left: the site refuses (client_app)
    # Held to plan, the last measurement's rest is exactly one round's counts.
    planned = SiteBudget(1.0, 1e-5, "rdp", 0.0, 0.0, 0, [], reserved)
    planned.record_measurement(schedule.one_way_noise)
    for _ in range(4):
        planned.record_measurement(schedule.select_noise)
    for _ in range(3):
        planned.record_measurement(schedule.clique_noise)
    assert rest_noise(reserved, planned.measure_spent) == pytest.approx(schedule.clique_noise, rel=1e-6)


def test_clique_requests_are_checked(small_schema):
    _, coarse = _layouts(small_schema)
    assert [c.columns for c in parse_cliques('[["region", "age"]]', small_schema, coarse)] == [(0, 2)]
    four = parse_cliques('[["smoker", "region", "age", "income"]]', small_schema, coarse)
    assert [c.columns for c in four] == [(0, 1, 2, 3)]
    for bad, needle in (('[["age"]]', "2 to 4"), ('[["age", "nope"]]', "not a schema column"),
                        ('[["age", "age"]]', "2 to 4"), ('[["a", "b", "c", "d", "e"]]', "2 to 4")):  # fmt: skip
        with pytest.raises(ValueError, match=needle):
            parse_cliques(bad, small_schema, coarse)


def test_the_pool_learns_a_three_way_dependence_no_pair_shows():
    # c = a XOR b: every pair is independent, the triple is deterministic.
    rng = np.random.default_rng(0)
    clique = Clique((0, 1, 2), (2, 2, 2))
    truth = np.zeros(8)
    for a in (0, 1):
        for b in (0, 1):
            truth[np.ravel_multi_index((a, b, a ^ b), (2, 2, 2))] = 0.25
    one_way = [target_from_counts(Clique((i,), (2,)), np.array([50.0, 50.0])) for i in range(3)]
    pool = initial_pool(one_way, 20_000, rng)
    assert np.abs(table_of(pool, clique) - truth).sum() / 2 > 0.4
    fit_pool(pool, [*one_way, target_from_counts(clique, truth * 1000)], rng, sweeps=12)
    assert np.abs(table_of(pool, clique) - truth).sum() / 2 < 0.03


def test_decoding_keeps_every_value_inside_its_coarse_bin(small_schema, small_table):
    fine, coarse = _layouts(small_schema)
    counts = [np.bincount(np.asarray(c), minlength=s.size).astype(float) for c, s in
              zip(codes(small_table, fine).T, fine, strict=True)]  # fmt: skip
    marginals = Marginals.from_noisy_counts(fine, counts, 1.0)
    pool = codes(small_table, coarse)
    table = decode(pool, marginals, coarse, np.random.default_rng(0))
    np.testing.assert_array_equal(codes(table, coarse), pool)


def test_the_released_model_is_reproducible_and_follows_a_measured_clique(small_schema, small_table):
    fine, coarse = _layouts(small_schema)
    counts = [np.bincount(np.asarray(c), minlength=s.size).astype(float) for c, s in
              zip(codes(small_table, fine).T, fine, strict=True)]  # fmt: skip
    marginals = Marginals.from_noisy_counts(fine, counts, 1.0)
    clique = Clique((2, 3), (coarse[2].size, coarse[3].size))
    # A measured dependence the one-way marginals cannot carry: every smoker lives in the north.
    joint = np.zeros(clique.size)
    joint[np.ravel_multi_index((0, 0), clique.shape)] = 100
    joint[np.ravel_multi_index((0, 1), clique.shape)] = 80
    joint[np.ravel_multi_index((1, 0), clique.shape)] = 120
    joint[np.ravel_multi_index((2, 0), clique.shape)] = 100
    marginals.cliques = [target_from_counts(clique, joint, noise_std=1.0)]
    first, again = sample_model(marginals, 3000, seed=4), sample_model(marginals, 3000, seed=4)
    pd.testing.assert_frame_equal(first, again)
    smokers = first[first["smoker"] == "true"]
    assert len(smokers) > 300 and (smokers["region"] == "north").mean() > 0.95
    restored = Marginals.from_state(small_schema, marginals.to_state())
    assert [t.clique for t in restored.cliques] == [clique]
    assert model_targets(restored)[1][-1].probabilities == pytest.approx(marginals.cliques[0].probabilities)


def test_clique_counts_count_every_row_once(small_schema, small_table):
    _, coarse = _layouts(small_schema)
    for clique in candidate_cliques(coarse)[:5]:
        assert clique_counts(codes(small_table, coarse), clique).sum() == len(small_table)


def test_the_selection_audit_passes_and_has_power_at_low_noise(small_schema, small_table):
    result = audit_selection(small_table, small_schema, RunConfig(select_rounds="0"), trials=600, confidence=0.95)
    assert 0 < result.honest.epsilon_lower_bound <= result.epsilon < result.broken.epsilon_lower_bound


def test_a_round_measures_at_most_the_four_most_voted_cliques():
    assert most_voted([3, 1, 3, 0]) == [0, 1, 3]  # four sites: every distinct vote, as before the limit
    votes = [7] * 5 + [2] * 3 + [9] * 3 + [4] * 2 + [1, 5, 6]  # sixteen sites
    assert most_voted(votes) == [2, 4, 7, 9]
    assert most_voted([]) == []


def test_a_round_does_not_measure_a_clique_inside_another_it_measures():
    four = Clique((0, 1, 2, 3), (2,) * 4)
    triple = Clique((0, 1, 2), (2,) * 3)
    pair = Clique((1, 3), (2, 2))
    other = Clique((2, 4), (2, 2))
    assert without_covered([pair, triple, four, other]) == [four, other]
    assert without_covered([triple, other]) == [triple, other]
