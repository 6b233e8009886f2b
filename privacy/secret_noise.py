"""Where every privacy-relevant random draw comes from.

Differential privacy holds only if nobody can reproduce the noise. A generator
seeded from ``seed`` or a site's name (both written into ``report.json``) lets
anyone regenerate the noise and subtract it; the Poisson batch selection of
DP-SGD must be just as secret, since subsampling amplification assumes nobody
knows which rows were drawn. So every draw that protects a row comes from a
``NoiseSource``:

- ``NoiseSource.secret()`` (the default, and the only DP one): a ChaCha20
  keystream keyed by 32 bytes from the operating system's CSPRNG
  (``os.urandom``), fresh for every source, never derived from anything in the
  report. ChaCha20 is a cryptographically secure stream cipher; its keystream
  is the random bit source (``cryptography``'s implementation, already one of
  Flower's dependencies).
- ``NoiseSource.reproducible(*label)``: the same keystream keyed by SHA-256 of
  a label built from ``seed``. For tests and research only: a run that uses it
  is NOT differentially private, and says so in its report and on the console.

Floating-point safety (Mironov, CCS 2012; Holohan and Braghin 2021; Jin et al.
2022): the least significant bits of a naively sampled floating-point Gaussian
can tell which input it was added to. Counts therefore get *integer* noise from
OpenDP's discrete Gaussian sampler (Canonne, Kamath, Steinke 2020), which draws
exactly from the OS CSPRNG; continuous noise (DP-SGD gradients, validator
feedback) is drawn as Opacus's secure mode does it: the sum of four Gaussians
divided by two (section 5.1 of Holohan and Braghin), each from 52-bit uniform
variates of the keystream through Box-Muller.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


@functools.lru_cache(maxsize=64)
def _opendp_discrete_gaussian(size: int, scale: float):
    """OpenDP's discrete Gaussian mechanism on an integer vector of ``size`` counts (cached per shape)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T="i64"), size), dp.l2_distance(T="i64")
    return space >> dp.m.then_gaussian(scale=scale)


