"""Findings from the terms' situations (lossdiag.checks.situations): `starved` and `opposed`, each with the
figures in the term's own units, and the progress rows (alone and combined) the summary and report show."""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

from lossdiag.checks.situations import OPPOSED, STARVED, Situation, gain_kept
from lossdiag.analyse.run import RunData
from lossdiag.config import Config
from lossdiag.checks.findings import Finding, Severity

ADVICE = ("the other terms drown its gradient: see the recommendation below (candidate weightings verified by runs "
          "from the same start), then profile again with the weights you choose (--weights) to confirm")
OPPOSED_ADVICE = ("no weight rescues a term the others push up (a KL term in a VAE, an adversarial term): it is a "
                  "trade-off; choose it by the metric that matters (`lossdiag sweep --metric`)")


@dataclasses.dataclass(frozen=True)
class TermProgress:
    """One term after the same steps from the same start, alone and combined: relative drops on the evaluation
    batches (a display), and its situation (the rule's reading, in its own units)."""

    term: str
    steps: int
    alone: Optional[float]
    combined: Optional[float]
    starved: bool
    skipped_updates: int
    situation: Optional[str] = None


def progress(run: RunData, found: Mapping[str, Situation]) -> list[TermProgress]:
    """Each term that was trained alone, against the same term under the weights in force ('progress' record)."""
    combined_runs = run.extra.get("progress", [])
    if not combined_runs:
        return []
    combined_run = combined_runs[-1]
    rows = []
    for record in run.extra.get("check", []):
        term = record["term"]
        if record.get("status") == "skipped" and term not in found:
            continue
        seen = found.get(term)
        rows.append(TermProgress(term, int(combined_run["steps"]), record.get("relative_drop"),
                                 combined_run["progress"].get(term), bool(seen and seen.name == STARVED),
                                 int(combined_run.get("skipped_updates", 0)), seen.name if seen else None))
    return rows


def _number(value: Optional[float]) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def situation_findings(found: Mapping[str, Situation], on: str, steps: int, config: Config) -> list[Finding]:
    """`starved` (warning) and `opposed` (warning) with each term's losses at the start, alone and combined."""
    findings = []
    where = f"on the {on} batches after the same {steps} steps from the same start"
    for term, seen in found.items():
        if seen.name == STARVED:
            ratio = gain_kept(seen.start, seen.alone, seen.combined)
            findings.append(Finding(
                "starved", Severity.WARNING, [term],
                f"'{term}' goes from {_number(seen.start)} to {_number(seen.alone)} trained alone but only to "
                f"{_number(seen.combined)} under the weights in force, {where} (starved: it makes at most "
                f"{config.starved_ratio:g} of its alone gain combined, and ends clearly worse than alone)",
                ADVICE, ratio, config.starved_ratio))
        elif seen.name == OPPOSED and seen.combined is not None and seen.combined > seen.start:
            findings.append(Finding(
                "opposed", Severity.WARNING, [term],
                f"'{term}' gets worse while the others train: from {_number(seen.start)} at the start to "
                f"{_number(seen.combined)} under the weights in force, {where} (beyond {config.check_noise_z:g} "
                f"noise standard errors)", OPPOSED_ADVICE, seen.combined, seen.start))
    return findings
