"""Every DP release a site makes, its sensitivity and its noise, in one place.

Each release is a Gaussian mechanism with noise multiplier z on a vector whose L2 sensitivity under
add/remove-one-row is S: every coordinate gets noise of scale z·S (the discrete Gaussian for counts,
the secure sum of Gaussians otherwise; ``privacy.secret_noise``). The site's accountant is charged one
entry ``(z, 1.0, 1)`` per release (``release_entry``); DP-SGD steps are Opacus's ``(z, q, steps)``.

| release (where it is made)                       | the vector                        | S                |
| ------------------------------------------------ | --------------------------------- | ---------------- |
| DP histograms (``marginals.release``)            | K one-way × weight w, P two-way   | sqrt(K w² + P)   |
| release check (``client.site_checks``)           | 1 or 2 counts of real rows        | sqrt(counts)     |
| validator feedback (``client.site_checks``)      | one sum per column, one count     | sqrt(columns + 1)|

In the last two each coordinate is a sum over the site's rows of a term in [-1, 1] (or {0, 1}), so
one row moves each by at most 1, whatever the row count: S = sqrt(number of values).
"""

from __future__ import annotations

import math
import warnings

from fedsynth.privacy.budget import History, epsilon_of


def release_entry(noise_multiplier: float) -> tuple[float, float, int]:
    """The accountant history entry of one Gaussian release at ``noise_multiplier`` (sample rate 1, one step)."""
    return (float(noise_multiplier), 1.0, 1)


def histogram_noise_std(
    noise_multiplier: float, one_way: int, two_way: int = 0, weight: float = 1.0
) -> tuple[float, float]:
    """Noise std on each (one-way, two-way) count of a histogram release.

    One row moves the released vector (``weight`` × each of the ``one_way`` histograms, then the
    ``two_way`` ones) by exactly S = sqrt(one_way × weight² + two_way). Noise ``noise_multiplier`` × S
    on every coordinate, divided back by the weight for the one-way counts, gives
    (noise_multiplier × S / weight, noise_multiplier × S).
    """
    sensitivity = math.sqrt(one_way * weight**2 + two_way)
    return noise_multiplier * sensitivity / weight, noise_multiplier * sensitivity


def unit_sums_noise_std(noise_multiplier: float, values: int) -> float:
    """Noise std on each of ``values`` sums that one row moves by at most 1 each (S = sqrt(values))."""
    if values < 1:
        raise ValueError(f"a release needs at least one value, got {values}")
    return float(noise_multiplier * math.sqrt(values))


def epsilon_with_release(history: History, noise_multiplier: float, delta: float, accountant: str) -> float:
    """ε the site would have spent after one more release at ``noise_multiplier``.

    Call before releasing and refuse when it exceeds the site's budget (or its jurisdiction's cap):
    ``SiteBudget.steps_allowed`` counts DP-SGD steps only and does not see this release.
    """
    with warnings.catch_warnings():  # Opacus's accountants warn about log(1 - q) at q = 1
        warnings.simplefilter("ignore", RuntimeWarning)
        return epsilon_of([*history, release_entry(noise_multiplier)], delta, accountant)
