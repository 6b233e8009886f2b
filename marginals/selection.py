"""Adaptive, budget-aware choice of which marginals to measure, across sites (AIM; FLAIM).

After the one-way histograms (round 0) the coordinator holds a model of the table built from DP
outputs only (``marginals.pool``). Each selection round it sends every site the model's table for
every candidate clique (``marginals.cliques``), and each site votes, under DP, for the candidate its
own rows say the model gets most wrong (AIM, McKenna et al. 2022). The coordinator then asks every
site to measure the cliques voted for, and the model is refitted. FLAIM (Maddock et al., KDD 2024)
showed that naive federated AIM is misled by heterogeneous sites: a site whose rows all come from one
region sees every clique that holds ``region`` as badly fitted. So a site scores the model's table
*after raking it to its own noisy one-way marginals* (the ones it released in round 0, public to it):
what the score then measures is the dependence the model misses, not how the site differs.

The score of candidate r at a site is ``||counts_r − n̂ · p_r||₁ − penalty_r``: ``counts_r`` the site's
exact counts, ``p_r`` the raked model table, ``n̂`` the site's public row count (its DP estimate), and
``penalty_r`` a public term that prefers small tables (the expected L1 noise of measuring r, as in
AIM). Adding or removing one row changes one cell of ``counts_r`` by 1 and nothing else, so every
score moves by at most 1 whatever the data (L∞ sensitivity 1). The vote is the noisy maximum of the
scores with Gumbel noise (the exponential mechanism), drawn by OpenDP from the operating system's
CSPRNG (``NoiseSource.noisy_max``); at scale s it is ρ = 1/(2s²)-zCDP (OpenDP's own privacy map), the
Rényi curve of a Gaussian mechanism with noise multiplier s, which is how the site's accountant is
charged. Only the chosen index leaves the site.
"""

from __future__ import annotations

import math

import numpy as np

from fedsynth.marginals.cliques import Clique, clique_counts, distribution_from_counts
from fedsynth.privacy.secret_noise import NoiseSource

RAKE_SWEEPS = 20


def rake_table(table: np.ndarray, clique: Clique, one_way: list[np.ndarray]) -> np.ndarray:
    """``table`` (a joint distribution over ``clique``) raked so that its margins follow ``one_way``.

    ``one_way[c]`` is a (noisy, possibly negative) one-way histogram of column c on the clique's
    coarse bins; it is clipped at 0 and normalised first. Post-processing of public inputs.
    """
    joint = np.asarray(table, dtype=float).reshape(clique.shape).copy()
    axes = range(len(clique.columns))
    for _ in range(RAKE_SWEEPS):
        for axis, column in zip(axes, clique.columns, strict=True):
            target = distribution_from_counts(one_way[column])
            have = joint.sum(axis=tuple(a for a in axes if a != axis))
            factor = np.divide(target, have, out=np.zeros_like(target), where=have > 0)
            joint *= factor.reshape([-1 if a == axis else 1 for a in axes])
    total = joint.sum()
    return (joint / total if total > 0 else np.full(clique.shape, 1.0 / clique.size)).reshape(-1)


def measurement_penalty(clique: Clique, noise_std: float) -> float:
    """AIM's preference for small tables: the expected L1 error that measuring ``clique`` would add."""
    return math.sqrt(2.0 / math.pi) * noise_std * clique.size


def selection_scores(
    row_codes: np.ndarray,
    candidates: list[Clique],
    model_tables: list[np.ndarray],
    one_way: list[np.ndarray],
    public_rows: float,
    penalty_std: float,
) -> np.ndarray:
    """Every candidate's score at one site (module docstring); each moves by at most 1 per row."""
    scores = np.empty(len(candidates))
    for index, (clique, table) in enumerate(zip(candidates, model_tables, strict=True)):
        expected = public_rows * rake_table(table, clique, one_way)
        scores[index] = np.abs(clique_counts(row_codes, clique) - expected).sum()
        scores[index] -= measurement_penalty(clique, penalty_std)
    return scores


def vote(scores: np.ndarray, scale: float, noise: NoiseSource) -> int:
    """The site's DP choice: the noisy maximum of ``scores`` at Gumbel scale ``scale`` (ρ = 1/(2 scale²))."""
    return noise.noisy_max(scores, scale)
