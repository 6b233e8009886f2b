"""Empirical differential-privacy audit: a lower bound on ε from a distinguishing (canary) attack.

A mechanism that claims (ε, δ)-DP must keep *every* test that tells two neighbouring datasets apart
weak: if a test says "the canary row is present" with false-positive rate FPR (on the dataset
without the canary) and false-negative rate FNR (on the dataset with it), then DP forces

    1 - δ - FPR <= e^ε · FNR   and   1 - δ - FNR <= e^ε · FPR,

so every such test implies a *lower bound* on the ε the mechanism really has. This module runs that
argument on measured scores: run the mechanism many times in each world, score each output with an
attack, pick a threshold, count the errors, and turn the error counts into an ε lower bound that holds
with a stated confidence (Clopper–Pearson intervals on the two rates). If the lower bound exceeds the
ε the mechanism claims, the implementation is broken (too little noise, reused or predictable noise,
a sensitivity that is larger than assumed, ...). A lower bound well below the claim is *not* a proof
of privacy: it only says that this attack could not do better.

The method follows

* M. Jagielski, J. Ullman, A. Oprea, "Auditing Differentially Private Machine Learning: How Private
  is Private SGD?", NeurIPS 2020, and
* M. Nasr, S. Song, A. Thakurta, N. Papernot, N. Carlini, "Adversary Instantiation: Lower Bounds for
  Differentially Private Machine Learning", IEEE S&P 2021.

Only the statistical core lives here: the caller supplies the scores (``audit_scores``) or a function
that runs the mechanism once on the neighbouring dataset without / with the canary and returns the
attack's score (``audit_mechanism``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

__all__ = ["AuditResult", "audit_mechanism", "audit_scores", "clopper_pearson", "epsilon_from_rates"]

# Fewer scores than this per world cannot say anything useful (each half would hold under five).
MIN_SCORES_PER_WORLD = 10


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper–Pearson interval for a binomial proportion.

    Each side leaves out at most ``(1 - confidence) / 2``, so the upper end alone is a one-sided
    upper bound at confidence ``1 - (1 - confidence) / 2`` (and so at least ``confidence``). The
    interval is conservative: its coverage is at least ``confidence`` for every true proportion.
    """
    if isinstance(successes, bool) or isinstance(trials, bool):
        raise ValueError("successes and trials must be integers, not booleans")
    if int(trials) != trials or int(successes) != successes:
        raise ValueError(f"successes and trials must be integers, got {successes!r} and {trials!r}")
    successes, trials = int(successes), int(trials)
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, trials={trials}], got {successes}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    alpha = 1.0 - confidence
    # beta.ppf(q, 0, ·) is undefined (NaN), and the exact interval's end is 0 / 1 there anyway.
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2.0, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1.0 - alpha / 2.0, successes + 1, trials - successes))
    return low, high


def _log_ratio(numerator: float, denominator: float) -> float:
    # A non-positive numerator: the DP inequality holds for every ε >= 0, so the term bounds nothing.
    if numerator <= 0.0:
        return 0.0
    # A positive numerator over a zero rate: no finite ε satisfies numerator <= e^ε · 0.
    if denominator <= 0.0:
        return math.inf
    return math.log(numerator / denominator)


