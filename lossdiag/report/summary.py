"""summary.json (CONTRACT section 4): the diagnosis as plain data, with a verdict line."""
from __future__ import annotations

import numpy as np

from lossdiag._version import __version__
from lossdiag.analyse.layers import layer_shares
from lossdiag.analyse.run import finite_median
from lossdiag.train.probe import meaningful_drop
from lossdiag.advise.decision import REWEIGHT, TRADE_OFF, Recommendation
from lossdiag.advise.diagnose import CHECK, Diagnosis
from lossdiag.checks.findings import Severity
from lossdiag.checks.situations import STARVED, lifted_out_of_starvation
from lossdiag.record.stream import finite_or_none


def _first_finite(values) -> float | None:
    finite = [float(v) for v in values if v == v and abs(v) != float("inf")]
    return finite[0] if finite else None


VERIFY_WITH = {"lightning": "lossdiag.integrations.lightning.find_weights(trainer, model)",
               "transformers": "lossdiag.integrations.transformers.find_weights(trainer)"}
PLAIN_LOOP = ("lossdiag.profile(model, batches, losses, weights=<the weights in force>, "
              "validation_batches=<held-out batches>)")


def verify_with(meta: dict) -> str | None:
    """For a Monitor's records, the call that verifies its candidate weights where its loop runs (find_weights
    under Lightning and the HF Trainer, lossdiag.profile for a plain loop); None for a profile's own records."""
    if meta.get("source") != "monitor":
        return None
    return VERIFY_WITH.get(meta.get("framework"), PLAIN_LOOP)


def verdict(diagnosis: Diagnosis) -> str:
    """The one line a person reads first; the status (ok, warning, error) is rendered beside it, not in it."""
    errors = [f for f in diagnosis.findings if f.severity == Severity.ERROR]
    if errors:
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        return f"{errors[0].message}{more}"
    if diagnosis.purpose == CHECK:
        return check_verdict(diagnosis)
    advice = diagnosis.recommendation
    if advice is not None and advice.kind == TRADE_OFF:
        return f"trade-off: {advice.reason}"
    if advice is not None and advice.kind == REWEIGHT:
        return reweight_verdict(diagnosis)
    warnings = [f for f in diagnosis.findings if f.severity == Severity.WARNING]
    if advice is not None and (advice.tried or advice.candidate is not None):
        call = verify_with(diagnosis.run.meta) if advice.candidate is not None else None
        return (f"{warnings[0].message}; " if warnings else "") + advice.reason + (f"; here: {call}" if call else "")
    if warnings:
        return warnings[0].message
    shares = [s for s in diagnosis.dominance.shares.values() if s == s]
    if len(diagnosis.run.shared_terms) < 2:
        return "fewer than two terms reach shared parameters, so there is no balance to measure"
    if len(diagnosis.run.weights) and not np.any(diagnosis.run.weights):
        return ("every weight was 0 on the recorded steps, so no term was trained and there is no balance to "
                "measure; give at least one term a weight above 0")
    if not shares or max(shares) <= 0:
        return (f"no per-term gradient on the shared parameters was recorded ({len(diagnosis.run.grad_steps)} "
                f"recorded steps), so there is no balance to measure yet")
    dominant = diagnosis.dominance.dominant_term
    if dominant is not None:
        return (f"keep: '{dominant}' holds {diagnosis.dominance.shares[dominant]:.3f} of the shared gradient by "
                f"design and no term is starved")
    return f"balanced: no term dominates the shared parameters (largest share {max(shares):.3f})"


