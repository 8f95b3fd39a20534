"""The profile's runs from the same start as jobs for the sweep's workers (lossdiag.train.jobs): each term alone
(the single-term checks), the run under the weights in force and each candidate, in worker processes where cores
allow.

Records come back in the jobs' order, and their figures do not depend on how many processes ran them (see
lossdiag.train.jobs).
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence, Union

from lossdiag.train.runs import run_record, train_under
from lossdiag.advise.shares import term_shares
from lossdiag.checks.single_term import check_record, skipped_record
from lossdiag.train.progress import Progress
from lossdiag.train.jobs import Bench, Job, Workers

CHECK, PROGRESS, VERIFY = "check", "progress", "verify"
Slot = Union[Job, dict]
"""A run to do, or a record already known (a check skipped with its reason)."""


def profile_job(bench: Bench, job: Job) -> dict:
    """One run of check_steps from the start: a `check` record (a term alone) or a measured run's record (its
    progress, and its shares at the end)."""
    run = train_under(bench.spec, bench.config, bench.start, job.weights, bench.probe, bench.config.check_steps)
    if job.kind == CHECK:
        return check_record(job.index, job.describe["term"], run, bench.config)
    raw, applied = term_shares(bench.spec, run.model, run.optimizer, bench.probe, job.weights)
    return run_record(job.kind, job.index, run, shares=raw, applied_shares=applied)


def check_slots(terms: Sequence[str], skip: Mapping[str, str]) -> list[Slot]:
    """Each term in order: trained alone (weight 1, every other term 0), or its skipped record with the reason."""
    return [skipped_record(index, term, skip[term]) if term in skip
            else Job(CHECK, index, {name: float(name == term) for name in terms}, {"term": term})
            for index, term in enumerate(terms)]


def in_force(weights: Mapping[str, float]) -> Job:
    """The run under the weights in force, every candidate's yardstick."""
    return Job(PROGRESS, 0, dict(weights), {})


def candidate_jobs(first: int, pending: Sequence[Mapping[str, float]]) -> list[Job]:
    """A round of candidates to verify, numbered on from `first`."""
    return [Job(VERIFY, first + k, dict(weights), {}) for k, weights in enumerate(pending)]


def run_round(workers: Workers, slots: Sequence[Slot], progress: Optional[Progress] = None) -> Iterator[dict]:
    """Each slot's record in the slots' order, yielded as soon as every one before it is known, so records stream
    in the same order however many processes run them; the progress bar moves by a run for each."""
    done = workers.run([slot for slot in slots if isinstance(slot, Job)], profile_job)
    for slot in slots:
        record = next(done) if isinstance(slot, Job) else slot
        if progress is not None:
            progress.update(workers.config.check_steps)
        yield record
