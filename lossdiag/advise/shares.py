"""Each term's share of the weighted gradient on shared parameters, raw and as the optimizer applies it.

An adaptive optimizer rescales every coordinate by its running second moment, so a term whose raw gradient is
small but lies on coordinates the others leave quiet moves the parameters more than its raw share says. The
applied share divides each term's gradient by that scale, read from the optimizer's state (Adam-family
`exp_avg_sq` with its bias correction, RMSprop `square_avg`, Adagrad `sum`); other optimizers scale every
coordinate of a parameter group alike (its learning rate), so there the applied share weighs groups by it.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import torch

from lossdiag.train.probe import Probe
from lossdiag.analyse.quantities import shares_among
from lossdiag.record.gradients import reach, term_gradients, trainable_parameters
from lossdiag.train.spec import ModelSpec, compute_terms


def _scales(optimizer: torch.optim.Optimizer) -> dict[int, tuple[Optional[torch.Tensor], float]]:
    """Per parameter (by id): the per-coordinate denominator the optimizer divides by (or None), and the lr."""
    scales: dict[int, tuple[Optional[torch.Tensor], float]] = {}
    for group in optimizer.param_groups:
        lr, eps = float(group.get("lr", 1.0)), float(group.get("eps", 1e-8))
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            denominator = None
            if "exp_avg_sq" in state:
                beta2 = float(group.get("betas", (0.9, 0.999))[1])
                step = float(state.get("step", 1))
                correction = 1.0 - beta2 ** max(step, 1.0)
                denominator = (state["exp_avg_sq"] / correction).sqrt() + eps
            elif "square_avg" in state:
                denominator = state["square_avg"].sqrt() + eps
            elif "sum" in state:
                denominator = state["sum"].sqrt() + eps
            scales[id(parameter)] = (denominator, lr)
    return scales


def term_shares(spec: ModelSpec, model: torch.nn.Module, optimizer: torch.optim.Optimizer, probe: Probe,
                weights: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Raw and applied shares of the terms that reach shared parameters, medians of the norms over the probe.

    The gradients are taken on the probe batches with torch.autograd.grad (no .grad is touched); the model's
    buffers and every RNG state are restored, as when the probe is evaluated.
    """
    scales = _scales(optimizer)
    raw_rows, applied_rows = [], []
    names: Optional[list[str]] = None
    with probe.untouched(model):
        for batch in probe.batches:
            terms = compute_terms(spec, model, batch, names)
            names = names or list(terms)
            parameter_names, parameters = trainable_parameters(model)
            grads = term_gradients(terms, parameters)
            layout = reach(grads, parameter_names, parameters)
            shared = set(layout.shared)
            sharing = [t for t in names if any(i in shared for i in layout.reached.get(t, ()))]
            raw, applied = {}, {}
            for term in sharing:
                raw_sq = applied_sq = 0.0
                for i, grad in grads[term].items():
                    if i not in shared:
                        continue
                    denominator, lr = scales.get(id(layout.parameters[i]), (None, 1.0))
                    scaled = grad / denominator if denominator is not None else grad
                    raw_sq += float(grad.double().square().sum())
                    applied_sq += lr * lr * float(scaled.double().square().sum())
                raw[term] = abs(float(weights.get(term, 0.0))) * math.sqrt(raw_sq)
                applied[term] = abs(float(weights.get(term, 0.0))) * math.sqrt(applied_sq)
            raw_rows.append(raw)
            applied_rows.append(applied)
    median = lambda rows: {t: float(np.median([r[t] for r in rows])) for t in (rows or [{}])[0]}  # noqa: E731
    return shares_among(median(raw_rows)), shares_among(median(applied_rows))
