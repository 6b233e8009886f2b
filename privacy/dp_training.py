"""DP-SGD for the discriminator, and generator steps that leave it untouched.

The discriminator is the only network that reads private rows, and it does so
only through Opacus: Poisson-sampled batches, per-row clipping, Gaussian noise,
and an accountant that counts every step. Fast gradient ("ghost") clipping keeps
the step close to the cost of a non-private one.

One discriminator step feeds the Poisson batch of real rows (any size, even
zero) together with a *fixed* number of generated rows. Every row, real or fake,
is clipped on its own, and the noised sum is divided by the public batch size.
Because the number of fakes does not depend on the real batch, adding or
removing one real row moves the sum by at most the clipping norm C, which is
what the accountant assumes. (Verified against a hand computation in the tests.)

The generator step goes through the discriminator with its per-sample hooks off
and its weights frozen, so it neither changes the discriminator nor leaves stale
state for the next private step. The generator never sees a real row: it is
post-processing of the DP discriminator.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from opacus.accountants import create_accountant
from opacus.accountants.accountant import IAccountant
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn
from torch.nn import functional as F

from fedsynth.privacy.budget import SiteBudget
from fedsynth.privacy.secret_noise import NoiseSource

# Benign and expected with ghost clipping: its first backward pass differentiates
# with respect to module outputs only.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


def sample_rate_for(public_rows: float, batch_size: int) -> float:
    """The Poisson sampling rate for an expected batch of ``batch_size`` rows: min(1, B / n_public).

    ``public_rows`` is the site's *public* row count (declared in its node config, or the DP estimate
    from its histogram release), never the private count: under add/remove-one-row, neighbouring
    datasets must run the same mechanism, so nothing that shapes it may depend on the exact count.
    """
    if not public_rows > 0:
        raise ValueError(f"public row count must be positive, got {public_rows}")
    return min(1.0, batch_size / public_rows)


class SecretNoiseOptimizer(DPOptimizerFastGradientClipping):
    """Opacus's ghost-clipping DP optimizer with its Gaussian noise drawn from a ``NoiseSource``.

    Opacus's own secure mode needs ``torchcsprng``, which has no build for this torch; this replaces
    only the draw (``add_noise``), with the same floating-point-safe sum of four Gaussians.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, noise: NoiseSource, **kwargs: object) -> None:
        super().__init__(optimizer, **kwargs)
        self.noise = noise

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            p.grad = (p.summed_grad + self.noise.gaussian_like(p.summed_grad, std)).view_as(p)
            _mark_as_processed(p.summed_grad)


@dataclass
class PrivateDiscriminator:
    """A discriminator wrapped for DP-SGD: ghost-clipping module, secret-noise optimizer, loss, accountant,
    and the site's rows, Poisson-sampled from the same secret source."""

    module: GradSampleModuleFastGradientClipping
    optimizer: SecretNoiseOptimizer
    criterion: DPLossFastGradientClipping
    accountant: IAccountant
    real: torch.Tensor
    sample_rate: float
    batch_size: int  # public: the fake batch size and the divisor of the noised sum
    noise: NoiseSource

    @property
    def expected_batch_size(self) -> int:
        return self.batch_size

    def real_batches(self) -> Iterator[torch.Tensor]:
        """Endless Poisson-sampled batches of real rows (a batch may have zero rows); which rows are
        drawn is as secret as the noise."""
        while True:
            yield self.real[torch.from_numpy(self.noise.poisson_mask(len(self.real), self.sample_rate))]

    def history(self) -> list[tuple[float, float, int]]:
        """The accountant's (noise, sample rate, steps) history after this round."""
        return [tuple(h) for h in copy.deepcopy(self.accountant.history)]


def make_private_discriminator(
    discriminator: nn.Module,
    real: torch.Tensor,
    budget: SiteBudget,
    batch_size: int,
    max_grad_norm: float,
    lr: float,
    noise: NoiseSource,
) -> PrivateDiscriminator:
    """Wrap a fresh discriminator for DP-SGD, continuing the site's accountant history.

    Assembled from Opacus's parts as ``PrivacyEngine.make_private(grad_sample_mode="ghost")`` does,
    with two differences: the noise and the Poisson sampling come from ``noise``, and the noised sum
    is divided by the public ``batch_size`` (Opacus would divide by int(n·q), a function of the
    private row count).
    """
    accountant = create_accountant(mechanism=budget.accountant)
    # deepcopy: the accountant appends to the list object itself.
    accountant.history = copy.deepcopy(budget.history)
    module = GradSampleModuleFastGradientClipping(
        discriminator, batch_first=True, loss_reduction="mean", max_grad_norm=max_grad_norm, use_ghost_clipping=True
    )
    module.forbid_grad_accumulation()  # Poisson sampling: every step is one accounted batch
    optimizer = SecretNoiseOptimizer(
        torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.9)),
        noise=noise,
        noise_multiplier=budget.noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=batch_size,
        loss_reduction="mean",
    )
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=budget.sample_rate))
    criterion = DPLossFastGradientClipping(module, optimizer, nn.BCEWithLogitsLoss(), loss_reduction="mean")
    return PrivateDiscriminator(module, optimizer, criterion, accountant, real, budget.sample_rate, batch_size, noise)


def discriminator_step(private: PrivateDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> float:
    """One DP-SGD step on real rows (label 1) and a fixed-size fake batch (label 0).

    Returns the loss on the fake rows only: it depends on the already-released
    discriminator and the generator, not on private rows, so it may be reported.
    The full loss includes real rows and is not differentially private.
    """
    rows = torch.cat([real, fake])
    labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    private.optimizer.zero_grad()
    logits = private.module(rows)
    with torch.no_grad():
        fake_loss = F.binary_cross_entropy_with_logits(logits[len(real) :], labels[len(real) :])
    loss = private.criterion(logits, labels)
    loss.backward()
    private.optimizer.step()  # noise, division by the expected batch size, accountant step
    return float(fake_loss.item())


def generator_step(
    generator: nn.Module,
    optimizer: torch.optim.Optimizer,
    private: PrivateDiscriminator,
    batch_size: int,
    noise_dim: int,
) -> float:
    """One non-saturating generator step through the frozen, hook-free discriminator."""
    d_params = [p for p in private.module.parameters() if p.requires_grad]
    private.module.disable_hooks()
    for p in d_params:
        p.requires_grad_(False)
    try:
        logits = private.module(generator(torch.randn(batch_size, noise_dim)))
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones(batch_size))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    finally:
        for p in d_params:
            p.requires_grad_(True)
        private.module.enable_hooks()
    return float(loss.item())


def fake_batch(generator: nn.Module, size: int, noise_dim: int) -> torch.Tensor:
    """Generated rows for a discriminator step, detached from the generator."""
    with torch.no_grad():
        return generator(torch.randn(size, noise_dim))
