"""Generator and discriminator for tables, sized for CPU training.

The generator ends in one head per column, matching the codec: ``tanh`` for a
numeric column (the codec scales numerics to [-1, 1]) and a Gumbel-softmax over
each categorical block, so the discriminator sees soft one-hot vectors while it
is trained and hard ones can be sampled afterwards.

The discriminator is a plain MLP: no BatchNorm (Opacus cannot account for it,
since it mixes rows), and its logits are squeezed to shape ``[N]`` because ghost
clipping silently computes wrong gradients for per-sample losses of shape
``[N, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedsynth.tabular.codec import TableCodec


@dataclass(frozen=True)
class GanShape:
    """Everything needed to rebuild the networks (stored in checkpoints)."""

    data_dim: int
    noise_dim: int = 32
    generator_hidden: int = 128
    discriminator_hidden: int = 64

    @classmethod
    def for_run(cls, config: Any, data_dim: int) -> GanShape:
        """Network sizes from a run configuration (anything with the size fields)."""
        return cls(
            data_dim=data_dim,
            noise_dim=config.noise_dim,
            generator_hidden=config.generator_hidden,
            discriminator_hidden=config.discriminator_hidden,
        )


class Generator(nn.Module):
    """Noise -> one encoded row, with per-column output heads."""

    def __init__(self, codec: TableCodec, noise_dim: int = 32, hidden: int = 128, tau: float = 0.5) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.tau = tau
        self._numeric = codec.numeric_positions
        self._blocks = [(b.start, b.stop) for b in codec.blocks]  # categories and (present, missing) blocks
        # A nullable column's value reads as 0 when its block says missing, as the codec encodes real rows.
        self._gates = [(s.start, s.value_stop, s.value_stop) for s in codec.spans if s.missing_block is not None]
        self.body = nn.Sequential(
            nn.Linear(noise_dim, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, codec.dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Encoded rows for training: tanh numerics, Gumbel-softmax category blocks."""
        raw = self.head(self.body(z))
        out = torch.empty_like(raw)
        if self._numeric:
            idx = torch.tensor(self._numeric, device=raw.device)
            out[:, idx] = torch.tanh(raw[:, idx])
        for start, stop in self._blocks:
            out[:, start:stop] = F.gumbel_softmax(raw[:, start:stop], tau=self.tau)
        return self._gate(out)

    def _gate(self, out: torch.Tensor) -> torch.Tensor:
        """Scale each nullable column's value by its 'present' output (0 for a missing cell)."""
        if not self._gates:
            return out
        scale = torch.ones_like(out)
        for start, stop, present in self._gates:
            scale[:, start:stop] = out[:, present : present + 1]
        return out * scale

    @property
    def category_blocks(self) -> list[tuple[int, int]]:
        """(start, stop) of each softmax block in the encoded row (``TableCodec.blocks``)."""
        return list(self._blocks)

    def sample(
        self, n: int, generator: torch.Generator | None = None, logit_bias: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Draw ``n`` encoded rows with one-hot categories, reproducibly from ``generator``.

        A hard Gumbel-softmax sample is a draw from softmax(logits), so categories are
        drawn with ``torch.multinomial``, which (unlike Gumbel noise) takes a seeded RNG.
        ``logit_bias`` (one vector per softmax block, ``TableCodec.blocks``) shifts category frequencies;
        calibration fits it to DP marginals.
        """
        with torch.no_grad():
            z = torch.randn(n, self.noise_dim, generator=generator)
            raw = self.head(self.body(z))
            out = torch.zeros_like(raw)
            if self._numeric:
                idx = torch.tensor(self._numeric, device=raw.device)
                out[:, idx] = torch.tanh(raw[:, idx])
            for j, (start, stop) in enumerate(self._blocks):
                logits = raw[:, start:stop]
                if logit_bias is not None:
                    logits = logits + logit_bias[j]
                probs = torch.softmax(logits, dim=1)
                picks = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                out[torch.arange(n), start + picks] = 1.0
            return self._gate(out)


class Discriminator(nn.Module):
    """Encoded row -> realness logit, shape [N]."""

    def __init__(self, data_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(data_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def build_gan(codec: TableCodec, shape: GanShape, seed: int | None = None) -> tuple[Generator, Discriminator]:
    """Fresh networks for ``codec``; the same seed gives the same initial weights everywhere."""
    if shape.data_dim != codec.dim:
        raise ValueError(f"model shape expects {shape.data_dim} inputs but the schema encodes {codec.dim}")
    if seed is not None:
        torch.manual_seed(seed)
    generator = Generator(codec, noise_dim=shape.noise_dim, hidden=shape.generator_hidden)
    discriminator = Discriminator(codec.dim, hidden=shape.discriminator_hidden)
    return generator, discriminator
