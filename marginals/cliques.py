"""The model's public domain and the multi-way marginals (cliques) it may measure, from the schema alone.

The selected marginals are counted on coarse bins: a numeric column's one-way bins (``bins``) merged
into at most ``model_bins`` intervals (the point bin at ``min`` and a nullable column's missing bin
kept), categories as they are. Candidates are every pair of columns, every triple whose table has
at most ``max_cells`` cells (AIM's model-size limit, McKenna et al. 2022, in its simplest form), and
every four columns whose table has at most ``max_four_way_cells`` (small discrete columns, where a
target that depends on three others jointly needs the whole table: survival on class, age and sex). A
site counts its rows in those cells (private, never released as such); the coordinator only ever
sees the noisy sums (``marginals.selection``). Nothing here reads data: the layout is public.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.marginals.bins import ColumnBins, bin_index, coarse_bins, fine_to_coarse
from fedsynth.tabular.schema import Schema

CLIQUE_PREFIX = "clique:"  # key of a measured clique's counts in a site's reply: ``clique:A|B|C``
DEFAULT_MODEL_BINS = 8
DEFAULT_MAX_CELLS = 4000
# Four-way tables only when small (four columns of 2–3 values, or 8 bins and three binary columns): a few
# tens of cells keep their counts above the noise at ε=1, and the candidates few on wide tables (27 on HI).
DEFAULT_MAX_FOUR_WAY_CELLS = 64


@dataclass(frozen=True)
class Clique:
    """A set of columns (schema indices, increasing) whose joint marginal can be measured."""

    columns: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def key(self, names: list[str]) -> str:
        return CLIQUE_PREFIX + "|".join(names[i] for i in self.columns)

    def covered_by(self, other: Clique) -> bool:
        """True when ``other`` holds every column of this clique (its marginal then follows from other's)."""
        return set(self.columns) <= set(other.columns)


def model_layout(layout: list[ColumnBins], model_bins: int = DEFAULT_MODEL_BINS) -> list[ColumnBins]:
    """The coarse bins of every column that multi-way marginals are counted in."""
    return [coarse_bins(spec, model_bins) for spec in layout]


def candidate_cliques(
    coarse: list[ColumnBins], max_cells: int = DEFAULT_MAX_CELLS, max_four_way_cells: int = DEFAULT_MAX_FOUR_WAY_CELLS
) -> list[Clique]:
    """Every pair, every triple with at most ``max_cells`` cells and every four columns with at most
    ``max_four_way_cells``, in schema order."""
    sizes = [spec.size for spec in coarse]
    limits = {2: None, 3: max_cells, 4: max_four_way_cells}
    out = []
    for width, limit in limits.items():
        for columns in itertools.combinations(range(len(coarse)), width):
            shape = tuple(sizes[i] for i in columns)
            if limit is None or int(np.prod(shape)) <= limit:
                out.append(Clique(columns, shape))
    return out


def codes(frame: pd.DataFrame, coarse: list[ColumnBins]) -> np.ndarray:
    """Every row's coarse bin in every column, as an (rows, columns) integer matrix."""
    if not len(frame):
        return np.zeros((0, len(coarse)), dtype=np.int64)
    return np.stack([bin_index(frame, spec) for spec in coarse], axis=1)


def clique_counts(row_codes: np.ndarray, clique: Clique) -> np.ndarray:
    """Exact counts of rows in every cell of ``clique`` (flat, C order); private when the rows are."""
    if not len(row_codes):
        return np.zeros(clique.size)
    cells = np.ravel_multi_index(row_codes[:, list(clique.columns)].T, clique.shape)
    return np.bincount(cells, minlength=clique.size).astype(float)


@dataclass(frozen=True)
class Target:
    """A measured marginal: a distribution over ``clique``'s cells (flat, C order), and the summed noisy counts
    it came from with their noise std per cell (for estimation, ``marginals.graphical_model``)."""

    clique: Clique
    probabilities: np.ndarray
    counts: np.ndarray | None = None
    noise_std: float = 0.0


def distribution_from_counts(noisy_counts: np.ndarray) -> np.ndarray:
    """Noisy counts as a distribution: negative cells clipped to 0, then normalised (uniform if none is left)."""
    values = np.clip(np.asarray(noisy_counts, dtype=float).reshape(-1), 0.0, None)
    total = values.sum()
    return values / total if total > 0 else np.full(values.size, 1.0 / values.size)


def target_from_counts(clique: Clique, noisy_counts: np.ndarray, noise_std: float = 0.0) -> Target:
    """A target from summed noisy counts (``distribution_from_counts``), keeping the counts and their noise."""
    counts = np.asarray(noisy_counts, dtype=float).reshape(-1)
    return Target(clique, distribution_from_counts(counts), counts, float(noise_std))


MAX_CLIQUE_WIDTH = 4  # the widest candidate (``candidate_cliques``)
MAX_CLIQUE_CELLS = 1_000_000  # a request for a larger table is refused (memory), whatever the privacy


def parse_cliques(text: str, schema: Schema, coarse: list[ColumnBins]) -> list[Clique]:
    """Cliques from a JSON list of column-name lists (a select message); ``ValueError`` names a bad one."""
    out = []
    for names in json.loads(text or "[]"):
        if not isinstance(names, list) or not 2 <= len(names) <= MAX_CLIQUE_WIDTH or len(set(names)) != len(names):
            raise ValueError(f"clique {names!r}: must name 2 to {MAX_CLIQUE_WIDTH} different columns")
        unknown = [n for n in names if n not in schema.names]
        if unknown:
            raise ValueError(f"clique {names!r}: '{unknown[0]}' is not a schema column")
        columns = tuple(sorted(schema.names.index(n) for n in names))
        clique = Clique(columns, tuple(coarse[i].size for i in columns))
        if clique.size > MAX_CLIQUE_CELLS:
            raise ValueError(f"clique {names!r}: {clique.size} cells, more than {MAX_CLIQUE_CELLS}")
        out.append(clique)
    return out


def coarse_counts(fine_counts: np.ndarray, fine: ColumnBins, coarse: ColumnBins) -> np.ndarray:
    """A one-way histogram on ``fine`` bins summed onto ``coarse`` ones."""
    values = np.asarray(fine_counts, dtype=float).reshape(-1)
    if values.shape != (fine.size,) or not np.all(np.isfinite(values)):
        raise ValueError(f"one-way histogram of '{fine.column.name}' has the wrong shape or non-finite values")
    return np.bincount(fine_to_coarse(fine, coarse), values, coarse.size)
