"""Sampling a synthetic table from the global generator (post-processing: free)."""

from __future__ import annotations

import pandas as pd
import torch
from flwr.app import ArrayRecord

from models.gan import GanShape, build_gan
from models.packing import unpack
from tabular.codec import TableCodec
from tabular.schema import Schema

_CHUNK = 50_000


def sample_table(record: ArrayRecord, schema: Schema, shape: GanShape, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` synthetic rows in the schema's columns and domain."""
    codec = TableCodec(schema)
    generator, discriminator = build_gan(codec, shape)
    unpack(record, generator, discriminator)
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, rows, _CHUNK):
        n = min(_CHUNK, rows - start)
        parts.append(codec.decode(generator.sample(n, generator=rng).numpy()))
    if not parts:
        return pd.DataFrame({name: [] for name in schema.names})
    return pd.concat(parts, ignore_index=True)
