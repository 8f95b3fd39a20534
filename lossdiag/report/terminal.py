"""The terminal summary, read top-down: verdict, per-term table, findings, conflict, the suggestion."""
from __future__ import annotations

import math
import shlex
from typing import Any, Optional

from lossdiag.config import format_pairs

FEW_RECORDED_STEPS = 20


def safe(text: Any) -> str:
    """A user string made harmless for a terminal: control characters and escapes shown, not obeyed."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def plain(lines: list[str]) -> str:
    """Lines as terminal text with every control character shown, not obeyed, whatever they interpolate."""
    return "".join(safe(line) + "\n" for line in "\n".join(lines).split("\n"))


def number(value: Optional[float], digits: int = 4) -> str:
    """A compact number; '-' for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _listing(names: list[str], most: int = 6) -> str:
    """Names joined by commas, the rest counted; 'none' for an empty list."""
    if not names:
        return "none"
    shown = ", ".join(safe(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    line = lambda row: "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def suggestion_lines(summary: dict, model_path: Optional[str] = None) -> list[str]:
    """The suggestion as a line to paste, alpha in the forum's form, and the command that checks it."""
    weights = summary["suggested_weights"]
    terms = summary["terms"]
    total = " + ".join(f"{number(weights[t], 5)} * {safe(t)}" for t in terms)
    lines = [f"  loss_total = {total}"]
    if summary.get("suggested_alpha") is not None and len(terms) == 2:
        first, second = (safe(t) for t in terms)
        lines.append(f"  alpha = {number(summary['suggested_alpha'], 5)} in "
                     f"alpha * {first} + (1 - alpha) * {second}")
    if summary["suggestion_kind"] == "trade-off":
        lines.append("  these terms trade off: no weight balances them. The weights above only equalise "
                     "gradient norms;")
        lines.append("  choose alpha by the metric that matters (sweep it and compare on held-out data).")
    if summary.get("recommendation", summary["suggestion_kind"]) == "trade-off" and model_path:
        lines.append(f"  sweep it: lossdiag sweep {shlex.quote(safe(model_path))} --metric NAME "
                     f"(NAME: a metric your validate(model) returns; without --metric: no term left behind)")
    if summary.get("recorded_steps", 0) < FEW_RECORDED_STEPS:
        lines.append(f"  from only {summary.get('recorded_steps', 0)} recorded steps: gradient norms move fast early "
                     f"in training, so profile longer (--steps) before trusting it")
    if model_path:
        pairs = format_pairs({t: number(weights[t], 5) for t in terms})
        lines.append(f"  check it: lossdiag profile {shlex.quote(safe(model_path))} --weights {shlex.quote(pairs)}")
    for entry in summary.get("refinement", []):
        shares = ", ".join(f"{safe(t)} {number(s, 3)}" for t, s in entry["dominance"].items())
        lines.append(f"  refine round {entry['round']}: the previous suggestion gave shares {shares}")
    return lines


def percent(value: Optional[float]) -> str:
    """A fraction as a percentage with one decimal ('-' for a missing or non-finite one); past 1000%, 3 digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.1%}" if abs(value) < 10 else f"{value * 100:.3g}%"


def findings_lines(summary: dict) -> list[str]:
    """Each finding with its severity, code, message (figures and threshold) and what to do."""
    if not summary["findings"]:
        return []
    lines = ["", "findings"]
    for finding in summary["findings"]:
        lines.append(f"  {finding['severity']:8} "
                     f"{finding['code']:18} {safe(finding['message'])}")
        lines.append(f"  {'':8} {'':18} what to do: {safe(finding['advice'])}")
    return lines


def checks_lines(summary: dict) -> list[str]:
    """The single-term checks: per term status, smoothed start -> end, drop alone (and combined), and the rules."""
    checks = summary.get("checks") or []
    if not checks:
        return []
    config = summary.get("config", {})
    combined = any(c.get("combined_relative_drop") is not None for c in checks)
    rows = []
    for check in checks:
        status = f"{check['status']} ({check['code']})" if check.get("code") else check["status"]
        row = [safe(check["term"]), status, f"{number(check['loss_start'])} -> {number(check['loss_end'])}",
               percent(check["relative_drop"])]
        if combined:
            row += [percent(check.get("combined_relative_drop")), "starved" if check.get("starved") else ""]
        rows.append(row)
    header = ["term", "check", "loss start -> end", "drop alone"] + (["drop combined", "finding"] if combined else [])
    lines = ["", f"single-term checks: each term trained alone (weight 1) from the run's start for "
                 f"{config.get('check_steps')} steps; start and end: its mean on {config.get('probe_batches')} "
                 f"probe batches fixed at the start"]
    lines += _table(header, rows)
    lines.append(f"pass: a drop beyond {number(config.get('check_noise_z'))} noise standard errors (below "
                 f"{percent(config.get('check_min_drop'))}: slow); not-decreasing: a drop of "
                 f"{percent(config.get('check_min_drop'))} ruled out by the noise; diverging: a rise of "
                 f"{percent(config.get('check_max_rise'))} or more beyond the noise")
    if combined:
        lines.append(f"starved: after as many steps under the weights in force, its drop is at most "
                     f"{number(config.get('starved_ratio'))} times an alone drop of at least "
                     f"{percent(config.get('starved_min_drop'))}")
    lines += [f"  '{safe(c['term'])}' skipped: {safe(c['reason'])}" for c in checks if c["status"] == "skipped"]
    return lines


def render_check(summary: dict, out: Optional[str] = None) -> str:
    """The summary of `lossdiag check`: verdict, sanity findings and the single-term checks."""
    config = summary.get("config", {})
    lines = [
        f"lossdiag {summary['lossdiag_version']} · {safe(summary.get('source') or '')} · check: "
        f"{summary['steps']} steps of gradient sanity, {config.get('check_steps')} steps per term alone · "
        f"{len(summary['terms'])} terms",
        "",
        f"{summary['status'].upper()}: {safe(summary['verdict'])}",
        *findings_lines(summary),
        *checks_lines(summary),
    ]
    if out:
        lines += ["", f"outputs in {safe(out)}/"]
    return plain(lines)


def render(summary: dict, model_path: Optional[str] = None, out: Optional[str] = None) -> str:
    """The whole human summary as text."""
    if summary.get("purpose") == "check":
        return render_check(summary, out)
    shared = summary["shared_parameters"]
    lines = [
        f"lossdiag {summary['lossdiag_version']} · {safe(summary.get('source') or '')} · "
        f"{summary['steps']} steps ({summary['recorded_steps']} recorded) · {len(summary['terms'])} terms · "
        f"{shared['count']} shared parameters ({shared['numel']:,} values)",
        f"shared modules: {_listing(summary.get('shared_modules', []))}",
        "",
        f"{summary['status'].upper()}: {safe(summary['verdict'])}",
        *([f"measured on a {safe(summary['scope_note'])}"] if summary.get("scope_proxy") else []),
        *([f"the run ended early (killed or crashed): this covers the {summary['steps']} steps it recorded"]
          if summary.get("ended_early") else []),
        *[f"damaged records: {repair}" for repair in summary.get("record_repairs", [])],
        "",
    ]
    rows = []
    for term in summary["terms"]:
        row = summary["per_term"][term]
        rows.append([safe(term), number(row["weight"]),
                     f"{number(row['loss_first'])} -> {number(row['loss_last'])}",
                     number(row["grad_norm"]), number(row["weighted_grad_norm"]), number(row["share"], 3),
                     number(row["suggested_weight"], 5)])
    lines += _table(["term", "weight", "loss first -> last", "grad norm", "weighted", "share", "suggested"],
                    rows)
    lines += ["", f"share: of the weighted gradient on shared parameters (median over recorded steps); "
                  f"dominance threshold {number(summary['dominance_threshold'])}"]
    lines += findings_lines(summary)
    lines += checks_lines(summary)
    if summary["conflict"]:
        lines += ["", f"conflict (median cosine of gradients on shared parameters; "
                      f"threshold {number(summary['conflict_threshold'])})"]
        for pair in summary["conflict"]:
            a, b = (safe(t) for t in pair["terms"])
            lines.append(f"  {a} vs {b}: cosine {number(pair['cosine_median'], 3)}, "
                         f"negative on {percent(pair['negative_fraction'])} of steps")
    lines += ["", f"suggestion ({summary['suggestion_kind']}):", *suggestion_lines(summary, model_path)]
    if out:
        lines += ["", f"outputs in {safe(out)}/"]
    return plain(lines)
