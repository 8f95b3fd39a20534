"""Per shared module (layer), each term's share of the weighted gradient there: where in the trunk one term drowns
another, from the per-module norms a recorded step holds."""
from __future__ import annotations

import numpy as np

from lossdiag.analyse.quantities import shares_among
from lossdiag.analyse.run import RunData, finite_median


def layer_shares(run: RunData) -> dict[str, dict[str, float]]:
    """Per shared module, each term's share of the weighted gradient there (median norms over the recorded steps on
    which the term reached shared parameters); NaN (null in summary.json) where the shares are undefined."""
    weights = np.abs(run.weights)
    steps = run.share_steps
    shares = {}
    for module, norms in run.layers.items():
        medians = np.array([finite_median(weights[steps[:, k], k] * norms[steps[:, k], k])
                            for k in range(len(run.terms))])
        shares[module] = shares_among(dict(zip(run.terms, medians)))
    return shares
