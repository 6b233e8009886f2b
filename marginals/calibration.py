"""Calibrating the generator's output to the federation's DP marginals.

The generator learns under heavy DP noise and its one-way marginals drift
(a rare category vanishes, a numeric column shifts). The DP histograms the sites
released say what those marginals should be. Calibration is post-processing of
DP outputs only, so it is free:

- categorical columns: a bias added to the generator's logits for that column,
  fitted so the sampled frequencies match the DP frequencies. Only that column's
  head changes, so what the generator learned about how columns go together is
  kept. A nullable column's (present, missing) block is fitted the same way, to
  the DP missing rate;
- numeric columns: quantile mapping of the sampled values onto the DP marginal,
  which keeps every row's rank and so the rank correlations between columns;
- when the sites also released two-way histograms (``measure-pairs``): raking.
  An oversampled table, already calibrated as above, is binned like the
  histograms; iterative proportional fitting finds row weights under which
  every measured one-way and two-way marginal of the weighted table matches the
  DP one; then the requested number of rows is drawn in proportion to those
  weights. A share of the candidates (``rake-mix``) are recombined: each of
  their columns is taken from another, random generator row, so that raking
  can reach combinations the generator never produces (under DP noise it often
  learns spurious dependence: a near-deterministic link between two columns
  that are independent in the data). This injects the measured dependence (for instance between the target
  column and the others) that the generator did not learn under DP noise, while
  keeping the generator's own rows.

Everything here reads only DP outputs (the summed noisy histograms) and the
generator: it is post-processing, costs no privacy, and never reads a real row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fedsynth.marginals.bins import bin_index
from fedsynth.marginals.cliques import model_layout
from fedsynth.marginals.estimate import Marginals
from fedsynth.marginals.pool import sample_model
from fedsynth.models.gan import Generator
from fedsynth.tabular.codec import TableCodec, column_values

SUPPRESSED = -30.0  # logit bias of a category the DP marginal says is absent
OVERSAMPLE = 5  # raking draws this many generator rows per requested row ...
MIN_DRAW, MAX_DRAW = 50_000, 1_000_000  # ... at least / at most this many (never fewer than requested)
RAKE_ITERATIONS = 100
RAKE_TOLERANCE = 1e-4  # stop when no measured marginal is off by more than this (in probability)
_CHUNK = 50_000


def fit_logit_bias(
    generator: Generator, codec: TableCodec, marginals: Marginals, seed: int, rows: int = 20_000, iterations: int = 4
) -> list[torch.Tensor]:
    """Per softmax block (``TableCodec.blocks``), the logit shift that moves sampled frequencies to the DP ones.

    A category block's target is the column's marginal over present values (a missing row's
    category is not drawn into the table); a missing block's is (1 − rate, rate).
    """
    blocks = generator.category_blocks
    targets = []
    for block in codec.blocks:
        rate = marginals.missing_rate(block.column_index)
        targets.append(
            np.array([1.0 - rate, rate]) if block.is_missing else marginals.value_probabilities(block.column_index)
        )
    bias = [torch.zeros(stop - start) for start, stop in blocks]
    floor = 1.0 / rows
    for _ in range(iterations):
        rng = torch.Generator().manual_seed(seed)
        encoded = generator.sample(rows, generator=rng, logit_bias=bias)
        for j, ((start, stop), target, block) in enumerate(zip(blocks, targets, codec.blocks, strict=True)):
            chosen = encoded[:, start:stop]
            if not block.is_missing and codec.spans[block.column_index].missing_block is not None:
                # Frequencies among the rows where the column is present (missing rows encode all zeros).
                chosen = chosen[chosen.sum(dim=1) > 0]
                if len(chosen) == 0:
                    continue
            observed = chosen.mean(dim=0).double().numpy()
            step = np.log(np.maximum(target, floor) / np.maximum(observed, floor))
            updated = bias[j].double().numpy() + step
            updated[target == 0] = SUPPRESSED
            bias[j] = torch.as_tensor(updated, dtype=torch.float32)
    return bias


def _constraints(table: pd.DataFrame, marginals: Marginals) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(kind, cell of every row, target probability per cell) for every measured marginal."""
    out = []
    for spec, target in zip(marginals.layout, marginals.probabilities, strict=True):
        out.append(("one_way", bin_index(table, spec), target))
    for pair in marginals.pairs:
        cols = pair.bins.shape[1]
        cells = bin_index(table, pair.bins.first) * cols + bin_index(table, pair.bins.second)
        out.append(("two_way", cells, pair.probabilities.ravel()))
    if marginals.cliques:
        coarse = model_layout(marginals.layout, marginals.pair_bins)
        for target in marginals.cliques:
            clique = target.clique
            columns = [bin_index(table, coarse[i]) for i in clique.columns]
            out.append(("clique", np.ravel_multi_index(columns, clique.shape), target.probabilities))
    return out


