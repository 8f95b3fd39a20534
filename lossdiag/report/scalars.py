"""Logger scalars of one recorded step, named as CONTRACT section 9 says: plain floats for any logger."""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

from lossdiag.analyse.quantities import cosine, shares_among

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
    sharing = set(shared_terms if reach is None else [t for t in terms if reach.get(t, 0) > 0])
    share = shares_among({t: abs(_float(grad["weights"].get(t))) * norms[t] for t in terms}, sharing)
    scalars: dict[str, float] = {}
    for term in terms:
        scalars[f"{PREFIX}/{term}/loss"] = _float(record["loss"][term])
        scalars[f"{PREFIX}/{term}/grad_norm"] = norms[term]
        scalars[f"{PREFIX}/{term}/share"] = share[term]
    index = {t: k for k, t in enumerate(terms)}
    gram = grad["gram"]
    for a, b in itertools.combinations([t for t in terms if t in sharing], 2):
        i, j = index[a], index[b]
        scalars[f"{PREFIX}/cosine/{a}~{b}"] = cosine(_float(gram[i][j]), _float(gram[i][i]), _float(gram[j][j]))
    return scalars


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
