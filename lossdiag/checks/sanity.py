"""Gradient sanity from a run's records: non-finite terms, terms with no gradient path or a zero gradient,
and terms that share no parameter with any other."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from lossdiag.analyse.run import RunData
from lossdiag.checks.findings import Finding, Severity

NO_GRAD_PATH_ADVICE = ("the term is computed on detached tensors: look for `.detach()`, `torch.no_grad()`, "
                       "`.item()`, `.numpy()` or a new `torch.tensor(...)` between the model output and the loss")
ZERO_GRAD_ADVICE = ("look for a factor that is zero (a weight or mask of 0, `0 *`) or a dead branch (a ReLU or "
                    "clamp that is always saturated, an argmax, round or comparison between the output and the loss)")
NONFINITE_ADVICE = ("inspect the batch at that step for NaN or inf in the term's inputs or targets, and guard logs, "
                    "divisions and square roots (an eps, torch.clamp, torch.nan_to_num); lower the learning rate "
                    "if the values grew first")
NO_SHARED_ADVICE = ("if this term should shape the shared features (an auxiliary loss), remove the `.detach()` "
                    "between them and its head; otherwise its weight only scales its own parameters' updates")


def _parameters(run: RunData, term: str) -> int:
    return int(run.meta.get("term_parameters", {}).get(term, 0))


def _shared(run: RunData, term: str) -> int:
    return int(run.meta.get("term_shared_parameters", {}).get(term, 0))


def zero_gradient(run: RunData, k: int) -> bool:
    """Whether term k's gradient was exactly zero on every recorded step where it was finite (one at least)."""
    norms = run.norms_all[:, k] if len(run.norms_all) else np.array([])
    finite = norms[np.isfinite(norms)]
    return bool(finite.size) and bool(np.all(finite == 0))


def broken_terms(run: RunData) -> dict[str, str]:
    """Terms whose gradient cannot train them, each with the reason: no gradient path, or zero on every step."""
    broken = {}
    for k, term in enumerate(run.terms):
        if _parameters(run, term) == 0:
            broken[term] = "it reaches no trainable parameter (no-grad-path)"
        elif zero_gradient(run, k):
            broken[term] = "its gradient was zero on every recorded step (zero-grad)"
    return broken


def balance_view(run: RunData) -> RunData:
    """The run as the balance analyses should see it: broken terms reach no shared parameter, so they get no share."""
    broken = broken_terms(run)
    if not broken:
        return run
    counts = {t: 0 if t in broken else n for t, n in run.meta.get("term_shared_parameters", {}).items()}
    return dataclasses.replace(run, meta={**run.meta, "term_shared_parameters": counts})


def path_findings(run: RunData) -> list[Finding]:
    """`no-grad-path` for a term that reaches no trainable parameter, `zero-grad` for one whose gradient is always 0."""
    found = []
    recorded = len(run.grad_steps)
    for k, term in enumerate(run.terms):
        if _parameters(run, term) == 0:
            found.append(Finding(
                "no-grad-path", Severity.ERROR, [term],
                f"'{term}' reaches no trainable parameter: training cannot lower it, whatever its weight",
                NO_GRAD_PATH_ADVICE, 0.0, None))
        elif zero_gradient(run, k):
            found.append(Finding(
                "zero-grad", Severity.ERROR, [term],
                f"'{term}' reaches {_parameters(run, term)} parameters but its gradient was exactly zero on all "
                f"{recorded} recorded steps", ZERO_GRAD_ADVICE, 0.0, 0.0))
    return found


def shared_findings(run: RunData) -> list[Finding]:
    """`no-shared-params` (info) for a trainable term that shares no parameter with the other trainable terms."""
    live = [t for t in run.terms if _parameters(run, t) > 0]
    if len(live) < 2:
        return []
    return [Finding(
        "no-shared-params", Severity.INFO, [term],
        f"'{term}' shares no parameter with any other term (it trains {_parameters(run, term)} parameters of its "
        f"own), so its weight cannot shift the balance between the terms",
        NO_SHARED_ADVICE, 0.0, None) for term in live if _shared(run, term) == 0]


