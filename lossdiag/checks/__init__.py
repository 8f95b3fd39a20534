"""Checks: gradient sanity from the records, each term trained alone, and the terms' situations."""
from lossdiag.checks.sanity import balance_view, broken_terms, sanity_findings
from lossdiag.checks.single_term import check_findings
from lossdiag.checks.starved import TermProgress, progress, situation_findings

__all__ = ["TermProgress", "balance_view", "broken_terms", "check_findings", "progress", "sanity_findings",
           "situation_findings"]
