"""One record for both networks.

Flower's strategies expect exactly one ``ArrayRecord`` per reply, so the
generator's and the discriminator's weights travel together under the key
prefixes ``G.`` and ``D.``. Unpacking checks keys and shapes so that a malformed
update is a clear error rather than a silently broken model.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import nn

GENERATOR_PREFIX = "G."
DISCRIMINATOR_PREFIX = "D."


class UpdateShapeError(ValueError):
    """An update's keys or shapes do not match the model."""


TRANSFER_DTYPES = {"float32": np.float32, "float16": np.float16}


def pack(generator: nn.Module, discriminator: nn.Module, dtype: str = "float32") -> ArrayRecord:
    """Both networks' weights as one ``ArrayRecord`` with ``G.``/``D.`` prefixes, sent as ``dtype``."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for prefix, module in ((GENERATOR_PREFIX, generator), (DISCRIMINATOR_PREFIX, discriminator)):
        for key, tensor in module.state_dict().items():
            state[prefix + key] = tensor.detach().cpu()
    return cast_record(ArrayRecord(state), dtype)


def cast_record(record: ArrayRecord, dtype: str) -> ArrayRecord:
    """The same arrays in another float type (float16 halves what travels; the server averages in float32)."""
    target = TRANSFER_DTYPES[dtype]
    if all(array.numpy().dtype == target for array in record.values()):
        return record
    return ArrayRecord({key: Array(array.numpy().astype(target)) for key, array in record.items()})


def split(record: ArrayRecord) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The generator's and the discriminator's arrays, prefixes removed."""
    gen: dict[str, np.ndarray] = {}
    disc: dict[str, np.ndarray] = {}
    for key, array in record.items():
        if key.startswith(GENERATOR_PREFIX):
            gen[key[len(GENERATOR_PREFIX) :]] = array.numpy()
        elif key.startswith(DISCRIMINATOR_PREFIX):
            disc[key[len(DISCRIMINATOR_PREFIX) :]] = array.numpy()
        else:
            raise UpdateShapeError(f"unexpected key '{key}' (expected G.* or D.*)")
    return gen, disc


def _load(module: nn.Module, arrays: dict[str, np.ndarray], name: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise UpdateShapeError(f"{name}: missing keys {missing[:3]}, unexpected keys {extra[:3]}")
    state = OrderedDict()
    for key, ref in expected.items():
        value = arrays[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise UpdateShapeError(f"{name}.{key}: shape {tuple(value.shape)} != expected {tuple(ref.shape)}")
        state[key] = torch.as_tensor(np.array(value, copy=True), dtype=ref.dtype)
    module.load_state_dict(state)


def unpack(record: ArrayRecord, generator: nn.Module, discriminator: nn.Module) -> None:
    """Load a packed record into both networks, checking every key and shape."""
    gen, disc = split(record)
    _load(generator, gen, "generator")
    _load(discriminator, disc, "discriminator")
