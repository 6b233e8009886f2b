"""DP-SGD for the discriminator, and generator steps that leave it untouched.

The discriminator is the only network that reads private rows, and it does so
only through Opacus: Poisson-sampled batches, per-row clipping, Gaussian noise,
and an accountant that counts every step. Fast gradient ("ghost") clipping keeps
the step close to the cost of a non-private one.

One discriminator step feeds the Poisson batch of real rows (any size, even
zero) together with a *fixed* number of generated rows. Every row, real or fake,
is clipped on its own, and Opacus divides the noised sum by its expected batch
size. Because the number of fakes does not depend on the real batch, adding or
removing one real row moves the sum by at most the clipping norm C, which is
what the accountant assumes. (Verified against a hand computation in the tests.)

The generator step goes through the discriminator with its per-sample hooks off
and its weights frozen, so it neither changes the discriminator nor leaves stale
state for the next private step. The generator never sees a real row: it is
post-processing of the DP discriminator.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from privacy.budget import SiteBudget

# Benign and expected with ghost clipping: its first backward pass differentiates
# with respect to module outputs only.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
# Noise is drawn from torch's generator, seeded per site and round for reproducible
# research runs; the README says how a production deployment should differ.
warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)


def sample_rate_for(num_rows: int, batch_size: int) -> float:
    """The Poisson sampling rate Opacus derives from a DataLoader: 1 / number of batches."""
    return 1.0 / math.ceil(num_rows / batch_size)


@dataclass
class PrivateDiscriminator:
    """A discriminator wrapped by Opacus, with its optimizer, loss and Poisson loader."""

    engine: PrivacyEngine
    module: nn.Module  # the wrapped module (GradSampleModuleFastGradientClipping)
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    loader: DataLoader

    @property
    def expected_batch_size(self) -> int:
        return int(self.optimizer.expected_batch_size)

    def real_batches(self) -> Iterator[torch.Tensor]:
        """Endless Poisson-sampled real batches (a batch may have zero rows)."""
        while True:
            for (batch,) in self.loader:
                yield batch

    def history(self) -> list[tuple[float, float, int]]:
        """The accountant's (noise, sample rate, steps) history after this round."""
        return [tuple(h) for h in copy.deepcopy(self.engine.accountant.history)]


def make_private_discriminator(
    discriminator: nn.Module,
    real: torch.Tensor,
    budget: SiteBudget,
    batch_size: int,
    max_grad_norm: float,
    lr: float,
) -> PrivateDiscriminator:
    """Wrap a fresh discriminator for DP-SGD, continuing the site's accountant history."""
    engine = PrivacyEngine(accountant=budget.accountant)
    # Restore what the site spent in earlier rounds; deepcopy because Opacus keeps
    # the list object itself and would otherwise edit the caller's copy in place.
    engine.accountant.load_state_dict({"history": copy.deepcopy(budget.history), "mechanism": budget.accountant})
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
    loader = DataLoader(TensorDataset(real), batch_size=batch_size)
    module, dp_optimizer, criterion, dp_loader = engine.make_private(
        module=discriminator,
        optimizer=optimizer,
        data_loader=loader,
        criterion=nn.BCEWithLogitsLoss(),
        noise_multiplier=budget.noise_multiplier,
        max_grad_norm=max_grad_norm,
        grad_sample_mode="ghost",
        poisson_sampling=True,
    )
    if not math.isclose(dp_loader.sample_rate, budget.sample_rate, rel_tol=1e-9):
        # The budget was planned for another sampling rate: its ε would be wrong.
        raise RuntimeError(f"sampling rate {dp_loader.sample_rate} differs from the planned {budget.sample_rate}")
    return PrivateDiscriminator(engine, module, dp_optimizer, criterion, dp_loader)


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
