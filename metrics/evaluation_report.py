"""Evaluation reports: JSON-safe values, atomic writing and a short readable summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts: NumPy scalars unwrapped, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as JSON atomically: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines for a report made by ``metrics.evaluate.evaluate``."""
    rows, fidelity, privacy = report["rows"], report["fidelity"], report["privacy"]
    prdc, detection = fidelity["prdc"], fidelity["detection"]
    lines = [
        f"Rows: real {rows['real']}, holdout {rows['holdout']}, synthetic {rows['synthetic']}",
        f"Fidelity (against the {fidelity['reference']}, 1 = identical):",
        f"  column shapes {_num(fidelity['column_shapes']['score'])}, "
        f"pair trends {_num(fidelity['pair_trends']['score'])}",
        f"  precision {_num(prdc['precision'])}, recall {_num(prdc['recall'])}, "
        f"density {_num(prdc['density'])}, coverage {_num(prdc['coverage'])} (k={prdc['k']})",
        f"  detection AUC {_num(detection['auc'])} (0.5 = indistinguishable; score {_num(detection['score'])})",
    ]
    utility = report.get("utility")
    if utility:
        lines.append(f"Utility (predicting '{utility['target']}', tested on the real holdout):")
        keys = ("r2",) if utility["task"] == "regression" else ("accuracy", "macro_f1", "roc_auc")
        for key in keys:
            lines.append(f"  {key}: TSTR {_num(utility['tstr'][key])}, TRTR {_num(utility['trtr'][key])}")
        if utility["tstr"].get("single_class") is not None:
            lines.append(f"  note: the synthetic target has the single class '{utility['tstr']['single_class']}'")
    lines += [
        "Privacy (towards the training rows):",
        f"  exact matches {_pct(privacy['exact_match_rate'])} of synthetic rows "
        f"(holdout baseline {_pct(privacy['exact_match_rate_holdout'])})",
        f"  distance to closest record: median {_num(privacy['dcr_train']['median'])} to train, "
        f"{_num(privacy['dcr_holdout']['median'])} to holdout; closer to train {_pct(privacy['closer_to_train_share'])}"
        " (50% = no overfitting)",
        f"  NNDR median {_num(privacy['nndr_median'])}, membership inference AUC {_num(privacy['mia_auc'])}"
        " (0.5 = no leak)",
    ]
    return lines
