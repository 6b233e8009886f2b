"""The released table's model: a graphical model estimated from every noisy marginal with ``mbi``.

``mbi`` 2.0 (Private-PGM's successor, which MST and AIM are built on; McKenna, Sheldon, Miklau,
ICML 2019) finds the distribution, in the family of Markov random fields over the measured cliques,
whose marginals best explain the noisy counts, each weighed by its own noise (mirror descent on
the weighted L2 loss), and samples rows from it. Measured on HI at ε=1 (benchmarks, the engine
ablation), it beats refitting the row pool (``marginals.pool``) on column shapes, pair trends and
coverage, so the release uses it; the pool stays for the selection rounds, where the model is
refitted every round and ``mbi``'s compilation (5-12 s a round here) would dominate the run.

Measurements, on the coarse bins (``marginals.cliques``): every column's one-way counts, summed from
its fine bins (a coarse cell of k fine bins carries noise std σ·sqrt(k), expressed as a weighted
query so that every measurement has one std), and every selected clique's summed counts. A model
whose junction tree would exceed ``MAX_MODEL_MB`` is not fitted (the caller falls back to the pool).
Post-processing of DP outputs only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import numpy as np

from fedsynth.marginals.bins import ColumnBins, fine_to_coarse
from fedsynth.marginals.cliques import coarse_counts
from fedsynth.marginals.estimate import Marginals

ITERATIONS = 1000
MAX_MODEL_MB = 80.0  # AIM's default model-size limit

log = logging.getLogger(__name__)


def _mbi():
    """Import ``mbi`` (and JAX) only when a model is fitted: the sites never need them."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mbi warns about float32 and the compilation cache on import
        import jax

        jax.config.update("jax_enable_x64", True)  # counts of tens of thousands need float64
        jax.config.update("jax_enable_compilation_cache", False)
        import mbi
    return mbi


def measurements(marginals: Marginals, coarse: list[ColumnBins]) -> list:
    """Every noisy marginal of ``marginals`` as an ``mbi.LinearMeasurement`` on the coarse bins."""
    mbi = _mbi()
    names = [spec.column.name for spec in marginals.layout]
    out = []
    for index, (fine, spec) in enumerate(zip(marginals.layout, coarse, strict=True)):
        mapping = fine_to_coarse(fine, spec)
        cells = np.maximum(np.bincount(mapping, minlength=spec.size), 1).astype(float)
        summed = coarse_counts(marginals.one_way_counts[index], fine, spec)
        weight = 1.0 / np.sqrt(cells)  # (sum of k fine counts) / sqrt(k) carries noise std σ
        out.append(mbi.LinearMeasurement(summed * weight, (names[index],), marginals.one_way_std,
                                         query=mbi.WeightedQuery(weight)))  # fmt: skip
    for target in marginals.cliques:
        if target.counts is None or not target.noise_std > 0:
            continue
        clique = tuple(names[i] for i in target.clique.columns)
        out.append(mbi.LinearMeasurement(np.asarray(target.counts, dtype=float), clique, target.noise_std))
    return out


def fit_and_sample(marginals: Marginals, coarse: list[ColumnBins], rows: int, seed: int) -> np.ndarray | None:
    """``rows`` rows of coarse codes sampled from the fitted model, or None when it cannot be fitted here."""
    if not marginals.one_way_counts or not marginals.one_way_std > 0:
        return None
    mbi = _mbi()
    names = [spec.column.name for spec in marginals.layout]
    domain = mbi.Domain(names, [spec.size for spec in coarse])
    measured = measurements(marginals, coarse)
    cliques = [m.clique for m in measured]
    size = mbi.junction_tree.hypothetical_model_size(domain, cliques)
    if size > MAX_MODEL_MB:
        log.warning("fedsynth: the graphical model would take %.0f MB (> %.0f): sampling the row pool", size,
                    MAX_MODEL_MB)  # fmt: skip
        return None
    model = mbi.estimation.MirrorDescent().estimate(domain, measured, known_total=marginals.total_rows,
                                                    iters=ITERATIONS)  # fmt: skip
    with _numpy_seed(seed):  # mbi samples from NumPy's global generator
        data = model.synthetic_data(rows).to_dict()
    return np.stack([np.asarray(data[name], dtype=np.int64) for name in names], axis=1)


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
