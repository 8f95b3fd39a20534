"""The terminal summary, read top-down: verdict, per-term table, findings, conflict, the suggestion."""
from __future__ import annotations

import hashlib
import math
import shlex
from typing import Any, Optional

from lossdiag.advise.probe import meaningful_drop
from lossdiag.advise.recommend import SPREAD_WIDE
from lossdiag.advise.rule import bound_text
from lossdiag.config import format_pairs, quote_name

FEW_RECORDED_STEPS = 20


def safe(text: Any) -> str:
    """A user string made harmless for a terminal: control characters and escapes shown, not obeyed."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def term_text(name: Any, limit: Optional[int] = None) -> str:
    """A term name as the terminal, the page and the figures show it. A name holding a character that is not
    printable (or starting with a double quote) is written in double quotes with JSON escapes, as --weights reads
    it, so 'x<newline>y' shows as "x\\ny" and stays apart from 'x\\ny'; past `limit` characters it is cut in the
    middle and ends with '#' and a digest of the whole name, so two long names that share a prefix stay apart."""
    text = str(name)
    if not text.isprintable() or text.startswith('"'):
        text = quote_name(text)
    if limit is None or len(text) <= limit:
        return text
    digest = "#" + hashlib.blake2s(str(name).encode("utf-8", "surrogatepass"), digest_size=2).hexdigest()
    kept = max(limit - len(digest) - 1, 2)
    return f"{text[:(kept + 1) // 2]}…{text[len(text) - kept // 2:]}{digest}"


def quoted_term(name: Any) -> str:
    """A term name quoted once inside a sentence: in single quotes, unless term_text already wrote it in double
    quotes with escapes."""
    text = term_text(name)
    return text if text.startswith('"') else f"'{text}'"


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
    shown = ", ".join(term_text(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    line = lambda row: "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def check_command(summary: dict, model_path: str, weights: dict) -> str:
    """The command that profiles again under `weights`, repeating every option that shaped this run."""
    config = summary.get("config", {})
    pairs = format_pairs({t: number(weights[t], 3) for t in summary["terms"]})
    parts = ["lossdiag profile", shlex.quote(safe(model_path)), "--weights", shlex.quote(safe(pairs))]
    for option in ("steps", "every", "check_steps", "seed"):
        if config.get(option) is not None:
            parts += [f"--{option.replace('_', '-')}", str(config[option])]
    if config.get("target_shares"):
        targets = format_pairs({t: number(v, 3) for t, v in config["target_shares"].items()})
        parts += ["--target", shlex.quote(safe(targets))]
    return " ".join(parts)


def signed(value: Optional[float]) -> str:
    """A relative change with its sign ('-' when missing); past +-1000%, 3 significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:+.1%}" if abs(value) < 10 else f"{value * 100:+.3g}%"


def outcome_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The candidates table: the weights in force and each verified candidate, each term's mean loss at the end of
    the run on the evaluation batches, and a candidate's change against the weights in force with its noise."""
    outcome, terms = summary["outcome"], summary["terms"]
    header = ["run", *(term_text(t) for t in terms), "verdict"]
    rows = [["in force: " + format_pairs({t: number(summary["weights"][t], 3) for t in terms}),
             *(number(outcome["in_force"].get(t)) for t in terms), ""]]
    for k, candidate in enumerate(outcome["candidates"]):
        cells = []
        for term in terms:
            change, noise = candidate["change"].get(term), candidate["noise"].get(term)
            cells.append(f"{number(candidate['end'].get(term))} ({signed(change)}"
                         + (f" ±{percent(noise)})" if noise is not None else ")"))
        mark = "recommended: " if k == outcome.get("chosen") else ""
        rows.append([format_pairs({t: number(candidate["weights"][t], 3) for t in terms}), *cells,
                     mark + safe(candidate["verdict"])])
    return header, rows


