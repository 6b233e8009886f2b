"""Sampling a synthetic table from the global generator (post-processing: free)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from flwr.app import ArrayRecord

from fedsynth.core.errors import CheckpointError
from fedsynth.marginals.calibration import calibrated_sample
from fedsynth.marginals.estimate import Marginals
from fedsynth.models.gan import GanShape, Generator, build_gan
from fedsynth.models.packing import unpack
from fedsynth.server.checkpoints import calibration_of, load_checkpoint, release_of
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema

_CHUNK = 50_000


def load_generator(record: ArrayRecord, schema: Schema, shape: GanShape) -> tuple[Generator, TableCodec]:
    codec = TableCodec(schema)
    generator, discriminator = build_gan(codec, shape)
    unpack(record, generator, discriminator)
    generator.eval()
    return generator, codec


def sample_table(
    record: ArrayRecord,
    schema: Schema,
    shape: GanShape,
    rows: int,
    seed: int = 0,
    marginals: Marginals | None = None,
) -> pd.DataFrame:
    """``rows`` synthetic rows in the schema's columns and domain; calibrated when ``marginals`` are given."""
    return sample_release(record, schema, shape, rows, seed, marginals)[0]


def sample_release(
    record: ArrayRecord,
    schema: Schema,
    shape: GanShape,
    rows: int,
    seed: int = 0,
    marginals: Marginals | None = None,
) -> tuple[pd.DataFrame, dict[str, object] | None]:
    """``sample_table``, with what raking did when it raked (None otherwise), for the run's report."""
    generator, codec = load_generator(record, schema, shape)
    if rows == 0:
        return pd.DataFrame({name: [] for name in schema.names}), None
    if marginals is not None:
        table, raking = calibrated_sample(generator, codec, marginals, rows, seed)
        return round_to_schema(table, schema), raking
    rng = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, rows, _CHUNK):
        n = min(_CHUNK, rows - start)
        parts.append(codec.decode(generator.sample(n, generator=rng).numpy()))
    return round_to_schema(pd.concat(parts, ignore_index=True), schema), None


def round_to_schema(table: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Continuous columns rounded to the digits their schema ``decimals`` asks for (others as they are),
    kept inside the bounds: a bound with more digits rounds inwards."""
    for col in schema.columns:
        if col.decimals is not None and col.name in table.columns:
            scale = 10.0**col.decimals
            low, high = math.ceil(col.min * scale) / scale, math.floor(col.max * scale) / scale
            table[col.name] = table[col.name].astype(float).round(col.decimals).clip(low, high)
    return table


@dataclass(frozen=True)
class ReleasedSample:
    """Rows sampled from a run's released model, in the form its policy allows."""

    table: pd.DataFrame
    checkpoint_round: int
    policy_name: str | None  # None: the run had no policy file (the default one applies)
    columns_dropped: list[str]


def sample_released_model(checkpoint: str | Path, rows: int, seed: int = 0) -> ReleasedSample:
    """``rows`` more rows from a finished run's ``final.pt``, only if its release was approved.

    The policy the run released under is applied as it was to the released table: forbidden columns and
    values left out, small cells suppressed. Sampling is post-processing of the DP-trained model: free.
    A round checkpoint (no release decision) or a withheld release is a one-line ``CheckpointError``.
    """
    from fedsynth.server.oversight import DEFAULT_POLICY
    from fedsynth.sovereignty.policy import parse_policy
    from fedsynth.sovereignty.release_gate import prepare_release
    from fedsynth.tabular.schema import load_yaml

    payload = load_checkpoint(checkpoint)
    release = release_of(payload)
    if release is None:
        raise CheckpointError(
            f"{checkpoint}: carries no release decision; generate samples only from a finished run's "
            "checkpoints/final.pt whose release was approved"
        )
    if not release["approved"]:
        raise CheckpointError(
            f"{checkpoint}: the run's release was withheld ({'; '.join(release['reasons']) or 'see report.md'}); "
            "sampling more rows from it would bypass that decision"
        )
    text = str(release.get("policy") or "")
    policy = parse_policy(load_yaml(text), source=f"{checkpoint}:policy") if text else DEFAULT_POLICY
    table = sample_table(
        payload["record"], payload["schema"], payload["shape"], rows, seed=seed, marginals=calibration_of(payload)
    )
    table, figures = prepare_release(table, policy, payload["schema"])
    return ReleasedSample(table, int(payload["round"]), policy.name if text else None, figures["columns_dropped"])
