"""Sampling a synthetic table from the global generator (post-processing: free)."""

from __future__ import annotations

import pandas as pd
import torch
from flwr.app import ArrayRecord

from fedsynth.marginals.calibration import calibrated_sample
from fedsynth.marginals.estimate import Marginals
from fedsynth.models.gan import GanShape, Generator, build_gan
from fedsynth.models.packing import unpack
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
        return calibrated_sample(generator, codec, marginals, rows, seed)
    rng = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, rows, _CHUNK):
        n = min(_CHUNK, rows - start)
        parts.append(codec.decode(generator.sample(n, generator=rng).numpy()))
    return pd.concat(parts, ignore_index=True), None
