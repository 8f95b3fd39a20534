"""The weighted total of a step's terms: the one definition the profile's loop, the runs from the same start and
find_weights' capture of a fit all train on."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, Any]] = None,
                   missing: float = 1.0) -> torch.Tensor:
    """sum(weights[k] * terms[k]) in the mapping's order, as one stacked sum (so a run and its repeat add alike);
    a term missing from `weights` (or every term, when None) has weight `missing`. A weight may be a tensor (a
    learned weighting), so it is not converted."""
    weights = weights or {}
    return torch.stack([weights.get(name, missing) * value for name, value in terms.items()]).sum()

