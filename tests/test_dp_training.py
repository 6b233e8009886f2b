"""The Opacus pitfalls from the field notes, checked against a hand computation.

With zero noise, Opacus's update must equal: every real AND fake row's gradient
clipped to C on its own, summed, divided by the expected batch size.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsynth.models.gan import Discriminator, Generator
from fedsynth.privacy.budget import SiteBudget
from fedsynth.privacy.dp_training import (
    discriminator_step,
    fake_batch,
    generator_step,
    make_private_discriminator,
    sample_rate_for,
)
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.tabular.codec import TableCodec

DIM = 9
SECRET = NoiseSource.secret_source()
CLIP = 0.05  # small, so that most rows are clipped and clipping matters


def zero_noise_budget(rows: int, batch: int) -> SiteBudget:
    return SiteBudget(1.0, 1e-5, "rdp", noise_multiplier=0.0, sample_rate=sample_rate_for(rows, batch), max_steps=100)


def manual_update(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, clip: float, denom: int) -> dict:
    params = {k: v.detach() for k, v in disc.named_parameters()}
    rows = torch.cat([real, fake])
    labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])

    def row_loss(p, x, y):
        out = functional_call(disc, p, (x.unsqueeze(0),))
        return nn.functional.binary_cross_entropy_with_logits(out, y.unsqueeze(0))

    grads = vmap(grad(row_loss), in_dims=(None, 0, 0))(params, rows, labels)
    norms = torch.cat([g.reshape(len(rows), -1) for g in grads.values()], 1).norm(dim=1)
    coef = (clip / (norms + 1e-6)).clamp(max=1.0)
    return {k: torch.einsum("n,n...->...", coef, g) / denom for k, g in grads.items()}


@pytest.fixture
def setup():
    real_data = torch.randn(500, DIM)
    disc = Discriminator(DIM, hidden=16)
    reference = copy.deepcopy(disc)  # copy BEFORE Opacus attaches hooks
    private = make_private_discriminator(disc, real_data, zero_noise_budget(500, 50), 50, CLIP, lr=1e-3, noise=SECRET)
    return private, reference


def private_grads(private) -> dict:
    return {k: p.grad.clone() for k, p in private.module._module.named_parameters()}


def assert_same(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol), key


def test_update_equals_per_row_clipped_sum_over_real_and_fake(setup):
    private, reference = setup
    real, fake = next(private.real_batches()), torch.randn(private.expected_batch_size, DIM)
    expected = manual_update(reference, real, fake, CLIP, private.expected_batch_size)
    discriminator_step(private, real, fake)
    assert_same(private_grads(private), expected)


def test_fake_rows_really_contribute_to_the_update(setup):
    private, reference = setup
    real, fake = next(private.real_batches()), torch.randn(private.expected_batch_size, DIM)
    without_fakes = manual_update(reference, real, fake[:0], CLIP, private.expected_batch_size)
    discriminator_step(private, real, fake)
    got = private_grads(private)
    difference = max((got[k] - without_fakes[k]).abs().max().item() for k in got)
    assert difference > 1e-3


def test_update_is_bounded_by_clip_norm_per_row(setup):
    # Sensitivity: with a fixed fake batch, one real row moves the summed gradient by at most C.
    private, reference = setup
    real, fake = next(private.real_batches()), torch.randn(private.expected_batch_size, DIM)
    with_row = manual_update(reference, real, fake, CLIP, 1)
    without_row = manual_update(reference, real[1:], fake, CLIP, 1)
    change = torch.sqrt(sum(((with_row[k] - without_row[k]) ** 2).sum() for k in with_row))
    assert change <= CLIP + 1e-6


def test_empty_real_batch_still_steps_and_is_counted(setup):
    private, reference = setup
    fake = torch.randn(private.expected_batch_size, DIM)
    expected = manual_update(reference, torch.empty(0, DIM), fake, CLIP, private.expected_batch_size)
    discriminator_step(private, torch.empty(0, DIM), fake)
    assert_same(private_grads(private), expected)
    assert sum(s for _, _, s in private.history()) == 1


def test_generator_step_leaves_discriminator_and_next_step_intact(setup):
    private, reference = setup
    gen = torch.nn.Sequential(torch.nn.Linear(4, DIM))
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in private.module.parameters()]
    gen_before = [p.detach().clone() for p in gen.parameters()]
    generator_step(gen, opt, private, 32, 4)
    assert all(torch.equal(a, b) for a, b in zip(before, private.module.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(gen_before, gen.parameters(), strict=True))
    # The next private step must still be exactly the clipped computation.
    real, fake = next(private.real_batches()), torch.randn(private.expected_batch_size, DIM)
    expected = manual_update(reference, real, fake, CLIP, private.expected_batch_size)
    discriminator_step(private, real, fake)
    assert_same(private_grads(private), expected)


def test_discriminator_logits_have_shape_n(small_schema):
    # [N, 1] logits make ghost clipping broadcast to [N, N] silently.
    codec = TableCodec(small_schema)
    assert Discriminator(codec.dim)(torch.randn(7, codec.dim)).shape == (7,)


def test_every_step_is_counted_by_the_accountant(small_schema):
    codec = TableCodec(small_schema)
    gen, disc = Generator(codec, noise_dim=8, hidden=16), Discriminator(codec.dim, hidden=16)
    real = torch.rand(300, codec.dim)
    budget = SiteBudget(1.0, 1e-5, "rdp", 1.0, sample_rate_for(300, 64), max_steps=100)
    private = make_private_discriminator(disc, real, budget, 64, 1.0, lr=1e-3, noise=SECRET)
    batches = private.real_batches()
    for _ in range(5):
        discriminator_step(private, next(batches), fake_batch(gen, private.expected_batch_size, 8))
    assert private.history() == [(1.0, budget.sample_rate, 5)]


def test_the_mechanism_is_the_same_on_neighbouring_tables(small_schema):
    # Under add/remove-one-row, n and n + 1 rows must run one mechanism: the rate comes from the
    # public row count, and the noised sum is divided by the public batch size, not by int(n q).
    budget = SiteBudget(1.0, 1e-5, "rdp", 1.0, sample_rate_for(1000.0, 50), max_steps=10)
    shapes = []
    for rows in (400, 401):
        table = torch.randn(rows, DIM)
        private = make_private_discriminator(Discriminator(DIM, 8), table, budget, 50, 1.0, 1e-3, SECRET)
        shapes.append((private.sample_rate, private.expected_batch_size, private.optimizer.expected_batch_size))
    assert shapes[0] == shapes[1] == (0.05, 50, 50)


def test_noise_and_batches_are_secret_even_with_the_same_torch_seed():
    budget = SiteBudget(1.0, 1e-5, "rdp", 1.0, sample_rate=0.2, max_steps=10)
    real = torch.randn(200, DIM)
    grads, batches = [], []
    for _ in range(2):
        torch.manual_seed(0)  # everything seeded that a seed can reach: initialisation and fakes
        disc = Discriminator(DIM, 8)
        private = make_private_discriminator(disc, real, budget, 40, 1.0, 1e-3, NoiseSource.secret_source())
        batch = next(private.real_batches())
        batches.append(batch)
        discriminator_step(private, batch, torch.randn(40, DIM))
        grads.append(torch.cat([p.grad.reshape(-1) for p in private.module.parameters()]))
    assert not torch.equal(grads[0], grads[1])
    assert len(batches[0]) != len(batches[1]) or not torch.equal(batches[0], batches[1])


def test_reproducible_noise_is_reproducible():
    budget = SiteBudget(1.0, 1e-5, "rdp", 1.0, sample_rate=0.2, max_steps=10)
    real = torch.randn(200, DIM)
    grads = []
    for _ in range(2):
        torch.manual_seed(0)
        private = make_private_discriminator(
            Discriminator(DIM, 8), real, budget, 40, 1.0, 1e-3, NoiseSource.reproducible(0, "site", 1)
        )
        discriminator_step(private, next(private.real_batches()), torch.randn(40, DIM))
        grads.append(torch.cat([p.grad.reshape(-1) for p in private.module.parameters()]))
    assert torch.equal(grads[0], grads[1])
