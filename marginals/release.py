"""A site's DP release of its histograms: one Gaussian mechanism on the vector of all counts.

The K one-way histograms are multiplied by a public weight w (``measure-one-way-weight``), the P
two-way ones taken as they are. One row adds 1 to exactly one cell of every histogram, so it moves
that vector by exactly S = sqrt(K w^2 + P); noise of scale ``noise_multiplier * S`` on every
coordinate makes it a Gaussian mechanism with that noise multiplier, charged to the site's
accountant as ``(noise_multiplier, 1.0, 1)``. Divided back by w, a one-way count carries noise
``noise_multiplier * S / w`` and a two-way count ``noise_multiplier * S``. Adding pairs costs no
extra ε: it spreads the same budget over more counts; w > 1 keeps more of it on the one-way
histograms, which every column's shape and the raking rest on. Without pairs w changes nothing.
The noise is the discrete Gaussian from the secret source (``privacy.secret_noise``).

``release_histograms`` is the one implementation: the site's ``measure`` handler, the central
baseline of the sweeps and the audit all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord

from fedsynth.marginals.bins import ColumnBins, PairBins, count, count_pairs
from fedsynth.privacy.mechanisms import histogram_noise_std
from fedsynth.privacy.secret_noise import NoiseSource


@dataclass(frozen=True)
class HistogramRelease:
    """The noisy counts of one release, and the noise scale each carries (public: from the plan)."""

    one_way: list[np.ndarray]
    two_way: list[np.ndarray]
    one_way_std: float
    two_way_std: float


def release_histograms(
    frame: pd.DataFrame,
    layout: list[ColumnBins],
    pairs: list[PairBins],
    noise_multiplier: float,
    weight: float,
    noise: NoiseSource,
) -> HistogramRelease:
    """Count ``frame`` in the public bins and release the counts as one Gaussian mechanism (module docstring)."""
    one_way_std, two_way_std = histogram_noise_std(noise_multiplier, len(layout), len(pairs), weight)
    one_way = add_noise(count(frame, layout), one_way_std, noise)
    two_way = add_noise(count_pairs(frame, pairs), two_way_std, noise)
    return HistogramRelease(one_way, two_way, one_way_std, two_way_std)


def one_way_weight(setting: str, one_way: int, two_way: int) -> float:
    """The weight of the one-way histograms in a release of ``one_way`` one-way and ``two_way`` two-way ones.

    ``setting`` is ``measure-one-way-weight``: a number, or "auto" for (two_way / one_way)^(1/3),
    at least 1. Why that: a histogram's error grows with the noise on its counts, which is
    z S / w for a one-way count and z S for a two-way one, S = sqrt(K w^2 + P). Minimising the
    sum of the two, sqrt(K w^2 + P) (1/w + 1), gives K w^3 = P. Many pairs per column (HI,
    all 78 pairs of 13 columns: 1.82) call for a heavier weight; about as many pairs as
    columns (the target with every column) for none.
    """
    if setting != "auto":
        return float(setting)
    if one_way == 0 or two_way == 0:
        return 1.0
    return max(1.0, (two_way / one_way) ** (1.0 / 3.0))


def release_record(layout: list[ColumnBins], pairs: list[PairBins], noisy: list[np.ndarray]) -> ArrayRecord:
    """A site's release as a Flower record: one array per column name, one per ``pair:A|B``."""
    keys = [spec.column.name for spec in layout] + [pair.key for pair in pairs]
    if len(keys) != len(noisy):
        raise ValueError(f"{len(noisy)} histograms for {len(keys)} names")
    return ArrayRecord({key: Array(np.asarray(values, dtype=float)) for key, values in zip(keys, noisy, strict=True)})


def read_release(
    record: ArrayRecord, layout: list[ColumnBins], pairs: list[PairBins]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The one-way and two-way histograms of a site's release; ``ValueError`` names a malformed one."""
    one_way, two_way = [], []
    for key, shape, out in [(s.column.name, (s.size,), one_way) for s in layout] + [
        (p.key, p.shape, two_way) for p in pairs
    ]:
        if key not in record:
            raise ValueError(f"histogram '{key}' is missing")
        values = record[key].numpy()
        if values.shape != shape or not np.all(np.isfinite(values)):
            raise ValueError(f"histogram of '{key}' has the wrong shape or non-finite values")
        out.append(values.astype(float))
    return one_way, two_way


def add_noise(counts: list[np.ndarray], noise_std: float, noise: NoiseSource) -> list[np.ndarray]:
    """Integer counts plus discrete Gaussian noise of scale ``noise_std`` on every count (one draw for all).

    The discrete Gaussian with scale σ on a count that one row moves by 1 is ρ = 1/(2σ²)-zCDP, exactly
    as the continuous Gaussian (Canonne, Kamath, Steinke 2020); over the release's one-way counts (σ =
    z S / w) and two-way counts (σ = z S) one row adds up to K w²/(2 z² S²) + P/(2 z² S²) = 1/(2 z²), the
    RDP curve of a Gaussian mechanism with noise multiplier z, which the site's accountant is charged.
    """
    if not counts:
        return []
    flat = noise.discrete_gaussian(np.concatenate([c.reshape(-1) for c in counts]), noise_std).astype(float)
    out, start = [], 0
    for c in counts:
        out.append(flat[start : start + c.size].reshape(c.shape))
        start += c.size
    return out
