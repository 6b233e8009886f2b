"""A table fitted to the measured marginals: a pool of synthetic rows updated until it matches them.

This is the coordinator's model of the data during selection and, by default, what the released table
is drawn from. It follows PrivSyn's Gradually Update Method (Zhang et al., USENIX Security 2021):
start from rows drawn from the one-way marginals, then, marginal after marginal, move a share of the
rows in over-full cells to under-full ones, either by copying a row that already lies in the wanted
cell (which keeps what that row agrees on with other marginals) or by rewriting just the clique's
columns. Rows are never weighted, so the pool never degenerates onto a few rows (as raking a fixed
pool does when the measured dependence is strong), and refitting after each selection round costs
a few hundred milliseconds, not a compilation (graphical-model estimation with ``mbi`` was measured
at 5-12 s a round here; the benchmark compares both for the final table, see ``benchmarks/peers.py``).

Rows hold coarse bin codes (``marginals.cliques``); ``decode`` turns them into values: a numeric
coarse bin becomes one of its fine one-way bins, drawn from the DP one-way marginal inside it, then a
value inside that bin, so detail finer than the coarse bins survives. Everything here reads only DP
outputs: it is post-processing and costs no privacy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.marginals.bins import ColumnBins, fine_to_coarse
from fedsynth.marginals.cliques import Clique, Target, coarse_counts, model_layout
from fedsynth.marginals.estimate import Marginals
from fedsynth.tabular.codec import column_values, unwarp

DEFAULT_POOL_ROWS = 50_000
SWEEPS = 6
FIRST_STEP = 0.5  # share of a cell's excess moved in the first sweep ...
STEP_DECAY = 0.84  # ... shrinking by this factor every sweep (PrivSyn's schedule)
COPY_SHARE = 0.5  # share of moved rows replaced by a copy of a row already in the wanted cell
CLOSE_ENOUGH = 1e-4  # total variation below which a marginal is left alone in a sweep


def one_way_targets(marginals: Marginals, coarse: list[ColumnBins]) -> list[Target]:
    """The DP one-way marginals summed onto the coarse bins, one target per column."""
    out = []
    for index, (fine, spec) in enumerate(zip(marginals.layout, coarse, strict=True)):
        probabilities = coarse_counts(marginals.probabilities[index], fine, spec)
        out.append(Target(Clique((index,), (spec.size,)), probabilities))
    return out


def initial_pool(targets: list[Target], rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` rows whose columns are drawn independently from the one-way ``targets`` (one per column)."""
    return np.stack([rng.choice(t.clique.size, size=rows, p=t.probabilities) for t in targets], axis=1)


def fit_pool(pool: np.ndarray, targets: list[Target], rng: np.random.Generator, sweeps: int = SWEEPS) -> np.ndarray:
    """``pool`` with rows moved until its marginals follow ``targets`` (module docstring); updated in place."""
    rows = len(pool)
    for sweep in range(sweeps):
        step = FIRST_STEP * STEP_DECAY**sweep
        for target in targets:
            _move_rows(pool, target, step, rows, rng)
    return pool


def _move_rows(pool: np.ndarray, target: Target, step: float, rows: int, rng: np.random.Generator) -> None:
    clique = target.clique
    columns = list(clique.columns)
    cells = np.ravel_multi_index(pool[:, columns].T, clique.shape) if len(columns) > 1 else pool[:, columns[0]]
    have = np.bincount(cells, minlength=clique.size) / rows
    excess = have - target.probabilities
    if np.abs(excess).sum() / 2 < CLOSE_ENOUGH:
        return
    # Each row of an over-full cell leaves with probability step x (its cell's excess share).
    leave = np.divide(step * np.clip(excess, 0.0, None), have, out=np.zeros_like(have), where=have > 0)
    movers = np.flatnonzero(rng.random(rows) < leave[cells])
    deficit = np.clip(-excess, 0.0, None)
    if not len(movers) or deficit.sum() <= 0:
        return
    wanted = rng.choice(clique.size, size=len(movers), p=deficit / deficit.sum())
    order = np.argsort(cells, kind="stable")
    first = np.searchsorted(cells[order], wanted, side="left")
    last = np.searchsorted(cells[order], wanted, side="right")
    copy = (last > first) & (rng.random(len(movers)) < COPY_SHARE)
    if copy.any():
        donors = order[first[copy] + (rng.random(int(copy.sum())) * (last[copy] - first[copy])).astype(np.int64)]
        pool[movers[copy]] = pool[donors]
    rewrite = movers[~copy]
    if len(rewrite):
        pool[np.ix_(rewrite, columns)] = np.stack(np.unravel_index(wanted[~copy], clique.shape), axis=1)