class NoiseSource:
    """A stream of random draws for DP mechanisms: secret by default, reproducible only on request."""

    def __init__(self, key: bytes, secret: bool) -> None:
        if len(key) != 32:
            raise ValueError("a ChaCha20 key has 32 bytes")
        self.secret = secret
        # A zero nonce is safe: every key is used for one stream only.
        self._stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._zeros = b""
        self._buffer = bytearray()

    @classmethod
    def secret_source(cls) -> NoiseSource:
        """Keyed by the operating system's CSPRNG: unpredictable, never regenerable."""
        return cls(os.urandom(32), secret=True)

    @classmethod
    def reproducible(cls, *label: object) -> NoiseSource:
        """Keyed by a public label (``seed``, site, round): NOT differentially private."""
        return cls(hashlib.sha256(":".join(map(str, label)).encode()).digest(), secret=False)

    @classmethod
    def for_run(cls, reproducible: bool, *label: object) -> NoiseSource:
        """The source a mechanism uses: secret unless the run asked for reproducible noise."""
        return cls.reproducible(*label) if reproducible else cls.secret_source()

    # ------------------------------------------------------------------------------------------------------------------
    def _words(self, count: int) -> np.ndarray:
        """``count`` uniformly random 64-bit words from the keystream."""
        if len(self._zeros) < 8 * count:
            self._zeros = bytes(8 * count)
            self._buffer = bytearray(8 * count + 15)  # cryptography's update_into wants 15 spare bytes
        self._stream.update_into(memoryview(self._zeros)[: 8 * count], self._buffer)
        return np.frombuffer(self._buffer, dtype=np.uint64, count=count).copy()

    def uniform(self, count: int) -> np.ndarray:
        """``count`` uniform variates in (0, 1] with 52 random bits each: the bits become the mantissa of a
        float in [1, 2) (exact, no rounding), and 2 - x maps it onto (0, 1]."""
        bits = self._words(count) >> np.uint64(12)
        bits |= np.uint64(0x3FF0000000000000)
        values = bits.view(np.float64)
        np.subtract(2.0, values, out=values)
        return values

    def standard_normal(self, count: int) -> torch.Tensor:
        """``count`` standard normal variates by Box-Muller, two from each pair of uniforms (float32, the
        precision of the gradients they are added to; the logarithm is taken in float64)."""
        pairs = (count + 1) // 2
        u = self.uniform(2 * pairs)
        radius = torch.from_numpy(np.sqrt(-2.0 * np.log(u[:pairs])).astype(np.float32))
        angle = torch.from_numpy((u[pairs:] * (2.0 * math.pi)).astype(np.float32))
        return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:count]

    def _secure_normal(self, count: int) -> torch.Tensor:
        """Floating-point-safe standard normals: (Z1 + Z2 + Z3 + Z4) / 2 has variance 1, as in Opacus's
        secure mode; the sum hides the low-order bits a single sampled Gaussian would give away."""
        return self.standard_normal(4 * count).view(4, count).sum(dim=0) / 2.0

    def gaussian(self, shape: tuple[int, ...] | int, std: float) -> np.ndarray:
        """N(0, std²) noise as a float64 array (measurements other than counts)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = math.prod(shape)
        if std == 0 or count == 0:
            return np.zeros(shape)
        return (std * self._secure_normal(count).double().numpy()).reshape(shape)

    def gaussian_like(self, reference: torch.Tensor, std: float) -> torch.Tensor:
        """N(0, std²) noise shaped, typed and placed like ``reference`` (DP-SGD gradients)."""
        noise = self._secure_normal(reference.numel()).view(reference.shape) * std
        return noise.to(dtype=reference.dtype, device=reference.device)

    def poisson_mask(self, count: int, rate: float) -> np.ndarray:
        """Which of ``count`` rows a Poisson sample at ``rate`` takes: each independently, with
        probability floor(rate·2^64)/2^64 <= rate (an integer comparison, no floating-point rounding;
        a rate at most the accounted one can only lower the privacy cost)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sampling rate must be in [0, 1], got {rate}")
        if rate == 1.0:
            return np.ones(count, dtype=bool)
        threshold = np.uint64(min(2**64 - 1, math.floor(rate * 2.0**64)))
        return self._words(count) < threshold

    def discrete_gaussian(self, counts: np.ndarray, scale: float) -> np.ndarray:
        """Integer counts plus discrete Gaussian noise of scale ``scale`` (exactly, from OpenDP), as int64.

        A reproducible source cannot drive OpenDP's sampler (it reads the OS CSPRNG itself); it
        rounds its own Gaussian instead, which is fine for a run that is not DP anyway.
        """
        flat = np.asarray(counts).reshape(-1)
        if not np.all(np.equal(np.mod(flat, 1), 0)):
            raise ValueError("discrete Gaussian noise is for integer counts")
        if scale <= 0:
            raise ValueError(f"noise scale must be positive, got {scale}")
        if self.secret:
            noisy = np.asarray(_opendp_discrete_gaussian(flat.size, float(scale))(flat.astype(np.int64).tolist()))
        else:
            noisy = np.rint(flat + self.gaussian(flat.size, scale))
        return noisy.astype(np.int64).reshape(np.shape(counts))

    def noisy_max(self, scores: np.ndarray, scale: float) -> int:
        """The index of the largest of ``scores`` after Gumbel noise of scale ``scale`` (report noisy max,
        i.e. the exponential mechanism). With scores of L∞ sensitivity 1 it is ρ = 1/(2 scale²)-zCDP.

        A secret source uses OpenDP's sampler, exact and driven by the OS CSPRNG (no floating-point
        leak); a reproducible one adds its own Gumbel draws, fine for a run that is not DP anyway.
        """
        values = np.asarray(scores, dtype=float).reshape(-1)
        if not values.size or not np.all(np.isfinite(values)):
            raise ValueError("noisy max needs finite scores")
        if scale <= 0:
            raise ValueError("noisy max needs a positive scale")
        if not self.secret:
            uniform = np.minimum(self.uniform(values.size), 1.0 - 2.0**-53)  # (0, 1): both logs finite
            return int(np.argmax(values - scale * np.log(-np.log(uniform))))
        return int(_opendp_noisy_max(float(scale))(values.tolist()))


@functools.lru_cache(maxsize=64)
def _opendp_noisy_max(scale: float):
    """OpenDP's report-noisy-max (Gumbel) on a float vector of L∞ sensitivity 1, zCDP (cached per scale)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.linf_distance(T=float)
    return space >> dp.m.then_noisy_max(dp.zero_concentrated_divergence(), scale=scale)


def noisy_max_rho(scale: float) -> float:
    """OpenDP's zCDP ρ for one noisy max at ``scale`` on scores of L∞ sensitivity 1 (1/(2 scale²))."""
    return float(_opendp_noisy_max(float(scale)).map(1.0))