def outcome_lines(summary: dict) -> list[str]:
    """How each candidate ended against the weights in force, and the rule's numbers."""
    outcome, config = summary.get("outcome"), summary.get("config", {})
    if not outcome or not outcome["candidates"]:
        return []
    lines = [f"outcome: each term's mean loss at the end of {config.get('check_steps')} steps from the same start, on "
             f"the {outcome['on']} batches; in brackets the change against the weights in force, ± one noise "
             f"standard error"]
    lines += _table(*outcome_rows(summary))
    main = summary.get("main") or []
    lines.append(f"the rule: reweight only for a candidate that makes a term (not an opposed one) clearly better, by "
                 f"{percent(config.get('min_gain'))} or more beyond {number(config.get('check_noise_z'))} noise "
                 f"standard errors and gains that outweigh its costs, while no other term's end loss rises by more "
                 f"than {bound_text(outcome['max_cost'])} (max_cost)"
                 + (f" and main {', '.join(term_text(t) for t in main)} pays nothing beyond noise" if main else "")
                 + "; of those, the one that serves all terms best, the cheapest among near ties")
    return lines


def advice_lines(summary: dict, model_path: Optional[str] = None) -> list[str]:
    """The recommendation: the candidates verified on the outcome, the weights in force against the recommended
    ones (share of the gradient and loss at each run's end), the line to paste and the command that checks it."""
    kind = summary.get("recommendation")
    if kind is None:
        return []
    terms, config = summary["terms"], summary.get("config", {})
    recommended, in_force, verified = summary["recommended_weights"], summary.get("in_force"), summary["verification"]
    lines = ["", f"recommendation: {kind} ({safe(summary['recommendation_reason'])})"]
    lines += outcome_lines(summary)
    if summary.get("candidate_weights"):
        lines.append("  candidate (not verified): " + format_pairs(
            {t: number(summary["candidate_weights"][t], 3) for t in terms}))
        if model_path:
            lines.append(f"  check it: {check_command(summary, model_path, summary['candidate_weights'])}")
    if in_force is not None and verified is not None:
        outcome = summary["outcome"]
        chosen = outcome["candidates"][outcome["chosen"]]
        spread = summary.get("recommended_spread") or {}
        rows = []
        for term in terms:
            low, high = spread.get(term, (None, None))
            weight = number(recommended[term], 3) + (f" ({number(low, 3)}-{number(high, 3)})" if low is not None else "")
            situation = (summary.get("situations") or {}).get(term) or {}
            rows.append([term_text(term), number(summary["weights"][term], 3), number(in_force["shares"].get(term), 3),
                         number(outcome["in_force"].get(term)), weight, number(verified["shares"].get(term), 3),
                         number(chosen["end"].get(term)), signed(chosen["change"].get(term)),
                         number(situation.get("alone"))])
        lines += _table(["term", "in-force", "end-share", "end-loss", "recommended", "end-share", "end-loss",
                         "change", "alone-end"], rows)
        lines.append(f"end-share: each term's share of the weighted gradient on shared parameters at the end of the "
                     f"run under those weights (not the recorded window's median above); end-loss: its mean on the "
                     f"{outcome['on']} batches at the end; alone-end: trained alone")
    if kind == "trade-off" and model_path:
        lines.append(f"  sweep it: lossdiag sweep {shlex.quote(safe(model_path))} --metric NAME "
                     f"(NAME: a metric your validate(model) returns; without --metric: the same rule as here)")
    if kind != "reweight":
        return lines
    weights = recommended
    lines.append(f"  loss_total = {' + '.join(f'{number(weights[t], 3)} * {term_text(t)}' for t in terms)}")
    if len(terms) == 2 and sum(weights.values()) > 0:
        first, second = (term_text(t) for t in terms)
        total = sum(weights.values())
        lines.append(f"  alpha = {number(weights[terms[0]] / total, 3)} in {number(total, 3)} * (alpha * {first} + "
                     f"(1 - alpha) * {second}), the sum of the weights in force kept")
    if summary.get("recommended_spread"):
        lines.append("  in brackets: each weight from the first and the second half of the recorded steps")
    if summary.get("profile_longer_steps"):
        spread = summary["recommended_spread"]
        widest = max(spread, key=lambda t: spread[t][1] / spread[t][0] if spread[t][0] > 0 else math.inf)
        low, high = spread[widest]
        lines.append(f"  the weights moved more than {SPREAD_WIDE:g}x between the halves of the recorded steps "
                     f"(widest: {term_text(widest)} {number(low, 3)}-{number(high, 3)}): profile longer (--steps "
                     f"{summary['profile_longer_steps']}) to see whether they settle; a weight that keeps moving "
                     f"follows the terms' learning, and the weights printed are the ones verified")
    if summary.get("recorded_steps", 0) < FEW_RECORDED_STEPS:
        lines.append(f"  from only {summary.get('recorded_steps', 0)} recorded steps: gradient norms move fast early "
                     f"in training, so profile longer (--steps) before trusting it")
    if model_path:
        lines.append(f"  check it: {check_command(summary, model_path, weights)}")
    for entry in summary.get("refinement", []):
        shares = ", ".join(f"{term_text(t)} {number(s, 3)}" for t, s in entry["dominance"].items())
        lines.append(f"  refine round {entry['round']}: the previous suggestion gave shares {shares}")
    return lines


