"""The profile's runs from the same start as jobs of lossdiag.sweep.jobs: each term alone (the single-term checks),
the run under the weights in force and each candidate, in worker processes where cores allow.

Records come back in the jobs' order and do not depend on how many processes ran them (see lossdiag.sweep.jobs).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from lossdiag.advise.runs import run_record, train_under
from lossdiag.advise.shares import term_shares
from lossdiag.checks.single_term import check_record, skipped_record
from lossdiag.progress import Progress
from lossdiag.sweep.jobs import Bench, Job, Workers

CHECK, PROGRESS, VERIFY = "check", "progress", "verify"


def profile_job(bench: Bench, job: Job) -> dict:
    """One run of check_steps from the start: a `check` record (a term alone) or a measured run's record (its
    progress, and its shares at the end)."""
    run = train_under(bench.spec, bench.config, bench.start, job.weights, bench.probe, bench.config.check_steps)
    if job.kind == CHECK:
        return check_record(job.index, job.describe["term"], run, bench.config)
    raw, applied = term_shares(bench.spec, run.model, run.optimizer, bench.probe, job.weights)
    return run_record(job.kind, job.index, run, shares=raw, applied_shares=applied)


def check_jobs(terms: Sequence[str], skip: Mapping[str, str]) -> list[Job]:
    """Each term that can be trained alone, at weight 1 with every other term at 0."""
    return [Job(CHECK, index, {name: float(name == term) for name in terms}, {"term": term})
            for index, term in enumerate(terms) if term not in skip]


def check_records(terms: Sequence[str], skip: Mapping[str, str], done: Sequence[dict]) -> list[dict]:
    """The `check` records in the terms' order: the finished ones, and the skipped terms with their reason."""
    finished = {record["term"]: record for record in done}
    return [skipped_record(index, term, skip[term]) if term in skip else finished[term]
            for index, term in enumerate(terms)]


def run_jobs(workers: Workers, jobs: Sequence[Job], progress: Optional[Progress] = None) -> list[dict]:
    """Every job's record, in the jobs' order; the progress bar moves as each run finishes."""
    found = {}
    for record in workers.run(jobs, profile_job):
        found[(record["kind"], record["step"])] = record
        if progress is not None:
            progress.update(workers.bench.config.check_steps)
    return [found[(job.kind, job.index)] for job in jobs]
