"""The recommendation as plain objects: the candidates verified on the outcome, the weights in force against the
recommended ones, the line to paste and the commands that check it. The terminal and the page render these."""
from __future__ import annotations

import dataclasses
import math
import shlex
from typing import Optional, Sequence

from lossdiag.advise.rule import bound_text
from lossdiag.config import format_pairs
from lossdiag.report.blocks import Block, Table
from lossdiag.report.text import number, percent, safe, signed, term_text

FEW_RECORDED_STEPS = 20


@dataclasses.dataclass(frozen=True)
class Candidate:
    """Weights no run verified (a Monitor's): a candidate to verify, never a line to paste."""

    weights: str
    check_command: Optional[str]
    verify_with: str


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The advice: its kind and reason, the outcome of each verified candidate, the comparison of the weights in
    force with the recommended ones, the line to paste (reweight only) and the notes that qualify it."""

    kind: str
    reason: str
    outcome: Optional[Block]
    candidate: Optional[Candidate]
    comparison: Optional[Block]
    sweep_command: Optional[str]
    paste: Optional[str]
    notes: tuple[str, ...]


def _weights(weights: dict, terms: list[str]) -> str:
    return format_pairs({t: number(weights[t], 3) for t in terms})


def check_command(summary: dict, model_path: str, weights: dict) -> str:
    """The command that profiles again under `weights`, repeating every option that shaped this run."""
    config = summary.get("config", {})
    parts = ["lossdiag profile", shlex.quote(safe(model_path)), "--weights",
             shlex.quote(safe(_weights(weights, summary["terms"])))]
    for option in ("steps", "every", "check_steps", "seed"):
        if config.get(option) is not None:
            parts += [f"--{option.replace('_', '-')}", str(config[option])]
    if config.get("target_shares"):
        targets = format_pairs({t: number(v, 3) for t, v in config["target_shares"].items()})
        parts += ["--target", shlex.quote(safe(targets))]
    return " ".join(parts)


def outcome_table(summary: dict) -> Table:
    """The candidates table: the weights in force and each verified candidate, each term's mean loss at the end of
    the run on the evaluation batches, and a candidate's change against the weights in force with its noise."""
    outcome, terms = summary["outcome"], summary["terms"]
    rows = [("in force: " + _weights(summary["weights"], terms), *(number(outcome["in_force"].get(t)) for t in terms),
             "")]
    for k, candidate in enumerate(outcome["candidates"]):
        cells = []
        for term in terms:
            change, noise = candidate["change"].get(term), candidate["noise"].get(term)
            cells.append(f"{number(candidate['end'].get(term))} ({signed(change)}"
                         + (f" ±{percent(noise)})" if noise is not None else ")"))
        mark = "recommended: " if k == outcome.get("chosen") else ""
        rows.append((_weights(candidate["weights"], terms), *cells, mark + safe(candidate["verdict"])))
    return Table(("run", *(term_text(t) for t in terms), "verdict"), tuple(rows))


def _outcome(summary: dict) -> Optional[Block]:
    outcome, config = summary.get("outcome"), summary.get("config", {})
    if not outcome or not outcome["candidates"]:
        return None
    main = summary.get("main") or []
    intro = (f"outcome: each term's mean loss at the end of {config.get('check_steps')} steps from the same start, "
             f"on the {outcome['on']} batches; in brackets the change against the weights in force, ± one noise "
             f"standard error (a verdict's cost is the rule's measure below, which differs for a term near its floor)")
    rule = (f"the rule: reweight only for a candidate that makes a term (not an opposed one) clearly better, by "
            f"{percent(config.get('min_gain'))} or more beyond {number(config.get('check_noise_z'))} noise standard "
            f"errors and gains that outweigh its costs, while no other term's end loss rises by more than "
            f"{bound_text(outcome['max_cost'])} (max_cost)"
            + (f" and main {quoted_terms(main)} pays nothing beyond noise" if main else "")
            + "; of those, the one that serves all terms best, the cheapest among near ties")
    return Block(intro, outcome_table(summary), (rule,))