def percent(value: Optional[float]) -> str:
    """A fraction as a percentage with one decimal ('-' for a missing or non-finite one); past 1000%, 3 digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.1%}" if abs(value) < 10 else f"{value * 100:.3g}%"


def readable_drop(value: Optional[float]) -> str:
    """A relative drop as a percentage, or 'from ~0' where it means nothing (probe.meaningful_drop: a term that
    starts near 0, whose losses in units, beside it, say what happened)."""
    if value is not None and math.isfinite(value) and meaningful_drop(value) is None:
        return "from ~0"
    return percent(value)


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
        row = [term_text(check["term"]), status, f"{number(check['loss_start'])} -> {number(check['loss_end'])}",
               readable_drop(check["relative_drop"])]
        if combined:
            situation = (summary.get("situations") or {}).get(check["term"]) or {}
            row += [number(situation.get("combined")), readable_drop(check.get("combined_relative_drop")),
                    safe(situation.get("name") or "")]
        rows.append(row)
    header = ["term", "check", "loss start -> end", "drop alone"] + (
        ["end combined", "drop combined", "situation"] if combined else [])
    on = (summary.get("outcome") or {}).get("on", "probe")
    count = checks[0].get("probe_batches") or config.get("probe_batches")
    lines = ["", f"single-term checks: each term trained alone (weight 1) from the run's start for "
                 f"{config.get('check_steps')} steps; start and end: its mean on {count} {on} batches fixed at the "
                 f"start"]
    lines += _table(header, rows)
    lines.append(f"pass: a drop beyond {number(config.get('check_noise_z'))} noise standard errors (below "
                 f"{percent(config.get('check_min_drop'))}: slow); not-decreasing: a drop of "
                 f"{percent(config.get('check_min_drop'))} ruled out by the noise; diverging: a rise of "
                 f"{percent(config.get('check_max_rise'))} or more beyond the noise")
    if combined:
        lines.append(f"situation, from the end losses after as many steps under the weights in force (clearly: beyond "
                     f"{number(config.get('check_noise_z'))} noise standard errors): starved: goes down alone, ends "
                     f"clearly worse combined and makes at most {number(config.get('starved_ratio'))} of its alone gain; "
                     f"behind: ends clearly worse combined than alone; opposed: ends clearly above its start combined; "
                     f"needs-others: goes down only combined; stalled: neither")
    lines += [f"  {quoted_term(c['term'])} skipped: {safe(c['reason'])}" for c in checks if c["status"] == "skipped"]
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
        rows.append([term_text(term), number(row["weight"]),
                     f"{number(row['loss_first'])} -> {number(row['loss_last'])}",
                     number(row["grad_norm"]), number(row["weighted_grad_norm"]), number(row["share"], 3),
                     number(row.get("recommended_weight"), 3)])
    lines += _table(["term", "weight", "loss first -> last", "grad norm", "weighted", "share", "recommended"],
                    rows)
    lines += ["", f"share: of the weighted gradient on shared parameters, median over the recorded steps; "
                  f"dominance threshold {number(summary['dominance_threshold'])}"]
    lines += findings_lines(summary)
    lines += checks_lines(summary)
    if summary["conflict"]:
        lines += ["", f"conflict (median cosine of gradients on shared parameters; "
                      f"threshold {number(summary['conflict_threshold'])})"]
        for pair in summary["conflict"]:
            a, b = (term_text(t) for t in pair["terms"])
            lines.append(f"  {a} vs {b}: cosine {number(pair['cosine_median'], 3)}, "
                         f"negative on {percent(pair['negative_fraction'])} of steps")
    lines += advice_lines(summary, model_path)
    if out:
        lines += ["", f"outputs in {safe(out)}/"]
    return plain(lines)
