"""Checks that run where the real data lives: on a site, against its own rows.

Nothing here is ever called by the server with real rows. A site receives a
synthetic table, computes, and sends back only:

- ``noisy_release_counts``: the release gate's check, a DP release. It counts the
  site's *real* rows that the released table copies (some released row agrees
  with the real row on every compared column) and, when the policy sets a
  distance threshold, the real rows whose nearest released row lies strictly
  closer than it. Each real row adds at most 1 to each count, and whether it
  does depends on that row and the released table only, so adding or removing
  one row moves each of the K counts (1 or 2) by at most 1, and the vector by at
  most sqrt(K) in L2 norm. The counts get discrete Gaussian noise of scale
  z·sqrt(K) each (``privacy.secret_noise.NoiseSource.discrete_gaussian``): a
  Gaussian mechanism with noise multiplier z, which the site charges to its
  accountant as one ``(z, 1.0, 1)`` entry before it replies. The exact counts
  (``_real_row_counts``) never leave this module.
- ``noisy_feedback``: the validator's per-column distances and coverage of a
  synthetic sample, as *sums* over the site's rows (each moved by at most 1 by one
  row, whatever the row count), with Gaussian noise of scale z·sqrt(K), K the
  number of sums; charged as one ``(z, 1.0, 1)`` entry before the site replies.
  The server turns them into scores by dividing by the site's public row count.

Distances are Euclidean in the codec's encoded space (``tabular.codec.TableCodec``:
numeric columns scaled to [-1, 1] over the public bounds, categories one-hot), the
same space as ``metrics.disclosure``'s DCR. Two rows that differ in one category are
at least sqrt(2) apart; one unit of a 0..100 integer column is 0.02.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.metrics.neighbours import nearest_distances
from fedsynth.privacy.mechanisms import unit_sums_noise_std
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.sovereignty.policy import GENERALISED  # a generalised quasi-identifier value: matches any real value
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema

DEFAULT_RADIUS = 0.5  # public radius of the fixed-radius coverage, in encoded space


def _released_columns(synthetic: pd.DataFrame, schema: Schema) -> list[str]:
    """Schema columns present in the (possibly column-reduced) synthetic table, in schema order."""
    return [name for name in schema.names if name in synthetic.columns]


def _comparable(frame: pd.DataFrame, columns: list[str], schema: Schema) -> pd.DataFrame:
    """Numeric columns as float, discrete ones as text, so that equal values compare equal whatever the dtype.

    A missing cell compares equal to a missing cell (−inf for numbers, the text "nan" for categories).
    """
    out = {}
    for c in columns:
        if schema.column(c).is_numeric:
            out[c] = pd.to_numeric(frame[c]).astype(float).fillna(-np.inf)
        else:
            out[c] = frame[c].astype(str)
    return pd.DataFrame(out)


def _wildcard_groups(synthetic: pd.DataFrame, columns: list[str]) -> dict[tuple[str, ...], np.ndarray]:
    """Synthetic row positions grouped by which columns hold the generalised value ``*``."""
    is_star = np.column_stack([synthetic[c].astype(str).to_numpy() == GENERALISED for c in columns])
    groups: dict[tuple[str, ...], list[int]] = {}
    for position, row in enumerate(is_star):
        groups.setdefault(tuple(c for c, star in zip(columns, row, strict=True) if star), []).append(position)
    return {key: np.asarray(rows) for key, rows in groups.items()}


def _real_row_counts(
    synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema, distance_threshold: float
) -> tuple[int, int]:
    """Exact (copied, close): how many of this site's real rows the released table copies or comes close to.

    Private to the site: only ``noisy_release_counts`` may use it. ``copied``: real rows that some
    synthetic row agrees with on every compared column (a generalised ``*`` matches any value).
    ``close``: real rows whose nearest synthetic row (encoded space, over the columns that row
    does not generalise) lies strictly closer than ``distance_threshold``; 0 when the threshold is
    0. A real row's contribution depends on that row and the synthetic table alone (sensitivity 1).
    """
    columns = _released_columns(synthetic, schema)
    if len(synthetic) == 0 or len(real) == 0:
        return 0, 0
    if not columns:  # nothing compared: every released row matches every real row
        return len(real), len(real) if distance_threshold > 0 else 0
    copied = np.zeros(len(real), dtype=bool)
    close = np.zeros(len(real), dtype=bool)
    for starred, rows in _wildcard_groups(synthetic, columns).items():
        kept = [c for c in columns if c not in starred]
        if not kept:  # every compared value generalised: matches any real row
            copied[:] = True
            close[:] = distance_threshold > 0
            continue
        part = _comparable(synthetic.iloc[rows], kept, schema)
        reference = _comparable(real, kept, schema)
        released = set(part.itertuples(index=False, name=None))
        copied |= np.fromiter((row in released for row in reference.itertuples(index=False, name=None)),
                              dtype=bool, count=len(reference))  # fmt: skip
        if distance_threshold > 0:
            codec = TableCodec(Schema(columns=tuple(schema.column(c) for c in kept), source=schema.source))
            nearest = nearest_distances(
                codec.encode(reference).astype(np.float64), codec.encode(part).astype(np.float64), 1
            )[:, 0]
            close |= nearest < distance_threshold
    return int(copied.sum()), int(close.sum())


def noisy_release_counts(
    synthetic: pd.DataFrame,
    real: pd.DataFrame,
    schema: Schema,
    distance_threshold: float,
    noise_multiplier: float,
    noise: NoiseSource,
) -> dict[str, Any]:
    """The release gate's check of ``synthetic`` against this site's rows, as a DP release.

    ``synthetic``: the table as it would be released (``sovereignty.release_gate.prepare_release``):
    columns dropped by the policy are left out of the comparison, and a generalised ``*``
    matches any value (conservative: it can only raise the counts). ``real``: this site's
    validated rows. Releases ``copied_noisy`` (real rows some released row copies) and, when
    ``distance_threshold`` > 0, ``close_noisy`` (real rows with a released row strictly closer
    than the threshold, copies included), each with discrete Gaussian noise of scale
    ``noise_multiplier * sqrt(K)``, K the number of counts: a Gaussian mechanism with noise
    multiplier ``noise_multiplier`` (one row moves the vector by at most sqrt(K) in L2 norm).
    The caller charges ``(noise_multiplier, 1.0, 1)`` to the site's accountant before sending.
    ``synthetic_rows``, ``columns_compared`` and ``distance_threshold`` describe the request
    (public); ``noise_std`` is the noise scale of each count.
    """
    if distance_threshold < 0 or not math.isfinite(distance_threshold):
        raise ValueError(f"distance_threshold must be a finite number >= 0, got {distance_threshold!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a positive finite number, got {noise_multiplier!r}")
    copied, close = _real_row_counts(synthetic, real, schema, distance_threshold)
    exact = np.array([copied, close] if distance_threshold > 0 else [copied], dtype=np.int64)
    scale = unit_sums_noise_std(noise_multiplier, len(exact))
    noisy = noise.discrete_gaussian(exact, scale)
    out: dict[str, Any] = {
        "synthetic_rows": len(synthetic),
        "columns_compared": _released_columns(synthetic, schema),
        "distance_threshold": float(distance_threshold),
        "copied_noisy": int(noisy[0]),
    }
    if distance_threshold > 0:
        out["close_noisy"] = int(noisy[1])
    out["noise_std"] = scale
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Validator feedback: noisy sums whose sensitivity does not depend on the site's row count
# ---------------------------------------------------------------------------------------------------------------------
def ks_distance_count(real: np.ndarray, synthetic: np.ndarray) -> float:
    """n·D: the Kolmogorov–Smirnov distance between ``real`` (n values) and ``synthetic``, times n.

    n·D = sup_x |C(x) − n·F(x)|, with C the count of real values ≤ x and F the synthetic ECDF. Both
    are right-continuous step functions that move only at the pooled values, so the sup over the
    reals is the max over those values (and 0 left of all of them). Adding a real row y changes
    C(x) − n·F(x) at every x by 1[y ≤ x] − F(x), which lies in [−1, 1]: sensitivity 1, whatever n.
    A missing value (NaN, in a nullable column) counts as −inf, below every value, so a gap in the
    missing rate shows in the distance too; the sensitivity argument is unchanged.
    """
    synthetic = np.sort(np.nan_to_num(np.asarray(synthetic, dtype=np.float64), nan=-np.inf))
    real = np.sort(np.nan_to_num(np.asarray(real, dtype=np.float64), nan=-np.inf))
    if len(real) == 0:
        return 0.0
    if len(synthetic) == 0:
        return float(len(real))  # F ≡ 0: the sup is C at the largest value
    points = np.concatenate([real, synthetic])
    below_real = np.searchsorted(real, points, side="right")
    below_synthetic = np.searchsorted(synthetic, points, side="right") / len(synthetic)
    return float(np.max(np.abs(below_real - len(real) * below_synthetic)))


def tv_distance_count(real: pd.Series, synthetic: pd.Series) -> float:
    """n·TV: the total-variation distance between the category shares of ``real`` and ``synthetic``, times n.

    n·TV = ½ Σ_c |count_c − n·p_c| over every category of either table. Adding a real row of
    category c moves count_c by 1 and every n·p_d by p_d: the sum moves by at most
    ½(|1 − p_c| + Σ_{d≠c} p_d) = 1 − p_c ≤ 1. Sensitivity 1, whatever n.
    """
    counts = real.astype(str).value_counts()
    shares = synthetic.astype(str).value_counts(normalize=True) if len(synthetic) else pd.Series(dtype=float)
    categories = counts.index.union(shares.index)
    gap = counts.reindex(categories, fill_value=0) - len(real) * shares.reindex(categories, fill_value=0.0)
    return float(0.5 * np.abs(gap.to_numpy(dtype=np.float64)).sum())


def feedback_sums(
    synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema, radius: float = DEFAULT_RADIUS
) -> dict[str, float]:
    """Exact feedback sums over the site's real rows (stays on the site; never send these).

    - ``distance:<column>``: n·KS (numeric) or n·TV (discrete) distance of the column
      (``ks_distance_count``, ``tv_distance_count``); sensitivity 1 each;
    - ``covered``: real rows with a synthetic row within the public ``radius`` in encoded space
      (a fixed-radius variant of Naeem et al.'s coverage, whose own radius, a k-th-neighbour
      distance among real rows, one added row could shrink for many rows); sensitivity 1.

    Sums, not means: a mean's sensitivity 1/(n−1) depends on the private row count n, a sum's
    does not. The server divides by the site's public row count (``server.oversight.combine_feedback``).
    """
    out = {}
    for col in schema.columns:
        if col.is_numeric:
            out[f"distance:{col.name}"] = ks_distance_count(
                pd.to_numeric(real[col.name]).to_numpy(dtype=float, na_value=np.nan),
                pd.to_numeric(synthetic[col.name]).to_numpy(dtype=float, na_value=np.nan),
            )
        else:
            out[f"distance:{col.name}"] = tv_distance_count(real[col.name], synthetic[col.name])
    if len(real) and len(synthetic):
        codec = TableCodec(schema)
        nearest = nearest_distances(
            codec.encode(real[schema.names]).astype(np.float64),
            codec.encode(synthetic[schema.names]).astype(np.float64),
        )[:, 0]
        out["covered"] = float((nearest <= radius).sum())
    else:
        out["covered"] = 0.0
    return out


def noisy_feedback(
    synthetic: pd.DataFrame,
    real: pd.DataFrame,
    schema: Schema,
    noise_multiplier: float,
    noise: NoiseSource,
    radius: float = DEFAULT_RADIUS,
) -> dict[str, Any]:
    """The validator's feedback on ``synthetic`` from this site's rows, as a DP release.

    ``feedback_sums`` has K = (columns + 1) values, each moved by at most 1 when one row is added
    or removed, so the vector moves by at most sqrt(K) in L2 norm; K depends on the public schema
    only. Each value gets Gaussian noise of std ``noise_multiplier * sqrt(K)`` from ``noise``
    (floating-point-safe, ``NoiseSource.gaussian``): a Gaussian mechanism with that noise
    multiplier, which the caller charges to the site's accountant as ``(noise_multiplier, 1.0, 1)``
    before sending. Values are not clipped, so sums over sites stay unbiased.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a positive finite number, got {noise_multiplier!r}")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    exact = feedback_sums(synthetic, real, schema, radius)
    std = unit_sums_noise_std(noise_multiplier, len(exact))
    draws = noise.gaussian(len(exact), std)
    return {
        "values": {key: float(value + draw) for (key, value), draw in zip(exact.items(), draws, strict=True)},
        "noise_std": std,
        "num_values": len(exact),
        "radius": float(radius),
        "synthetic_rows": len(synthetic),
    }
