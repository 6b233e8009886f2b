"""One site's local work in a round: DP discriminator steps and generator steps.

Kept free of Flower so it can be tested and benchmarked on its own; the
ClientApp only unpacks the global model, calls ``train_round`` and packs the
result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedsynth.core.config import RunConfig
from fedsynth.models.gan import Discriminator, Generator
from fedsynth.privacy.budget import SiteBudget
from fedsynth.privacy.dp_training import discriminator_step, fake_batch, generator_step, make_private_discriminator
from fedsynth.privacy.secret_noise import NoiseSource


@dataclass
class RoundOutcome:
    """What a site did this round; ``budget`` holds its cumulative spending."""

    trained_steps: int
    loss_discriminator_fake: float
    loss_generator: float
    budget: SiteBudget

    @property
    def budget_exhausted(self) -> bool:
        return self.budget.exhausted


def train_round(
    generator: Generator,
    discriminator: Discriminator,
    real: torch.Tensor,
    budget: SiteBudget,
    config: RunConfig,
    noise: NoiseSource,
    lr_scale: float = 1.0,
) -> RoundOutcome:
    """Up to ``config.local_steps`` DP steps, never more than the budget allows.

    ``noise`` draws the DP-SGD noise and the Poisson batches (secret unless the run asked for
    reproducible noise); ``lr_scale`` lowers both learning rates after the validator rolled the model back.
    """
    steps = budget.steps_allowed(config.local_steps)
    if steps == 0:
        return RoundOutcome(0, math.nan, math.nan, budget)
    private = make_private_discriminator(
        discriminator, real, budget, config.batch_size, config.max_grad_norm, config.lr_discriminator * lr_scale, noise
    )
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr_generator * lr_scale, betas=(0.5, 0.9))
    batches = private.real_batches()
    fake_size = private.expected_batch_size
    d_losses: list[float] = []
    g_losses: list[float] = []
    for step in range(steps):
        fake = fake_batch(generator, fake_size, config.noise_dim)
        d_losses.append(discriminator_step(private, next(batches), fake))
        if (step + 1) % config.d_steps == 0:
            g_losses.append(generator_step(generator, g_optimizer, private, fake_size, config.noise_dim))
    spent_before = budget.steps
    budget.history = private.history()
    if budget.steps != spent_before + steps:  # the accountant must have counted every step
        raise RuntimeError(f"accountant counted {budget.steps - spent_before} steps, expected {steps}")
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else math.nan  # noqa: E731
    return RoundOutcome(steps, mean(d_losses), mean(g_losses), budget)
