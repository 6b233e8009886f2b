"""The noise source every DP mechanism draws from: secret by default, reproducible only on request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsynth.privacy.secret_noise import NoiseSource


def test_secret_sources_never_repeat_and_reproducible_ones_always_do():
    assert not np.array_equal(NoiseSource.secret_source().uniform(64), NoiseSource.secret_source().uniform(64))
    same = [NoiseSource.reproducible(0, "site", "measure").gaussian(64, 1.0) for _ in range(2)]
    assert np.array_equal(*same)
    other = NoiseSource.reproducible(1, "site", "measure").gaussian(64, 1.0)
    assert not np.array_equal(same[0], other)
    assert NoiseSource.for_run(False, 0).secret and not NoiseSource.for_run(True, 0).secret


def test_uniforms_are_in_the_half_open_unit_interval_and_flat():
    u = NoiseSource.secret_source().uniform(200_000)
    assert u.min() > 0 and u.max() <= 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002


def test_gaussian_noise_has_the_stated_scale_and_shape():
    noise = NoiseSource.secret_source()
    draws = noise.gaussian((400, 500), 2.5)
    assert draws.shape == (400, 500)
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 2.5) < 0.03
    # Tails: a Gaussian puts 4.55% beyond 2 sigma; a broken sum of uniforms would not.
    assert abs((np.abs(draws) > 5.0).mean() - 0.0455) < 0.003
    reference = torch.zeros(3, 7, dtype=torch.float32)
    like = noise.gaussian_like(reference, 1.0)
    assert like.shape == reference.shape and like.dtype == torch.float32 and like.abs().sum() > 0
    assert np.array_equal(noise.gaussian(5, 0.0), np.zeros(5))


def test_poisson_mask_samples_each_row_at_the_rate():
    noise = NoiseSource.secret_source()
    mask = noise.poisson_mask(200_000, 0.05)
    assert mask.dtype == bool and abs(mask.mean() - 0.05) < 0.002
    assert noise.poisson_mask(10, 1.0).all() and not noise.poisson_mask(10, 0.0).any()
    with pytest.raises(ValueError, match="sampling rate"):
        noise.poisson_mask(10, 1.5)


def test_discrete_gaussian_counts_stay_whole_and_have_the_stated_scale():
    counts = np.full(50_000, 100)
    noisy = NoiseSource.secret_source().discrete_gaussian(counts, 4.0)
    assert noisy.dtype == np.int64 and noisy.shape == counts.shape
    assert abs(noisy.mean() - 100) < 0.1 and abs(noisy.std() - 4.0) < 0.1
    assert not np.array_equal(noisy, NoiseSource.secret_source().discrete_gaussian(counts, 4.0))
    with pytest.raises(ValueError, match="integer"):
        NoiseSource.secret_source().discrete_gaussian(np.array([1.5]), 1.0)
    with pytest.raises(ValueError, match="positive"):
        NoiseSource.secret_source().discrete_gaussian(np.array([1]), 0.0)
