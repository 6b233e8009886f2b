"""Global-model checkpoints: written atomically, verified on load.

A checkpoint holds everything needed to sample again without the run: the
packed G+D weights, the network sizes and the public schema. Sampling more rows
from a checkpoint costs no privacy (it is post-processing of DP outputs).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedsynth.core.errors import CheckpointError
from fedsynth.marginals.estimate import Marginals
from fedsynth.models.gan import GanShape
from fedsynth.models.packing import split
from fedsynth.tabular.schema import Schema, parse_schema

FORMAT = "fedsynth-checkpoint/1"


def _digest(arrays: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(arrays[key].contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, record: ArrayRecord, schema: Schema, shape: GanShape, server_round: int, extra: dict | None = None
) -> None:
    """Write a checkpoint via a temporary file and rename: never half-written."""
    path = Path(path)
    arrays = {key: torch.from_numpy(array.numpy().copy()) for key, array in record.items()}
    payload = {
        "format": FORMAT,
        "round": server_round,
        "schema": schema.to_dict(),
        "shape": asdict(shape),
        "arrays": arrays,
        "sha256": _digest(arrays),
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint; anything wrong is a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fedsynth checkpoint (field 'format')")
    for key in ("round", "schema", "shape", "arrays", "sha256"):
        if key not in payload:
            raise CheckpointError(f"{path}: field '{key}' is missing")
    if _digest(payload["arrays"]) != payload["sha256"]:
        raise CheckpointError(f"{path}: field 'arrays' does not match its sha256 (corrupt checkpoint)")
    try:
        payload["schema"] = parse_schema(payload["schema"], source=f"{path}:schema")
        payload["shape"] = GanShape(**payload["shape"])
        payload["record"] = ArrayRecord({k: v for k, v in payload["arrays"].items()})
        split(payload["record"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: field 'shape' or 'arrays' is invalid ({exc})") from None
    return payload


def checkpoint_calibration(marginals: Marginals, bins: int) -> dict:
    """The DP marginals a checkpoint carries so that ``fedsynth generate`` calibrates the same way."""
    return {"marginals": marginals.to_state(), "bins": bins}


def checkpoint_release(approved: bool, reasons: list[str], policy_yaml: str) -> dict:
    """The release decision a run's final checkpoint carries: ``fedsynth generate`` samples only from an
    approved model, and applies the same policy (forbidden columns and values, small cells) to what it writes."""
    return {"approved": bool(approved), "reasons": list(reasons), "policy": policy_yaml}


def release_of(payload: dict) -> dict | None:
    """The release decision stored in a loaded checkpoint, or ``None`` (a round checkpoint has none)."""
    entry = payload.get("extra", {}).get("release")
    return dict(entry) if entry else None


def calibration_of(payload: dict) -> Marginals | None:
    """The ``Marginals`` stored in a loaded checkpoint, or ``None``."""
    entry = payload.get("extra", {}).get("calibration")
    if not entry:
        return None
    return Marginals.from_state(payload["schema"], entry["marginals"], int(entry["bins"]))
