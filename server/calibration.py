"""Calibrating the generator's output to the federation's DP marginals.

The generator learns under heavy DP noise and its one-way marginals drift
(a rare category vanishes, a numeric column shifts). The DP histograms the sites
released say what those marginals should be. Calibration is post-processing of
DP outputs only, so it is free:

- categorical columns: a bias added to the generator's logits for that column,
  fitted so the sampled frequencies match the DP frequencies. Only that column's
  head changes, so what the generator learned about how columns go together is
  kept;
- numeric columns: quantile mapping of the sampled values onto the DP marginal,
  which keeps every row's rank and so the rank correlations between columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.gan import Generator
from privacy.histograms import Marginals
from tabular.codec import TableCodec

SUPPRESSED = -30.0  # logit bias of a category the DP marginal says is absent


def fit_logit_bias(
    generator: Generator, codec: TableCodec, marginals: Marginals, seed: int, rows: int = 20_000, iterations: int = 4
) -> list[torch.Tensor]:
    """Per categorical block, the logit shift that moves sampled frequencies to the DP ones."""
    blocks = generator.category_blocks
    targets = [marginals.probabilities[i] for i, span in enumerate(codec.spans) if not span.is_numeric]
    bias = [torch.zeros(stop - start) for start, stop in blocks]
    floor = 1.0 / rows
    for _ in range(iterations):
        rng = torch.Generator().manual_seed(seed)
        encoded = generator.sample(rows, generator=rng, logit_bias=bias)
        for j, ((start, stop), target) in enumerate(zip(blocks, targets, strict=True)):
            observed = encoded[:, start:stop].mean(dim=0).double().numpy()
            step = np.log(np.maximum(target, floor) / np.maximum(observed, floor))
            updated = bias[j].double().numpy() + step
            updated[target == 0] = SUPPRESSED
            bias[j] = torch.as_tensor(updated, dtype=torch.float32)
    return bias


def calibrated_sample(
    generator: Generator, codec: TableCodec, marginals: Marginals, rows: int, seed: int
) -> pd.DataFrame:
    """``rows`` synthetic rows whose one-way marginals follow the DP marginals."""
    bias = fit_logit_bias(generator, codec, marginals, seed=seed + 1)
    rng = torch.Generator().manual_seed(seed)
    table = codec.decode(generator.sample(rows, generator=rng, logit_bias=bias).numpy())
    for index, span in enumerate(codec.spans):
        if span.is_numeric:
            values = table[span.column.name].to_numpy(dtype=float)
            mapped = marginals.quantile_map(index, values)
            table[span.column.name] = mapped.astype(np.int64) if span.column.type == "integer" else mapped
    return table