def _first_steps(events: list[tuple[int, list[str]]]) -> dict[str, tuple[int, int]]:
    """Each term's first non-finite step and how many steps it was non-finite, in order of first step."""
    first: dict[str, tuple[int, int]] = {}
    for step, terms in sorted(events):
        for term in terms:
            start, count = first.get(term, (step, 0))
            first[term] = (start, count + 1)
    return first


def _what(run: RunData, term: str, step: int) -> str:
    rows = np.flatnonzero(run.loss_steps == step)
    value = run.losses[rows[0], run.terms.index(term)] if rows.size else math.nan
    return "its gradient" if math.isfinite(value) else "its value"


def _context(run: RunData, bad_steps: int, skipped: bool, followers: list[str]) -> str:
    """How many steps went non-finite, what the run did about it, and who followed without being blamed."""
    steps = len(run.loss_steps)
    if skipped:
        outcome = ("so the other figures stay meaningful" if bad_steps < steps else
                   "so the model never trained: the other figures describe its initial state only")
        context = (f"{bad_steps} of {steps} steps had a non-finite update; the profile skipped the optimizer step "
                   f"on each, {outcome}")
    else:
        context = f"{bad_steps} of {steps} steps had a non-finite term"
    if followers:
        context += (f"; {', '.join(followers)} went non-finite only after a non-finite update had reached the "
                    f"parameters (not blamed)")
    return context


def growth_before(run: RunData, term: str, step: int) -> float:
    """How many times a term's magnitude grew from its first to its last finite value before `step`.

    Among terms that turn non-finite on the same step, the one that was blowing up comes first.
    """
    column = run.losses[run.loss_steps < step, run.terms.index(term)]
    finite = np.abs(column[np.isfinite(column)])
    if finite.size < 2 or finite[0] == 0:
        return 0.0
    return float(finite[-1] / finite[0])


def nonfinite_findings(run: RunData) -> list[Finding]:
    """`non-finite` for the terms that went non-finite first, not for those poisoned through a bad update.

    When the run skipped non-finite updates (the profile does), nothing could be poisoned, so every term that
    went non-finite is to blame; otherwise only the terms non-finite at the first non-finite step are.
    """
    hidden = sorted(r["step"] for r in run.extra.get("nonfinite-update", []))
    if not run.nonfinite and not hidden:
        return []
    skipped = run.meta.get("nonfinite_updates") == "skipped"
    first = _first_steps(run.nonfinite)
    poisoned_from = min([s for s, _ in run.nonfinite] + hidden)
    blamed = sorted(((t, v) for t, v in first.items() if skipped or v[0] <= poisoned_from),
                    key=lambda i: (i[1][0], -growth_before(run, i[0], i[1][0])))
    ties = [step for _, (step, _) in blamed]
    followers = [f"'{t}' (from step {v[0]})" for t, v in first.items() if t not in dict(blamed)]
    context = _context(run, len({s for s, _ in run.nonfinite} | set(hidden)), skipped, followers)
    first_alone = len(blamed) > 0 and ties.count(ties[0]) == 1
    found = [Finding("non-finite", Severity.ERROR, [term],
                     f"'{term}' went non-finite {'first ' if i == 0 and first_alone else ''}at step {step} "
                     f"({_what(run, term, step)}; non-finite on {count} steps); {context}", NONFINITE_ADVICE,
                     float(step), None)
             for i, (term, (step, count)) in enumerate(blamed)]
    if hidden and not found:
        found.append(Finding(
            "non-finite", Severity.ERROR, [],
            f"the update went non-finite at step {hidden[0]}, a step without per-term gradients; {context}",
            f"profile again with --every 1 to name the term; then: {NONFINITE_ADVICE}", float(hidden[0]), None))
    return found


def sanity_findings(run: RunData) -> list[Finding]:
    """Every gradient sanity finding of a run, in a stable order."""
    return nonfinite_findings(run) + path_findings(run) + shared_findings(run)