def _comparison(summary: dict) -> Optional[Block]:
    """The weights in force against the recommended ones: share of the gradient and loss at each run's end."""
    in_force, verified = summary.get("in_force"), summary["verification"]
    if in_force is None or verified is None:
        return None
    outcome, terms = summary["outcome"], summary["terms"]
    chosen = outcome["candidates"][outcome["chosen"]]
    spread = summary.get("recommended_spread") or {}
    rows = []
    for term in terms:
        low, high = spread.get(term, (None, None))
        weight = number(summary["recommended_weights"][term], 3) + (
            f" ({number(low, 3)}-{number(high, 3)})" if low is not None else "")
        situation = (summary.get("situations") or {}).get(term) or {}
        rows.append((term_text(term), number(summary["weights"][term], 3), number(in_force["shares"].get(term), 3),
                     number(outcome["in_force"].get(term)), weight, number(verified["shares"].get(term), 3),
                     number(chosen["end"].get(term)), signed(chosen["change"].get(term)),
                     number(situation.get("alone"))))
    header = ("term", "in-force", "end-share", "end-loss", "recommended", "end-share", "end-loss", "change",
              "alone-end")
    note = (f"end-share: each term's share of the weighted gradient on shared parameters at the end of the run under "
            f"those weights (not the recorded window's median above); end-loss: its mean on the {outcome['on']} "
            f"batches at the end; alone-end: trained alone")
    return Block("", Table(header, tuple(rows)), (note,))


def _candidate(summary: dict, model_path: Optional[str]) -> Optional[Candidate]:
    weights = summary.get("candidate_weights")
    if not weights:
        return None
    command = check_command(summary, model_path, weights) if model_path else None
    return Candidate(_weights(weights, summary["terms"]), command,
                     summary.get("verify_with") or "lossdiag profile --weights")


def _reweight_notes(summary: dict, model_path: Optional[str]) -> list[str]:
    """What qualifies a reweight: alpha for two terms, the weights' spread between the halves of the recorded
    steps, too few recorded steps, the command that checks it and the refine rounds."""
    terms, weights = summary["terms"], summary["recommended_weights"]
    notes = []
    total = sum(weights.values())
    if len(terms) == 2 and total > 0:
        first, second = (term_text(t) for t in terms)
        notes.append(f"alpha = {number(weights[terms[0]] / total, 3)} in {number(total, 3)} * (alpha * {first} + "
                     f"(1 - alpha) * {second}), the sum of the weights in force kept")
    spread = summary.get("recommended_spread")
    if spread:
        notes.append("in brackets: each weight from the first and the second half of the recorded steps")
    if summary.get("profile_longer_steps"):
        ratios = {t: high / low if low > 0 else math.inf for t, (low, high) in spread.items()}
        widest = max(ratios, key=ratios.__getitem__)
        low, high = spread[widest]
        notes.append(f"the weights moved up to {number(ratios[widest], 3)}x between the halves of the recorded steps "
                     f"(widest: {term_text(widest)} {number(low, 3)}-{number(high, 3)}): profile longer (--steps "
                     f"{summary['profile_longer_steps']}) to see whether they settle; a weight that keeps moving "
                     f"follows the terms' learning, and the weights printed are the ones verified")
    if summary.get("recorded_steps", 0) < FEW_RECORDED_STEPS:
        notes.append(f"from only {summary.get('recorded_steps', 0)} recorded steps: gradient norms move fast early in "
                     f"training, so profile longer (--steps) before trusting it")
    if model_path:
        notes.append(f"check it: {check_command(summary, model_path, weights)}")
    for entry in summary.get("refinement", []):
        shares = ", ".join(f"{term_text(t)} {number(s, 3)}" for t, s in entry["dominance"].items())
        notes.append(f"refine round {entry['round']}: the previous suggestion gave shares {shares}")
    return notes


def quoted_terms(terms: Sequence[str]) -> str:
    """Term names in single quotes, as the rule's reason writes them, joined by commas."""
    return ", ".join(f"'{term_text(t)}'" for t in terms)


def recommendation(summary: dict, model_path: Optional[str] = None) -> Optional[Recommendation]:
    """The recommendation section of a profile's summary (None when it has none, as a check's)."""
    kind = summary.get("recommendation")
    if kind is None:
        return None
    terms, weights = summary["terms"], summary["recommended_weights"]
    reweight = kind == "reweight"
    sweep = (f"lossdiag sweep {shlex.quote(safe(model_path))} --metric NAME (NAME: a metric your validate(model) "
             f"returns: add validate(model) to the model file first if it has none; without --metric: the same "
             f"rule as here)") if kind == "trade-off" and model_path else None
    paste = f"loss_total = {' + '.join(f'{number(weights[t], 3)} * {term_text(t)}' for t in terms)}"
    return Recommendation(kind, summary["recommendation_reason"], _outcome(summary), _candidate(summary, model_path),
                          _comparison(summary), sweep, paste if reweight else None,
                          tuple(_reweight_notes(summary, model_path)) if reweight else ())
