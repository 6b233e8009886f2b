"""One call that scores a synthetic table: fidelity, utility and privacy, as a JSON-safe dict.

Fidelity compares the synthetic table with the real holdout (rows the generator never
saw), as in the project's field notes, so copying training rows earns no fidelity.
Privacy compares it with the training rows. Utility, when a target is named, trains
on synthetic and on real training rows and tests both on the holdout. Each metric
cites its paper in its own module.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsynth.metrics.detection import detection
from fedsynth.metrics.disclosure import privacy
from fedsynth.metrics.evaluation_report import json_safe
from fedsynth.metrics.fidelity import column_shapes, pair_trends
from fedsynth.metrics.prdc import prdc
from fedsynth.metrics.utility import utility
from fedsynth.tabular.schema import Schema

PRDC_K = 5


def evaluate(
    real: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    target: str | None = None,
    seed: int = 0,
    max_rows: int = 2000,
) -> dict[str, Any]:
    """Score ``synthetic`` against the training rows ``real`` and the ``holdout``; no NaN (None instead)."""
    if target is not None:
        schema.column(target)  # fail early on an unknown column
    report = {
        "fidelity": {
            "reference": "holdout",
            "column_shapes": column_shapes(holdout, synthetic, schema),
            "pair_trends": pair_trends(holdout, synthetic, schema),
            "prdc": prdc(holdout, synthetic, schema, k=PRDC_K, max_rows=max_rows, seed=seed),
            "detection": detection(holdout, synthetic, schema, max_rows=max_rows, seed=seed),
        },
        "utility": utility(real, holdout, synthetic, schema, target, seed=seed) if target is not None else None,
        "privacy": privacy(real, holdout, synthetic, schema, max_rows=max_rows, seed=seed),
        "rows": {"real": len(real), "holdout": len(holdout), "synthetic": len(synthetic)},
        "settings": {"seed": seed, "max_rows": max_rows, "target": target},
    }
    return json_safe(report)
