"""Conflict: the cosine between two terms' gradients on shared parameters, over the recorded window."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from lossdiag.analyse.quantities import cosines
from lossdiag.analyse.run import RunData, finite_median


@dataclasses.dataclass(frozen=True)
class PairConflict:
    """One pair of terms: the median cosine of their shared gradients and how often it was negative."""

    terms: tuple[str, str]
    cosine_median: float
    negative_fraction: float


def cosine_series(run: RunData, a: int, b: int) -> np.ndarray:
    """Cosine between terms a and b on each recorded step, NaN where either gradient is zero."""
    return cosines(run.gram[:, a, b], run.gram[:, a, a], run.gram[:, b, b])


def conflicts(run: RunData) -> list[PairConflict]:
    """One entry per pair of terms that both reach shared parameters, in the model's term order."""
    shared = [k for k, t in enumerate(run.terms) if t in run.shared_terms]
    pairs = []
    for a, b in itertools.combinations(shared, 2):
        cosines = cosine_series(run, a, b)
        finite = cosines[np.isfinite(cosines)]
        negative = float(np.mean(finite < 0)) if finite.size else math.nan
        pairs.append(PairConflict((run.terms[a], run.terms[b]), finite_median(cosines), negative))
    return pairs


def cosine_matrix(terms: list[str], pairs: list[PairConflict]) -> np.ndarray:
    """The K x K matrix of the pairs' median cosines (1 on the diagonal, NaN for pairs not on shared parameters)."""
    index = {term: k for k, term in enumerate(terms)}
    matrix = np.full((len(terms), len(terms)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for pair in pairs:
        a, b = (index[t] for t in pair.terms)
        matrix[a, b] = matrix[b, a] = pair.cosine_median
    return matrix
