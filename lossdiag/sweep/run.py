"""A whole sweep: profile for the centre, fix the start and the probe, plan the grid, run it, stream the records.

Order of work: a short profile (the suggestion the grid is centred on); validate(model) once on the start, so a
broken validate or an unknown --metric fails before the long part; each term trained alone (the yardstick of
the no-term-left-behind criterion); then the grid. Every finished run is appended to sweep_records.jsonl and
flushed at once.
"""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from lossdiag.config import Config
from lossdiag.advise.diagnose import diagnose
from lossdiag.train.loop import TrainingRun, ensure_steps, initial_state, start_training, with_model_targets
from lossdiag.train.progress import Progress
from lossdiag.record.schema import run_header
from lossdiag.record.stream import RecordWriter
from lossdiag.train.rng import preserved_rng
from lossdiag.train.spec import ModelSpec, check_main
from lossdiag.sweep.grid import Candidate, alpha_of, candidates
from lossdiag.train.jobs import Bench, Job, default_jobs, probe_for, run_all
from lossdiag.train.metrics import check_metric, evaluate
from lossdiag.sweep.records import ALONE, END, HEADER, POINT


def estimate_line(first_seconds: float, remaining: int, processes: int) -> str:
    """What is left and about how long it takes, from the first finished run."""
    left = math.ceil(remaining / processes) * first_seconds
    when = f"about {left:.0f} s left" if left >= 1 else "under a second left"
    return f"sweep: the first run took {first_seconds:.1f} s; {remaining} more, {processes} at a time: {when}"


def _jobs(terms: list[str], plan: list[Candidate]) -> list[Job]:
    """The runs in the order they start: the point under the weights in force first, so that a sweep killed part-way
    still holds the run every other point is judged against, then each term alone, then the other points."""
    alone = [Job(ALONE, k, {t: float(t == term) for t in terms}, {"term": term}) for k, term in enumerate(terms)]
    points = [Job(POINT, k, c.weights, {key: v for key, v in c.to_dict().items() if key != "weights"})
              for k, c in enumerate(plan)]
    current = [job for job, c in zip(points, plan) if c.current]
    return current + alone + [job for job, c in zip(points, plan) if not c.current]


def _centre(spec: ModelSpec, config: Config, start: dict, enabled: bool) -> tuple[dict, dict]:
    """A profile from the start under the weights in force: the weights in force and the suggested weights."""
    bar = Progress(config.steps, "profiling for the sweep's centre", enabled)
    try:
        records = TrainingRun(spec, config, config.weights, start).record(None, bar)
    finally:
        bar.close()
    diagnosis = diagnose(records)
    return diagnosis.current_weights, diagnosis.suggestion.weights


def run_sweep(spec: ModelSpec, config: Config, model_path: Optional[str] = None,
              progress: Optional[bool] = None, say: Optional[Callable[[str], None]] = None,
              records_path: Optional[Path] = None) -> list[dict]:
    """Run the sweep and return its records (streamed to `records_path` when given).

    `model_path` lets worker processes load the model file themselves (--jobs); `say` receives the time
    estimate (default: printed above the progress bar, so on a terminal only).
    """
    ensure_steps(config)
    config = with_model_targets(spec, config)
    enabled = sys.stderr.isatty() if progress is None else progress
    writer: Optional[RecordWriter] = None
    records: list[dict] = []

    def keep(record: dict) -> None:
        records.append(record)
        if writer is not None:
            writer.write(record)
            writer.flush()

    bar: Optional[Progress] = None
    try:
        with preserved_rng(), tempfile.TemporaryDirectory(prefix="lossdiag-sweep-") as scratch:
            start = initial_state(spec, config)
            current, suggested = _centre(spec, config, start, enabled)
            terms = list(current)
            check_main(spec, config.main, terms)
            plan = candidates(terms, suggested, current, config.points)
            probe = probe_for(spec, config)
            model = start_training(spec, config, start)[0]
            names = list(evaluate(spec, model, config.seed, None, config.metric)) if spec.validate else None
            check_metric(spec, config.metric, names)
            jobs = _jobs(terms, plan)
            processes = default_jobs(config, model_path, len(jobs))
            writer = RecordWriter(records_path) if records_path is not None else None
            keep(run_header(spec.source, terms, current, config, kind=HEADER, suggested=suggested,
                            suggested_alpha=alpha_of(suggested, terms) if len(terms) == 2 else None,
                            plan=[c.to_dict() for c in plan], jobs=processes,
                            probe={"batches": len(probe.batches), "on": probe.on, "start": probe.evaluate(spec, model),
                                   "start_batches": probe.evaluate_batches(spec, model)},
                            start_metrics=evaluate(spec, model, config.seed, names, config.metric) if names else None))
            bench = Bench(spec, config, start, probe, names)
            for done, record in enumerate(run_all(bench, jobs, processes, model_path, Path(scratch)), start=1):
                keep(record)
                if done == 1:
                    bar = Progress(len(jobs) * config.sweep_steps, "sweep", enabled)
                    (say or bar.note)(estimate_line(record["seconds"], len(jobs) - 1, processes))
                if bar is not None:
                    bar.update(config.sweep_steps)
            keep({"kind": END, "step": len(plan), "runs": len(jobs)})
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return records