def epsilon_from_rates(fpr: float, fnr: float, delta: float) -> float:
    """The smallest ε consistent with a test of these error rates under (ε, δ)-DP (never below 0).

    ``max(log((1 - δ - fpr) / fnr), log((1 - δ - fnr) / fpr))``: a non-positive numerator gives 0 for
    that term, a zero denominator under a positive numerator gives ``math.inf``.
    """
    for name, value in (("fpr", fpr), ("fnr", fnr)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    return max(0.0, _log_ratio(1.0 - delta - fpr, fnr), _log_ratio(1.0 - delta - fnr, fpr))


@dataclass(frozen=True)
class AuditResult:
    """What one audit found.

    ``epsilon_lower_bound`` is the claim to act on: with probability at least ``confidence`` (over the
    mechanism's randomness in the held-out runs) the mechanism's true ε is at least this large, for the
    stated δ. ``interval`` is ``(epsilon_lower_bound, most optimistic ε consistent with the data)``;
    its high end may be ``math.inf``. ``point_estimate`` is ε at the observed held-out rates.

    The attack says "canary present" when ``score > threshold``, or, when ``flipped``, when
    ``score < threshold``. ``fpr`` / ``fnr`` are the observed rates on the held-out half of each world;
    ``trials_per_world`` is the number of scores supplied per world (half of them chose the threshold,
    the other half measured the rates).
    """

    epsilon_lower_bound: float
    interval: tuple[float, float]
    point_estimate: float
    fpr: float
    fnr: float
    threshold: float
    trials_per_world: int
    confidence: float
    flipped: bool = False

    def to_json(self) -> dict[str, Any]:
        """A dict that ``json.dumps(..., allow_nan=False)`` accepts; an infinite ε is written as ``None``."""

        def finite(value: float) -> float | None:
            return float(value) if math.isfinite(value) else None

        return {
            "epsilon_lower_bound": finite(self.epsilon_lower_bound),
            "interval": [finite(self.interval[0]), finite(self.interval[1])],
            "point_estimate": finite(self.point_estimate),
            "fpr": float(self.fpr),
            "fnr": float(self.fnr),
            "threshold": finite(self.threshold),
            "flipped": bool(self.flipped),
            "trials_per_world": int(self.trials_per_world),
            "confidence": float(self.confidence),
        }


def _best_cut(without: np.ndarray, with_: np.ndarray, delta: float, confidence: float) -> tuple[float, float]:
    """The threshold (attack: present when score > threshold) with the largest ε lower bound on these scores.

    Candidates are the sorted distinct scores of both lists (cut just above each); the threshold
    recorded is the midpoint to the next distinct score, which classifies these scores identically
    but leaves a margin on each side for the held-out scores.

    The criterion is the Clopper–Pearson *lower bound* (rates at their upper ends), not ε at the raw
    observed rates: the raw criterion is infinite for every threshold above all ``without`` scores
    (observed FPR 0), so it would always pick an extreme tail cut that few held-out scores cross.
    """
    candidates = np.unique(np.concatenate([without, with_]))
    n0, n1 = len(without), len(with_)
    # Present when score > cut: false positives are `without` scores above the cut, false negatives
    # `with` scores at or below it.
    false_pos = n0 - np.searchsorted(np.sort(without), candidates, side="right")
    false_neg = np.searchsorted(np.sort(with_), candidates, side="right")
    fpr_high = _clopper_pearson_upper(false_pos, n0, confidence)
    fnr_high = _clopper_pearson_upper(false_neg, n1, confidence)
    values = np.array([epsilon_from_rates(a, b, delta) for a, b in zip(fpr_high, fnr_high, strict=True)])
    best = int(np.argmax(values))  # the first (lowest) cut among ties
    following = candidates[best + 1] if best + 1 < len(candidates) else candidates[best] + 1.0
    return float((candidates[best] + following) / 2.0), float(values[best])


def _clopper_pearson_upper(successes: np.ndarray, trials: int, confidence: float) -> np.ndarray:
    """``clopper_pearson(k, trials, confidence)[1]`` for an array of k at once (the scan needs thousands)."""
    successes = np.asarray(successes)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore"):
        high = beta.ppf(1.0 - alpha / 2.0, successes + 1, np.maximum(trials - successes, 0))
    return np.where(successes >= trials, 1.0, np.clip(high, 0.0, 1.0))


def _as_scores(name: str, scores: Sequence[float]) -> np.ndarray:
    array = np.asarray(scores, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of scores, got shape {array.shape}")
    if len(array) < MIN_SCORES_PER_WORLD:
        raise ValueError(f"{name} needs at least {MIN_SCORES_PER_WORLD} scores, got {len(array)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite scores")
    return array


def audit_scores(
    scores_without: Sequence[float], scores_with: Sequence[float], delta: float, confidence: float = 0.95
) -> AuditResult:
    """Audit from attack scores: one per run on the dataset without the canary, one per run with it.

    The scores must come in random (run) order, and the same number per world (at least 10). The
    first half of each list chooses the threshold and the direction of the attack; the second half,
    untouched by that choice, gives the rates and their Clopper–Pearson bounds.
    """
    without = _as_scores("scores_without", scores_without)
    with_ = _as_scores("scores_with", scores_with)
    if len(without) != len(with_):
        raise ValueError(f"both worlds need the same number of scores, got {len(without)} and {len(with_)}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")

    # Why the split: the threshold that looks best on some scores is partly chosen for their noise, so
    # the rates measured on those same scores are optimistic and the bound would not hold at the stated
    # confidence. Rates counted on held-out scores are plain binomial counts for a fixed test, which is
    # what Clopper–Pearson assumes.
    half = len(without) // 2
    select_without, select_with = without[:half], with_[:half]
    held_without, held_with = without[half:], with_[half:]

    # The attack may work either way round (the canary may push the score down); negating the scores
    # turns "present when score < t" into "present when -score > -t", so one scan serves both.
    threshold, value = _best_cut(select_without, select_with, delta, confidence)
    flipped_threshold, flipped_value = _best_cut(-select_without, -select_with, delta, confidence)
    flipped = flipped_value > value
    if flipped:
        threshold = -flipped_threshold
        said_present_without, said_present_with = held_without < threshold, held_with < threshold
    else:
        said_present_without, said_present_with = held_without > threshold, held_with > threshold

    n0, n1 = len(held_without), len(held_with)
    false_pos = int(np.count_nonzero(said_present_without))
    false_neg = int(n1 - np.count_nonzero(said_present_with))
    fpr, fnr = false_pos / n0, false_neg / n1
    fpr_low, fpr_high = clopper_pearson(false_pos, n0, confidence)
    fnr_low, fnr_high = clopper_pearson(false_neg, n1, confidence)
    # Why the upper ends give a lower bound on ε: epsilon_from_rates only decreases as either rate
    # grows, so rates at least as large as the true ones can only understate ε. Each two-sided
    # interval's upper end falls below its true rate with probability at most (1 - confidence) / 2; by a
    # union bound both hold except with probability at most 1 - confidence, and then `lower` is at most
    # the ε implied by the true rates, which DP caps at the mechanism's true ε (for this δ).
    lower = epsilon_from_rates(fpr_high, fnr_high, delta)
    # The most optimistic ε the held-out counts allow: both rates at their lowest plausible values.
    upper = epsilon_from_rates(fpr_low, fnr_low, delta)
    return AuditResult(
        epsilon_lower_bound=lower,
        interval=(lower, upper),
        point_estimate=epsilon_from_rates(fpr, fnr, delta),
        fpr=fpr,
        fnr=fnr,
        threshold=threshold,
        trials_per_world=len(without),
        confidence=confidence,
        flipped=flipped,
    )


def audit_mechanism(run: Callable[[bool], float], trials: int, delta: float, confidence: float = 0.95) -> AuditResult:
    """Run the mechanism ``trials`` times per world and audit the attack's scores.

    ``run(False)`` runs it once on the neighbouring dataset without the canary row, ``run(True)`` with
    it; each returns the attack's score for that one output (larger: "more likely present", though a
    flipped attack is found too). Calls alternate between the worlds so that drift over time (warm-up,
    caches, a shared generator) falls on both alike.
    """
    if isinstance(trials, bool) or int(trials) != trials or trials < MIN_SCORES_PER_WORLD:
        raise ValueError(f"trials must be an integer of at least {MIN_SCORES_PER_WORLD}, got {trials!r}")
    scores_without: list[float] = []
    scores_with: list[float] = []
    for _ in range(int(trials)):
        scores_without.append(float(run(False)))
        scores_with.append(float(run(True)))
    return audit_scores(scores_without, scores_with, delta, confidence)