def table_of(pool: np.ndarray, clique: Clique) -> np.ndarray:
    """The pool's distribution over ``clique``'s cells (flat, C order)."""
    cells = np.ravel_multi_index(pool[:, list(clique.columns)].T, clique.shape)
    return np.bincount(cells, minlength=clique.size) / max(len(pool), 1)


def decode(codes: np.ndarray, marginals: Marginals, coarse: list[ColumnBins], rng: np.random.Generator) -> pd.DataFrame:
    """Rows of coarse codes as a table in the schema's columns and domain (NaN where missing)."""
    data = {}
    for index, (fine, spec) in enumerate(zip(marginals.layout, coarse, strict=True)):
        col, column_codes = fine.column, codes[:, index]
        missing = column_codes == spec.missing_bin if spec.missing_bin is not None else None
        if not col.is_numeric:
            picks = np.minimum(column_codes, fine.value_size - 1)
            data[col.name] = column_values(col, np.asarray(col.categories, dtype=object)[picks], missing)
            continue
        fine_bins = _fine_bins(column_codes, fine, spec, marginals.probabilities[index], rng)
        values = np.full(len(column_codes), float(col.min))
        interval = fine_bins > 0
        lo, hi = fine.edges[fine_bins[interval] - 1], fine.edges[fine_bins[interval]]
        values[interval] = unwarp(col, rng.uniform(lo, hi))
        values = np.clip(values, col.min, col.max)
        data[col.name] = column_values(col, np.round(values) if col.type == "integer" else values, missing)
    return pd.DataFrame(data)


def _fine_bins(
    column_codes: np.ndarray, fine: ColumnBins, coarse: ColumnBins, probabilities: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For every coarse code, a fine value bin inside it drawn from the DP fine marginal (uniform if all 0)."""
    mapping = fine_to_coarse(fine, coarse)[: fine.value_size]
    out = np.zeros(len(column_codes), dtype=np.int64)
    for code in np.unique(column_codes):
        members = np.flatnonzero(mapping == code)
        if not len(members):  # the missing bin: its value is discarded
            continue
        weights = probabilities[members]
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(members), 1.0 / len(members))
        here = column_codes == code
        out[here] = rng.choice(members, size=int(here.sum()), p=weights)
    return out


def model_targets(marginals: Marginals) -> tuple[list[ColumnBins], list[Target]]:
    """The coarse layout and every measured marginal on it: one-way, ``measure-pairs`` pairs, selected cliques."""
    coarse = model_layout(marginals.layout, marginals.pair_bins)
    targets = one_way_targets(marginals, coarse)
    for pair in marginals.pairs:
        clique = Clique((pair.bins.i, pair.bins.j), pair.bins.shape)
        targets.append(Target(clique, pair.probabilities.reshape(-1)))
    return coarse, targets + list(marginals.cliques)


def sample_model(marginals: Marginals, rows: int, seed: int, estimator: str = "mbi") -> pd.DataFrame:
    """``rows`` rows of the model of every DP marginal (post-processing; reproducible from ``seed``).

    ``estimator`` "mbi": the graphical model (``marginals.graphical_model``), which measured better,
    falling back to the pool when it cannot be fitted; "pool": the row pool fitted to the targets.
    """
    rng = np.random.default_rng(seed)
    coarse, targets = model_targets(marginals)
    codes = None
    if estimator == "mbi":
        from fedsynth.marginals.graphical_model import fit_and_sample  # imports JAX: only when releasing

        codes = fit_and_sample(marginals, coarse, rows, seed)
    if codes is None:
        pool = fit_pool(initial_pool(targets[: len(coarse)], max(rows, DEFAULT_POOL_ROWS), rng), targets, rng)
        codes = pool[rng.permutation(len(pool))[:rows]]
    return decode(codes, marginals, coarse, rng)
