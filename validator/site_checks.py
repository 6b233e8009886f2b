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
- ``noisy_fidelity``: fidelity aggregates with Gaussian noise, charged to the
  site's privacy accountant through ``gaussian_release_cost``.

Distances are Euclidean in the codec's encoded space (``tabular.codec.TableCodec``:
numeric columns scaled to [-1, 1] over the public bounds, categories one-hot), the
same space as ``metrics.privacy``'s DCR. Two rows that differ in one category are
at least sqrt(2) apart; one unit of a 0..100 integer column is 0.02.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from metrics.fidelity import ks_complement, tv_complement
from metrics.neighbours import nearest_distances
from privacy.budget import History, epsilon_of
from privacy.secret_noise import NoiseSource
from tabular.codec import TableCodec
from tabular.schema import Schema
from validator.policy import GENERALISED  # a generalised quasi-identifier value: matches any real value

DEFAULT_RADIUS = 0.5  # public radius of the fixed-radius coverage, in encoded space


def _released_columns(synthetic: pd.DataFrame, schema: Schema) -> list[str]:
    """Schema columns present in the (possibly column-reduced) synthetic table, in schema order."""
    return [name for name in schema.names if name in synthetic.columns]


def _comparable(frame: pd.DataFrame, columns: list[str], schema: Schema) -> pd.DataFrame:
    """Numeric columns as float, discrete ones as text, so that equal values compare equal whatever the dtype."""
    out = {}
    for c in columns:
        out[c] = pd.to_numeric(frame[c]).astype(float) if schema.column(c).is_numeric else frame[c].astype(str)
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

    ``synthetic``: the table as it would be released (``validator.release.prepare_release``):
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
    scale = float(noise_multiplier * math.sqrt(len(exact)))
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
# Noisy fidelity aggregates
# ---------------------------------------------------------------------------------------------------------------------
def fidelity_aggregates(
    synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema, radius: float = DEFAULT_RADIUS
) -> dict[str, float]:
    """Exact aggregates, each a mean over the site's real rows (stays on the site; never send these).

    - ``shape:<column>``: KS complement (numeric) or TV complement (discrete), as in
      ``metrics.fidelity.column_shapes``;
    - ``coverage``: share of real rows with a synthetic row within the public ``radius``
      (encoded space). This is a fixed-radius variant of Naeem et al.'s coverage: their
      radius is each real row's k-th-neighbour distance, which one added row can shrink for
      many other rows, so its sensitivity is not bounded by 1/n. A public radius makes each
      real row's contribution depend on that row alone.
    """
    out = {}
    for col in schema.columns:
        if col.is_numeric:
            out[f"shape:{col.name}"] = ks_complement(real[col.name].to_numpy(), synthetic[col.name].to_numpy())
        else:
            out[f"shape:{col.name}"] = tv_complement(real[col.name], synthetic[col.name])
    codec = TableCodec(schema)
    nearest = nearest_distances(
        codec.encode(real[schema.names]).astype(np.float64), codec.encode(synthetic[schema.names]).astype(np.float64)
    )[:, 0]
    out["coverage"] = float((nearest <= radius).mean())
    return out


def gaussian_release_cost(num_values: int, noise_std: float, n_rows: int) -> float:
    """Noise multiplier of releasing ``num_values`` per-row means with Gaussian noise of std ``noise_std`` each.

    Sensitivity: each value is a mean over the site's ``n_rows`` rows of a quantity in [0, 1]
    (a KS or TV complement, a coverage share). Adding one row moves such a mean by at most
    1/(n+1), removing one by at most 1/(n-1); so each value moves by at most 1/(n-1) and the
    vector of ``num_values`` values by at most sqrt(num_values)/(n-1) in L2 norm (one row
    can move all of them). Adding N(0, noise_std²) to each is the Gaussian mechanism with
    noise multiplier z = noise_std / (sqrt(num_values)/(n-1)); an Opacus accountant history
    entry ``(z, 1.0, 1)`` (sample rate 1, one step) accounts for it exactly.
    """
    if num_values < 1:
        raise ValueError(f"num_values must be at least 1, got {num_values}")
    if n_rows < 2:
        raise ValueError(f"n_rows must be at least 2, got {n_rows}")
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std}")
    sensitivity = math.sqrt(num_values) / (n_rows - 1)
    return float(noise_std / sensitivity)


def epsilon_with_release(history: History, noise_multiplier: float, delta: float, accountant: str) -> float:
    """ε the site would have spent after adding one release of ``noise_multiplier`` to its history.

    Call before releasing and refuse when it exceeds the site's budget (or its jurisdiction's
    cap): ``SiteBudget.steps_allowed`` counts DP-SGD steps only and does not see this release.
    """
    with warnings.catch_warnings():  # Opacus's PRV accountant warns about log(1 - q) at q = 1
        warnings.simplefilter("ignore", RuntimeWarning)
        return epsilon_of([*history, (float(noise_multiplier), 1.0, 1)], delta, accountant)


def noisy_fidelity(
    synthetic: pd.DataFrame,
    real: pd.DataFrame,
    schema: Schema,
    noise_scale: float,
    rng: np.random.Generator,
    radius: float = DEFAULT_RADIUS,
) -> dict[str, Any]:
    """``fidelity_aggregates`` with N(0, noise_scale²) added to each value: what a site may send back.

    Returns ``values`` (noisy; not clipped, so a mean over sites stays unbiased: values may
    fall slightly outside [0, 1]), ``noise_std``, ``num_values``, ``radius`` and
    ``noise_multiplier`` (``gaussian_release_cost``), which the site appends to its
    accountant's history as ``(noise_multiplier, 1.0, 1)`` before sending. ``noise_scale``
    0 means no noise and no DP (tests only). For production use a cryptographically secure
    RNG, as for DP-SGD.
    """
    if noise_scale < 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
    exact = fidelity_aggregates(synthetic, real, schema, radius)
    noise = rng.normal(0.0, noise_scale, len(exact)) if noise_scale > 0 else np.zeros(len(exact))
    values = {key: float(value + draw) for (key, value), draw in zip(exact.items(), noise, strict=True)}
    multiplier = gaussian_release_cost(len(exact), noise_scale, len(real)) if noise_scale > 0 else None
    return {
        "values": values,
        "noise_std": float(noise_scale),
        "num_values": len(exact),
        "radius": float(radius),
        "noise_multiplier": multiplier,
    }
