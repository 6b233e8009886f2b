"""Mode-collapse monitoring on the pooled synthetic output (no real data needed).

Each round the server samples the global generator and measures the sample
against the public schema only:

- per categorical (and boolean) column: ``coverage``, the share of the schema's
  categories that appear at least once, and ``entropy``, Shannon entropy of the
  category frequencies divided by log(number of declared categories) (0: one
  category, 1: all equally frequent);
- ``duplicate_share``: share of rows that repeat an earlier row (1 - distinct/n).
  A table whose columns are all discrete has only so many possible rows, so
  ``duplicate_share_adjusted`` = 1 - distinct / min(n, possible rows) is what the
  rule uses: 0 when rows are as varied as the domain allows;
- per numeric column: ``spread``, standard deviation divided by the width of the
  schema bounds, measured on the codec's scale (a ``transform: log`` column on its
  log scale), and ``distinct_share``, distinct values / n;
- ``clusters``: the number of distinct cells of a fixed grid: every numeric column
  cut into 10 equal bins over its schema bounds (codec scale), every discrete
  column by category. Depends on the sample size: compare rounds sampled with the
  same number of rows.

``CollapseRule`` turns a health record (and the earlier rounds) into reasons,
``health_score`` into one scalar for keeping the best checkpoint, and
``ValidatorHistory`` decides per round what the server does: record, stop, or roll
back to the last healthy round with a lower learning rate.

These signals detect *collapse*, not fidelity: an untrained generator that
spreads noise over the whole domain looks healthy. Fidelity needs real rows and
so must come from the sites (``client.site_checks.noisy_feedback``, under DP).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.core.errors import ConfigError
from fedsynth.metrics.subsample import subsample
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema

GRID_BINS = 10  # bins per numeric column for the cluster count
SPREAD_SATURATION = 0.05  # a numeric column this spread counts as fully spread in the health score
ACTIONS = ("record", "stop", "rollback")
TREND_METRICS = ("score", "coverage_min", "entropy_min", "duplicate_share", "spread_min", "clusters")


# ---------------------------------------------------------------------------------------------------------------------
# Health of one sample
# ---------------------------------------------------------------------------------------------------------------------
def _entropy(counts: np.ndarray, declared: int) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return max(0.0, float(-(p * np.log(p)).sum() / math.log(declared)))  # never -0.0


def _categorical_health(series: pd.Series, categories: tuple[str, ...]) -> dict[str, Any]:
    counts = series.astype(str).value_counts()
    per_category = np.array([int(counts.get(c, 0)) for c in categories], dtype=float)
    present = int((per_category > 0).sum())
    return {
        "coverage": present / len(categories),
        "present": present,
        "declared": len(categories),
        "missing": [c for c, n in zip(categories, per_category, strict=True) if n == 0],
        "entropy": _entropy(per_category, len(categories)),
    }


def _domain_rows(schema: Schema) -> int | None:
    """How many different rows the schema allows; None when a continuous column makes it unbounded."""
    total = 1
    for col in schema.columns:
        if col.type == "continuous":
            return None
        total *= int(col.max - col.min) + 1 if col.type == "integer" else len(col.categories)
    return total


def synthetic_health(table: pd.DataFrame, schema: Schema, seed: int = 0, max_rows: int | None = None) -> dict[str, Any]:
    """Collapse metrics of a synthetic sample; reads nothing but the sample and the public schema.

    ``max_rows``: measure a seeded subsample of at most this many rows (``seed`` picks it);
    None measures every row. Values are plain Python numbers (JSON-ready).
    """
    frame = table[schema.names] if max_rows is None else subsample(table[schema.names], max_rows, seed)
    n = len(frame)
    numeric_cols = [c for c in schema.columns if c.is_numeric]
    discrete_cols = [c for c in schema.columns if not c.is_numeric]

    categorical = {c.name: _categorical_health(frame[c.name], c.categories) for c in discrete_cols}
    numeric: dict[str, dict[str, float]] = {}
    grid = pd.DataFrame(index=frame.index)
    if numeric_cols:
        # The codec's own scaling ([-1, 1] over the schema bounds, log scale where declared).
        sub_schema = Schema(columns=tuple(numeric_cols), source=schema.source)
        scaled = TableCodec(sub_schema).encode(frame[[c.name for c in numeric_cols]]).astype(np.float64)
        for i, col in enumerate(numeric_cols):
            unit = (scaled[:, i] + 1.0) / 2.0  # 0..1 over the bounds
            present = unit[frame[col.name].notna().to_numpy()]  # a missing cell has no spread to judge
            numeric[col.name] = {
                "spread": float(present.std()) if len(present) else 0.0,
                "distinct_share": float(frame[col.name].nunique() / n) if n else 0.0,
            }
            grid[col.name] = np.minimum(np.floor(unit * GRID_BINS), GRID_BINS - 1).astype(np.int64)
    for col in discrete_cols:
        grid[col.name] = frame[col.name].astype(str)

    distinct = len(frame.drop_duplicates()) if n else 0
    domain = _domain_rows(schema)
    room = n if domain is None else min(n, domain)
    coverages = [c["coverage"] for c in categorical.values()]
    entropies = [c["entropy"] for c in categorical.values()]
    spreads = [c["spread"] for c in numeric.values()]
    return {
        "rows": n,
        "categorical": categorical,
        "numeric": numeric,
        "duplicate_share": 1.0 - distinct / n if n else 0.0,
        "duplicate_share_adjusted": 1.0 - distinct / room if room else 0.0,
        "domain_rows": domain,
        "clusters": len(grid.drop_duplicates()) if n else 0,
        "coverage_min": min(coverages) if coverages else None,
        "coverage_mean": float(np.mean(coverages)) if coverages else None,
        "entropy_min": min(entropies) if entropies else None,
        "spread_min": min(spreads) if spreads else None,
    }


def health_score(health: Mapping[str, Any]) -> float:
    """One privacy-safe scalar in [0, 1] (1: no sign of collapse), from the synthetic sample only.

    The mean of: mean category coverage; 1 - adjusted duplicate share; mean over numeric
    columns of min(1, spread / 0.05). Each part saturates once the sample shows no collapse,
    so an untrained, noise-spreading generator does not outscore a trained one; ties are
    broken by the later round (see ``best_record``). Parts without columns are left out.
    """
    parts = [1.0 - float(health["duplicate_share_adjusted"])]
    if health["categorical"]:
        parts.append(float(np.mean([c["coverage"] for c in health["categorical"].values()])))
    if health["numeric"]:
        parts.append(float(np.mean([min(1.0, c["spread"] / SPREAD_SATURATION) for c in health["numeric"].values()])))
    return float(np.mean(parts))


def best_record(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The healthy record with the highest health score, the latest round on ties (None if none is healthy)."""
    healthy = [r for r in records if r.get("healthy", True)]
    if not healthy:
        return None

    def key(record: Mapping[str, Any]) -> tuple[float, int]:
        score = record["score"] if "score" in record else health_score(record["health"])
        return round(score, 9), int(record["round"])

    return max(healthy, key=key)