def reweight_verdict(diagnosis: Diagnosis) -> str:
    """The verdict of a reweight: the starved terms it rescues, or the term that dominates; then the rule's numbers."""
    advice = diagnosis.recommendation
    picked = advice.assessments[advice.chosen]
    starved = [t for t, s in advice.situations.items() if s.name == STARVED]
    dominant = diagnosis.dominance.dominant_term
    if starved and set(starved) <= set(picked.gains):
        lifted = all(lifted_out_of_starvation(advice.situations[t], picked.end.get(t), diagnosis.config.starved_ratio)
                     for t in starved)
        verb = "rescue" if lifted else "help, though not out of starvation,"
        lead = (f"{', '.join(repr(t) for t in starved)} {'is' if len(starved) == 1 else 'are'} starved and the "
                f"recommended weights {verb} {'it' if len(starved) == 1 else 'them'}")
    elif dominant is not None:
        lead = (f"'{dominant}' dominates the shared parameters with {diagnosis.dominance.shares[dominant]:.3f} of the "
                f"weighted gradient; reweight with the weights below")
    else:
        lead = "reweight with the weights below"
    return f"{lead}: {advice.reason}"


def check_verdict(diagnosis: Diagnosis) -> str:
    """The verdict of a `lossdiag check` run without errors: how many terms go down alone, and what was skipped."""
    checks = diagnosis.checks
    note = diagnosis.run.meta.get("note")
    lead = f"{note}; " if note else ""
    if not checks:
        return f"{lead}no gradient sanity error (the single-term checks did not run)"
    passed = sum(1 for c in checks if c["status"] == "pass")
    skipped = [f"'{c['term']}' ({c['reason']})" for c in checks if c["status"] == "skipped"]
    line = f"{lead}no gradient sanity error; {passed} of {len(checks)} terms go down when trained alone"
    return line + (f"; skipped {', '.join(skipped)}" if skipped else "")


def checks_summary(diagnosis: Diagnosis) -> list[dict]:
    """One row per single-term check: the contract's keys, the failure code and reason, and in a profile the
    progress under the combined loss over the same first steps (`compared_steps`) with the starved flag."""
    progress = {p.term: p for p in diagnosis.progress}
    rows = []
    for record in diagnosis.checks:
        row = {key: record.get(key) for key in ("term", "status", "loss_start", "loss_end", "relative_drop", "code",
                                                  "reason", "steps", "noise", "probe_batches",
                                                  "nonfinite_steps")}
        compared = progress.get(record["term"])
        row["compared_steps"] = compared.steps if compared else None
        row["alone_relative_drop"] = compared.alone if compared else None
        row["combined_relative_drop"] = compared.combined if compared else None
        row["starved"] = bool(compared and compared.starved)
        row["situation"] = compared.situation if compared else None
        row["combined_skipped_updates"] = compared.skipped_updates if compared else None
        rows.append(row)
    return rows