def _errors(constraints: list[tuple[str, np.ndarray, np.ndarray]], weights: np.ndarray) -> dict[str, float]:
    """Largest absolute gap between the weighted table's marginals and the targets, per kind."""
    out: dict[str, float] = {}
    total = weights.sum()
    for kind, cells, target in constraints:
        have = np.bincount(cells, weights=weights, minlength=len(target)) / total
        out[kind] = max(out.get(kind, 0.0), float(np.abs(have - target).max()))
    return out


def rake(
    table: pd.DataFrame, marginals: Marginals, rows: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, object]]:
    """``rows`` rows of ``table`` drawn with weights fitted (IPF) to the DP one-way and two-way marginals.

    Post-processing: reads the candidate rows (generator output) and the DP marginals only.
    A cell the DP marginal wants but no candidate row falls in cannot be filled; the
    other cells of that marginal then share its mass. Returns the rows and diagnostics.
    """
    constraints = _constraints(table, marginals)
    weights = np.full(len(table), 1.0 / len(table))
    before = _errors(constraints, weights)
    iterations = 0
    for iterations in range(1, RAKE_ITERATIONS + 1):  # noqa: B007 (reported below)
        for _kind, cells, target in constraints:
            have = np.bincount(cells, weights=weights, minlength=len(target))
            factor = np.divide(target, have, out=np.zeros_like(target), where=have > 0)
            weights = weights * factor[cells]
            weights /= weights.sum()
        if max(_errors(constraints, weights).values()) < RAKE_TOLERANCE:
            break
    after = _errors(constraints, weights)
    # Systematic resampling: each row is drawn floor or ceil of rows x weight times.
    points = (rng.random() + np.arange(rows)) / rows
    picks = np.minimum(np.searchsorted(np.cumsum(weights), points, side="right"), len(table) - 1)
    rng.shuffle(picks)
    ess = float(weights.sum() ** 2 / np.square(weights).sum())
    diagnostics: dict[str, object] = {
        "candidate_rows": len(table),
        "rows": rows,
        "iterations": iterations,
        "max_marginal_error_before": before,
        "max_marginal_error_after": after,
        "effective_sample_size": ess,
        "effective_sample_share": ess / len(table),
        "distinct_rows_drawn": len(np.unique(picks)),
    }
    return table.iloc[picks].reset_index(drop=True), diagnostics


def _draw(generator: Generator, codec: TableCodec, bias: list[torch.Tensor], rows: int, seed: int) -> pd.DataFrame:
    rng = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, rows, _CHUNK):
        n = min(_CHUNK, rows - start)
        parts.append(codec.decode(generator.sample(n, generator=rng, logit_bias=bias).numpy()))
    return pd.concat(parts, ignore_index=True)


def calibrated_sample(
    generator: Generator, codec: TableCodec, marginals: Marginals, rows: int, seed: int
) -> tuple[pd.DataFrame, dict[str, object] | None]:
    """``rows`` synthetic rows whose one-way (and measured two-way) marginals follow the DP marginals.

    Returns the rows and, with two-way marginals, what raking did (for the run's report; no private
    data), else None.
    """
    if marginals.release_from == "marginals":
        return sample_model(marginals, rows, seed), {"source": "marginals", "cliques": len(marginals.cliques)}
    raked = bool(marginals.pairs or marginals.cliques)
    bias = fit_logit_bias(generator, codec, marginals, seed=seed + 1)
    draw = min(max(OVERSAMPLE * rows, MIN_DRAW), max(MAX_DRAW, rows)) if raked else rows
    table = _draw(generator, codec, bias, draw, seed)
    for index, span in enumerate(codec.spans):
        if span.is_numeric:
            values = pd.to_numeric(table[span.column.name]).to_numpy(dtype=float, na_value=np.nan)
            mapped = marginals.quantile_map(index, values)
            table[span.column.name] = column_values(span.column, np.nan_to_num(mapped), np.isnan(mapped))
    if not raked:
        return table, None
    rng = np.random.default_rng(seed)
    table = recombine(table, marginals.rake_mix, rng)
    table, raking = rake(table, marginals, rows, rng)
    return table, {**raking, "recombined_share": marginals.rake_mix}


def recombine(table: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    """``table`` with its last ``share`` of rows rebuilt column by column from random rows of ``table``.

    Each rebuilt row takes every column's value from an independently chosen row, so
    those rows follow the product of the table's one-way marginals.
    """
    count = round(share * len(table))
    if count == 0:
        return table
    out = table.copy()
    for name in out.columns:
        donors = rng.integers(0, len(table), count)
        out.iloc[len(table) - count :, out.columns.get_loc(name)] = table[name].to_numpy()[donors]
    return out