# ---------------------------------------------------------------------------------------------------------------------
# The collapse rule
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollapseRule:
    """When a round's sample counts as collapsed. A round is flagged if any of these holds.

    - ``min_category_coverage`` (0.5): a categorical column shows fewer than this share of its
      declared categories (a yes/no column producing one value has coverage 0.5: not flagged
      by this test alone, but by the entropy test).
    - ``min_entropy`` (0.05): a categorical column's normalised entropy is below this (one
      category in nearly every row). Set it below the real data's known skew.
    - ``max_vanished_categories`` (1): more than this many categories that the reference round
      (the best earlier healthy round) produced are now missing, over all columns. One rare
      category may flicker between samples; two or more vanishing is mode dropping.
    - ``max_duplicate_share`` (0.5): the adjusted duplicate share is above this.
    - ``min_numeric_spread`` (0.01): a numeric column's spread is below this (nearly one point).
    - ``max_cluster_drop`` (0.5): the cluster count fell by more than this share of the
      reference round's count.
    """

    min_category_coverage: float = 0.5
    min_entropy: float = 0.05
    max_vanished_categories: int = 1
    max_duplicate_share: float = 0.5
    min_numeric_spread: float = 0.01
    max_cluster_drop: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_vanished_categories":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"collapse rule: '{f.name}' must be a whole number >= 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"collapse rule: '{f.name}' must be a number in [0, 1], got {value!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> CollapseRule:
        """Build from config keys, spelled ``min-category-coverage`` or ``min_category_coverage``."""
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in mapping.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"collapse rule: unknown key '{key}' (known: {', '.join(sorted(known))})")
            values[name] = value
        return cls(**values)

    def check(self, health: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> list[str]:
        """Why this sample counts as collapsed; an empty list means healthy.

        ``history``: earlier rounds as records ``{"round": int, "health": dict, "healthy": bool}``
        (``ValidatorHistory.records``); the reference round is ``best_record(history)``.
        """
        reasons = []
        if health["rows"] == 0:
            return ["the sample has no rows"]
        for name, col in health["categorical"].items():
            if col["coverage"] < self.min_category_coverage:
                reasons.append(
                    f"column '{name}': {col['present']} of {col['declared']} categories produced "
                    f"(coverage {col['coverage']:.2f} < {self.min_category_coverage:.2f})"
                )
            if col["entropy"] < self.min_entropy:
                reasons.append(f"column '{name}': entropy {col['entropy']:.3f} < {self.min_entropy:.3f}")
        if health["duplicate_share_adjusted"] > self.max_duplicate_share:
            reasons.append(
                f"duplicate rows: {health['duplicate_share_adjusted']:.2f} of the sample "
                f"(> {self.max_duplicate_share:.2f})"
            )
        for name, col in health["numeric"].items():
            if col["spread"] < self.min_numeric_spread:
                reasons.append(f"column '{name}': spread {col['spread']:.4f} < {self.min_numeric_spread:.4f}")
        reference = best_record(history)
        if reference is not None:
            reasons.extend(self._against(health, reference))
        return reasons

    def _against(self, health: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
        """Reasons that compare this sample with the reference round."""
        reasons = []
        ref_round, ref = reference["round"], reference["health"]
        vanished = []
        for name, col in health["categorical"].items():
            before = ref["categorical"].get(name)
            if before is not None:
                gone = sorted(set(col["missing"]) - set(before["missing"]))
                vanished.extend(f"{name}={c}" for c in gone)
        if len(vanished) > self.max_vanished_categories:
            reasons.append(f"categories vanished since round {ref_round}: {', '.join(vanished)}")
        floor = (1.0 - self.max_cluster_drop) * ref["clusters"]
        if health["clusters"] < floor:
            reasons.append(
                f"clusters fell to {health['clusters']} from {ref['clusters']} in round {ref_round} "
                f"(more than {self.max_cluster_drop:.0%} drop)"
            )
        return reasons


# ---------------------------------------------------------------------------------------------------------------------
# Per-round history and the action
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What the server should do after one round.

    ``action``: ``continue`` (healthy), ``record`` (collapse recorded, carry on: either the
    configured action is ``record`` or fewer than ``patience`` collapsed rounds in a row),
    ``stop`` (end training now and keep ``best_round``'s checkpoint) or ``rollback`` (restore
    round ``rollback_to``'s global model, 0 meaning the initial weights, and train on with the
    learning rates multiplied by ``lr_scale``). ``lr_scale`` is cumulative over all rollbacks.
    """

    round: int
    healthy: bool
    reasons: list[str]
    action: str
    rollback_to: int | None
    lr_scale: float
    best_round: int | None


@dataclass
class ValidatorHistory:
    """Per-round health records, trends, the best checkpoint and the action on collapse.

    ``action``: ``record`` | ``stop`` | ``rollback`` (what to do once ``patience`` rounds in a
    row are collapsed). ``lr_factor``: learning-rate multiplier per rollback. After
    ``max_rollbacks`` rollbacks a further collapse stops the run instead. A rollback does not
    refund privacy: the sites' accountants keep what the abandoned rounds spent.
    """

    rule: CollapseRule = field(default_factory=CollapseRule)
    action: str = "record"
    lr_factor: float = 0.5
    patience: int = 1
    max_rollbacks: int = 3
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"validator: 'action' must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if isinstance(self.lr_factor, bool) or not 0.0 < self.lr_factor <= 1.0:
            raise ConfigError(f"validator: 'lr_factor' must be in (0, 1], got {self.lr_factor!r}")
        for name in ("patience", "max_rollbacks"):
            value = getattr(self, name)
            minimum = 1 if name == "patience" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"validator: '{name}' must be a whole number >= {minimum}, got {value!r}")

    # State ------------------------------------------------------------------------------------------------------------
    @property
    def rollbacks(self) -> int:
        return sum(1 for r in self.records if r["action"] == "rollback")

    @property
    def lr_scale(self) -> float:
        return self.lr_factor**self.rollbacks

    @property
    def best_round(self) -> int | None:
        """The round whose checkpoint to keep: highest health score among healthy rounds, latest on ties."""
        best = best_record(self.records)
        return None if best is None else int(best["round"])

    @property
    def last_healthy_round(self) -> int | None:
        healthy = [r["round"] for r in self.records if r["healthy"]]
        return max(healthy) if healthy else None

    @property
    def stopped_at(self) -> int | None:
        return next((r["round"] for r in self.records if r["action"] == "stop"), None)

    def _unhealthy_streak(self) -> int:
        """Collapsed rounds in a row at the end of the history, counted since the last rollback."""
        streak = 0
        for record in reversed(self.records):
            if record["healthy"] or record["action"] == "rollback":
                break
            streak += 1
        return streak

    # One round --------------------------------------------------------------------------------------------------------
    def observe(self, server_round: int, health: Mapping[str, Any]) -> Verdict:
        """Check one round's health against the rule and the history, record it, and say what to do."""
        reasons = self.rule.check(health, self.records)
        healthy = not reasons
        action, rollback_to = "continue", None
        if not healthy:
            action = "record"
            if self._unhealthy_streak() + 1 >= self.patience and self.action != "record":
                action = self.action
                if action == "rollback" and self.rollbacks >= self.max_rollbacks:
                    action = "stop"
                    reasons = [*reasons, f"stopping: {self.max_rollbacks} rollback(s) already made (max_rollbacks)"]
                if action == "rollback":
                    rollback_to = self.last_healthy_round or 0
        scale = self.lr_scale * (self.lr_factor if action == "rollback" else 1.0)
        self.records.append(
            {
                "round": int(server_round),
                "healthy": healthy,
                "reasons": reasons,
                "action": action,
                "rollback_to": rollback_to,
                "lr_scale": scale,
                "score": health_score(health),
                "health": dict(health),
            }
        )
        return Verdict(int(server_round), healthy, reasons, action, rollback_to, scale, self.best_round)

    # Trends and the report --------------------------------------------------------------------------------------------
    def series(self, metric: str) -> list[float | None]:
        """One metric per recorded round (``score`` or a top-level key of the health record)."""
        return [r["score"] if metric == "score" else r["health"].get(metric) for r in self.records]

    def trends(self, window: int = 3) -> dict[str, dict[str, Any]]:
        """Per metric: the values per round and the least-squares slope per round over the last ``window``."""
        out = {}
        rounds = [r["round"] for r in self.records]
        for metric in TREND_METRICS:
            values = self.series(metric)
            pairs = [(x, y) for x, y in zip(rounds, values, strict=True) if y is not None][-window:]
            slope = None
            if len(pairs) >= 2:
                xs, ys = np.array(pairs, dtype=float).T
                slope = float(np.polyfit(xs, ys, 1)[0]) if np.ptp(xs) > 0 else None
            out[metric] = {"values": values, "slope": slope}
        return out

    def to_dict(self) -> dict[str, Any]:
        """``report.json``'s ``validator`` section; also the state to save for ``--resume``."""
        last = self.records[-1] if self.records else None
        collapsed = [r["round"] for r in self.records if not r["healthy"]]
        if last is None:
            verdict = "not-run"
        elif self.stopped_at is not None:
            verdict = "stopped"
        else:
            verdict = "healthy" if last["healthy"] else "collapsed"
        return {
            "config": {
                "rule": asdict(self.rule),
                "action": self.action,
                "lr_factor": self.lr_factor,
                "patience": self.patience,
                "max_rollbacks": self.max_rollbacks,
            },
            "rounds": self.records,
            "trends": self.trends(),
            "final": {
                "verdict": verdict,
                "last_round": None if last is None else last["round"],
                "reasons": [] if last is None else last["reasons"],
                "best_round": self.best_round,
                "collapsed_rounds": collapsed,
                "rollbacks": [
                    {"round": r["round"], "to": r["rollback_to"], "lr_scale": r["lr_scale"]}
                    for r in self.records
                    if r["action"] == "rollback"
                ],
                "stopped_at": self.stopped_at,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidatorHistory:
        """Rebuild from ``to_dict()`` (a resumed run carries on with the same records)."""
        config = data["config"]
        return cls(
            rule=CollapseRule(**config["rule"]),
            action=config["action"],
            lr_factor=config["lr_factor"],
            patience=config["patience"],
            max_rollbacks=config["max_rollbacks"],
            records=[dict(r) for r in data["rounds"]],
        )