def per_term(diagnosis: Diagnosis) -> dict:
    """Loss first and last (medians of the first and last tenth of steps), norms and shares."""
    run, result = diagnosis.run, diagnosis.dominance
    rows = {}
    tenth = max(1, len(run.loss_steps) // 10)
    for k, term in enumerate(run.terms):
        column = run.losses[:, k]
        rows[term] = {
            "loss_first": finite_median(column[:tenth]) if len(column) else None,
            "loss_last": finite_median(column[-tenth:]) if len(column) else None,
            "loss_initial": _first_finite(column),
            "grad_norm": result.grad_norms[term],
            "grad_norm_all": finite_median(run.norms_all[:, k]) if len(run.norms_all) else None,
            "weighted_grad_norm": result.weighted_norms[term],
            "share": result.shares[term],
            "weight": diagnosis.current_weights.get(term, 1.0),
            "suggested_weight": diagnosis.suggestion.weights[term],
            **advice_per_term(diagnosis.recommendation, diagnosis.checks, term),
            "shared_parameters": run.meta.get("term_shared_parameters", {}).get(term, 0),
            "parameters": run.meta.get("term_parameters", {}).get(term, 0),
        }
    return rows


def advice_per_term(advice: Recommendation | None, checks: list[dict], term: str) -> dict:
    """A term's progress alone and under the weights in force, its applied share and its recommended weight."""
    alone = next((c.get("relative_drop") for c in checks if c["term"] == term), None)
    in_force = advice.in_force if advice is not None else None
    return {"progress_alone": alone,
            "progress": meaningful_drop(in_force.progress.get(term)) if in_force else None,
            "applied_share": in_force.applied_shares.get(term) if in_force else None,
            "recommended_weight": advice.weights.get(term) if advice is not None else None}


def advice_summary(advice: Recommendation | None, terms: list[str]) -> dict:
    """The contract's advice keys (target_shares, recommendation, recommended_weights, verification, progress,
    outcome, opposed, main) and the situations and candidate weights behind them."""
    if advice is None:
        return {"target_shares": {}, "recommendation": None, "recommended_weights": {}, "verification": None,
                "progress": {t: None for t in terms}, "outcome": None, "opposed": [], "main": []}
    in_force = advice.in_force
    return {
        "target_shares": advice.target_shares,
        "recommendation": advice.kind,
        "recommendation_reason": advice.reason,
        "recommended_weights": advice.weights,
        "candidate_weights": advice.candidate,
        "recommended_spread": {t: list(v) for t, v in advice.spread.items()},
        "profile_longer_steps": advice.longer_steps,
        "in_force": in_force.to_dict() if in_force else None,
        "verification": advice.verification.to_dict() if advice.verification else None,
        "verification_rounds": [r.to_dict() for r in advice.rounds],
        "progress": {t: meaningful_drop(in_force.progress.get(t)) if in_force else None for t in terms},
        "outcome": advice.outcome(),
        "situations": {t: s.to_dict() for t, s in advice.situations.items()},
        "opposed": advice.opposed,
        "main": advice.main,
        "max_cost": advice.max_cost,
    }


def scope_label(meta: dict) -> str | None:
    """For a proxy scope (a Monitor's 'last-layer' or 'representation'), what was measured instead; else None."""
    scope = meta.get("scope", "all")
    if scope == "all":
        return None
    note = meta.get("scope_note")
    return f"proxy scope '{scope}'" + (f": {note}" if note else "")


def build_summary(diagnosis: Diagnosis) -> dict:
    """The contract's summary.json object; non-finite floats become null."""
    run = diagnosis.run
    meta = run.meta
    summary = {
        "lossdiag_version": __version__,
        "torch_version": meta.get("torch_version"),
        "source": meta.get("source"),
        "verify_with": verify_with(meta),
        "status": diagnosis.status,
        "verdict": verdict(diagnosis) + (f" [measured on a proxy: scope '{meta['scope']}']"
                                         if scope_label(meta) else ""),
        "terms": run.terms,
        "weights": diagnosis.current_weights,
        "steps": int(len(run.loss_steps)),
        "recorded_steps": int(len(run.grad_steps)),
        "ended_early": not run.ended,
        "record_repairs": list(run.repairs),
        "scope": meta.get("scope", "all"),
        "scope_proxy": scope_label(meta) is not None,
        "scope_note": scope_label(meta),
        "shared_parameters": meta.get("shared_parameters", {"count": 0, "numel": 0, "names": []}),
        "shared_modules": meta.get("shared_modules", []),
        "layers": layer_shares(diagnosis.run),
        "per_term": per_term(diagnosis),
        "dominance": diagnosis.dominance.shares,
        "dominance_ratio": diagnosis.dominance.ratio,
        "dominant_term": diagnosis.dominance.dominant_term,
        "dominance_threshold": diagnosis.dominance.threshold,
        "conflict": [{"terms": list(p.terms), "cosine_median": p.cosine_median,
                      "negative_fraction": p.negative_fraction} for p in diagnosis.conflicts],
        "conflict_threshold": diagnosis.config.conflict_cosine,
        "suggested_weights": diagnosis.suggestion.weights,
        "suggestion_kind": diagnosis.suggestion.kind,
        "suggested_alpha": diagnosis.suggestion.alpha,
        "refinement": [{"round": r["step"], "weights": r["weights"], "dominance": r["dominance"]}
                       for r in run.extra.get("refine", [])],
        **advice_summary(diagnosis.recommendation, run.terms),
        "findings": [f.to_dict() for f in diagnosis.findings],
        "checks": checks_summary(diagnosis),
        "purpose": diagnosis.purpose,
        "config": diagnosis.config.to_dict(),
    }
    return finite_or_none(summary)
