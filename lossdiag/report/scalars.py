"""Logger scalars of one recorded step, named as CONTRACT section 9 says: plain floats for any logger."""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

PREFIX = "lossdiag"
LogFn = Callable[[dict[str, float], int], None]


def step_scalars(record: dict, shared_terms: Sequence[str]) -> dict[str, float]:
    """A 'step' record with gradients as `lossdiag/<term>/loss|grad_norm|share` and `lossdiag/cosine/<a>~<b>`.

    grad_norm is the unweighted gradient norm on the shared parameters; share is the term's part of the
    weighted gradient there (0 for a term that reaches no shared parameter on this step, as in summary.json);
    cosines are between pairs of terms that both reach shared parameters on this step. Which terms do is read
    from the record, or where it does not say (the representation scope) taken as `shared_terms`.
    Not-a-number where a value is undefined.
    """
    grad = record["grad"]
    terms = list(record["loss"])
    norms = {t: _float(grad["norms"].get(t)) for t in terms}
    reach = grad.get("term_shared_parameters")
    sharing = shared_terms if reach is None else [t for t in terms if reach.get(t, 0) > 0]
    weighted = {t: abs(_float(grad["weights"].get(t))) * norms[t] for t in sharing}
    total = sum(weighted.values())
    scalars: dict[str, float] = {}
    for term in terms:
        share = 0.0
        if term in weighted:
            share = weighted[term] / total if math.isfinite(total) and total > 0 else math.nan
        scalars[f"{PREFIX}/{term}/loss"] = _float(record["loss"][term])
        scalars[f"{PREFIX}/{term}/grad_norm"] = norms[term]
        scalars[f"{PREFIX}/{term}/share"] = share
    index = {t: k for k, t in enumerate(terms)}
    gram = grad["gram"]
    for a, b in itertools.combinations([t for t in terms if t in weighted], 2):
        i, j = index[a], index[b]
        scalars[f"{PREFIX}/cosine/{a}~{b}"] = _cosine(_float(gram[i][j]), _float(gram[i][i]), _float(gram[j][j]))
    return scalars


def _cosine(dot: float, square_a: float, square_b: float) -> float:
    """Cosine from a Gram entry and the two squared norms; NaN where either gradient is zero."""
    denominator = math.sqrt(square_a * square_b) if square_a >= 0 and square_b >= 0 else math.nan
    if not denominator > 0:
        return math.nan
    return min(1.0, max(-1.0, dot / denominator))


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
