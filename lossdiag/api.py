"""The Python API (CONTRACT section 6): lossdiag.profile(...) and the result it returns."""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from lossdiag.advise.from_start import candidate_jobs, check_slots, in_force, run_round
from lossdiag.analyse.run import parse
from lossdiag.checks import broken_terms
from lossdiag.config import Config, load
from lossdiag.advise.diagnose import CHECK, Diagnosis, diagnose
from lossdiag.checks.findings import Finding
from lossdiag.train.loop import TrainingRun, ensure_steps, initial_state, start_training, with_model_targets
from lossdiag.train.progress import Progress
from lossdiag.record.stream import RECORDS, RecordWriter
from lossdiag.report.outputs import Staging, keep_records, publish, write_outputs
from lossdiag.train.rng import preserved_rng
from lossdiag.train.spec import ModelSpec, check_main, compute_terms, load_model_file, spec_from_objects, to_device
from lossdiag.report.summary import build_summary
from lossdiag.train.jobs import Workers, default_jobs



EXPECTED_CANDIDATES = 4
ONE_TERM = ("one term: there is nothing to balance, so only the gradient sanity and single-term checks ran "
            "(as `lossdiag check`)")


@dataclasses.dataclass
class ProfileResult:
    """A finished profile: its records, its diagnosis and the summary.json content."""

    records: list[dict]
    diagnosis: Diagnosis
    summary: dict

    @property
    def findings(self) -> list[Finding]:
        return self.diagnosis.findings

    def save(self, out: str | Path) -> Path:
        """Write records.jsonl, summary.json and the report into a folder, replacing lossdiag's earlier outputs
        there only once all are written."""
        write_outputs(out, self.diagnosis, self.summary, self.records)
        return Path(out)

    def _repr_html_(self) -> str:
        """In Jupyter: the verdict, the suggestion, the findings and the figures, inline with scoped CSS."""
        from lossdiag.report.html import fragment

        return fragment(self.diagnosis, self.summary)


def _spec(model: Any, batches: Any, losses: Any, weights: Any, make_optimizer: Any,
          validation_batches: Any) -> tuple[ModelSpec, Optional[Path]]:
    from lossdiag.errors import SpecError

    if isinstance(model, (str, Path)):
        if validation_batches is not None:
            raise SpecError("profile(model_file, validation_batches=...): a model file gives its held-out batches "
                            "as validation_batches() in the file")
        return load_model_file(model), Path(model)
    if batches is None or losses is None:
        raise SpecError("profile(model, batches, losses): pass a model file's path, or all three objects")
    return spec_from_objects(model, batches, losses, weights, make_optimizer, validation_batches), None


def profile(model: Any, batches: Any = None, losses: Optional[Callable] = None, *,
            weights: Optional[Mapping[str, float]] = None,
            make_optimizer: Optional[Callable[[Iterable], Any]] = None,
            validation_batches: Any = None,
            config: Optional[str | Path] = None, progress: Optional[bool] = None,
            **options: Any) -> ProfileResult:
    """Profile a model file, or (model, batches, losses) objects, and return the diagnosis.

    With objects, `validation_batches` (held-out batches, as the model file's validation_batches()) is where every
    run from the start is judged; without it, probe batches drawn from `batches` are.
    Options are the CLI's long options with '_' for '-' (steps=200, every=1, refine=1, out='dir', ...). A model
    file given with jobs=N runs its runs from the same start N at a time in worker processes (the calling script
    then needs the `if __name__ == "__main__":` guard); without jobs, or for objects, they run in this process.
    Either way each run uses run_threads torch threads, so the figures do not depend on jobs.
    A module passed in is trained on a copy; the caller's model and every RNG state are left as they were.
    """
    with preserved_rng():
        spec, model_path = _spec(model, batches, losses, weights, make_optimizer, validation_batches)
        if weights is not None and model_path is not None:
            options["weights"] = weights
        resolved = load(Path(config) if config else None, model_path, options)
        parallel = str(model_path) if model_path is not None and resolved.jobs is not None else None
        return run_profile(spec, resolved, progress, parallel)


def run_profile(spec: ModelSpec, config: Config, progress: Optional[bool] = None,
                model_path: Optional[str] = None) -> ProfileResult:
    """Record the main run, refine the suggestion, run the checks, recommend weights and verify them, and diagnose;
    with config.out, records stream into a staging folder inside it, swapped in with the report only when the run
    succeeds (kept and named if it fails). `model_path` lets worker processes load the model file themselves and
    run the runs from the same start in parallel: config.jobs of them, started before the recorded run so they load
    while it trains; by default one per core, started after it when its steps say the runs are worth it."""
    ensure_steps(config)
    config = with_model_targets(spec, config)
    bar = Progress(config.steps * (1 + config.refine), "profiling", progress)
    staging: Optional[Staging] = None
    writer = None
    try:
        with preserved_rng(), tempfile.TemporaryDirectory(prefix="lossdiag-profile-") as scratch:
            start = initial_state(spec, config)
            names = term_names(spec, config, start)
            check_main(spec, config.main, names)
            if len(names) < 2:
                return run_check(spec, config, progress, ONE_TERM, model_path)
            runs = runs_from_start(config, len(names))
            with Workers(spec, config, start, model_path, Path(scratch)) as workers:
                if config.jobs is not None:
                    workers.start_workers(default_jobs(config, model_path, runs))
                staging = Staging(config.out) if config.out else None
                writer = RecordWriter(staging.path / RECORDS) if staging is not None else None
                cpu = time.process_time()
                records = TrainingRun(spec, config, config.weights, start).record(writer, bar)
                step_seconds = (time.process_time() - cpu) / config.steps
                diagnosis = diagnose(records)
                for round_number in range(1, config.refine + 1):
                    bar.describe(f"refining ({round_number}/{config.refine})")
                    weights = diagnosis.suggestion.weights
                    trial = diagnose(TrainingRun(spec, config, weights, start).record(None, bar))
                    refine = {"kind": "refine", "step": round_number, "weights": weights,
                              "dominance": trial.dominance.shares, "suggested": trial.suggestion.weights}
                    records.append(refine)
                    if writer is not None:
                        writer.write(refine)
                    diagnosis = diagnose(records)
                bar.close()
                if runs:
                    expected = step_seconds * config.check_steps * (len(names) + 1 + EXPECTED_CANDIDATES)
                    workers.start_workers(default_jobs(config, model_path, runs, expected))
                records, diagnosis = advise(workers, records, writer, progress)
    except BaseException as exc:
        if writer is not None:
            writer.close()
        keep_records(staging, exc)
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    result = ProfileResult(records, diagnosis, build_summary(diagnosis))
    if staging is not None:
        publish(staging, diagnosis, result.summary)
    return result


def runs_from_start(config: Config, terms: int) -> int:
    """How many runs from the same start a round can hold: each term alone and the weights in force, or a round of
    candidates; 0 when the profile runs none."""
    if config.check_steps == 0 or (config.no_checks and config.no_verify):
        return 0
    return max(terms + 1, EXPECTED_CANDIDATES)


def term_names(spec: ModelSpec, config: Config, start: dict) -> list[str]:
    """The terms losses(model, batch) returns, from the first batch, before any training."""
    model, _, stream, device = start_training(spec, config, start)
    return list(compute_terms(spec, model, to_device(next(stream), device), None, " at step 0"))



def advise(workers: Workers, records: list[dict], writer: Optional[RecordWriter],
           progress: Optional[bool] = None) -> tuple[list[dict], Diagnosis]:
    """The checks and the run under the weights in force (one round), then the rounds of candidates the
    recommendation asks to verify; each record streams as soon as every one before it in its round is known."""
    config = workers.config

    def add(new: Iterable[dict]) -> Diagnosis:
        for record in new:
            records.append(record)
            if writer is not None:
                writer.write(record)
        return diagnose(records)

    if config.check_steps == 0 or (config.no_checks and config.no_verify):
        return records, diagnose(records)
    terms = list(records[0]["terms"])
    checks = [] if config.no_checks else check_slots(terms, broken_terms(parse(records)))
    runs = len(checks) + 1 + (0 if config.no_verify else EXPECTED_CANDIDATES + config.verify_rounds)
    bar = Progress(runs * config.check_steps, "checks and verification", progress)
    try:
        diagnosis = add(run_round(workers, [*checks, in_force(records[0]["weights"])], bar))
        number = 0
        while diagnosis.recommendation.pending and not config.no_verify:
            jobs = candidate_jobs(number + 1, diagnosis.recommendation.pending)
            number += len(jobs)
            diagnosis = add(run_round(workers, jobs, bar))
    finally:
        bar.close()
    return records, diagnosis


def run_check(spec: ModelSpec, config: Config, progress: Optional[bool] = None,
              note: Optional[str] = None, model_path: Optional[str] = None) -> ProfileResult:
    """`lossdiag check`: a short recorded run (sanity_steps) for the gradient sanity checks, then each term alone
    (in worker processes, as a profile's, when `model_path` is given).

    Only the sanity and single-term findings are reported; the checks run even when no_checks is set. `note`
    says why a profile ran as a check (one term: nothing to balance) and leads the verdict.
    """
    sanity = dataclasses.replace(config, steps=config.sanity_steps, every=1)
    bar = Progress(sanity.steps, "gradient sanity", progress)
    try:
        with preserved_rng(), tempfile.TemporaryDirectory(prefix="lossdiag-check-") as scratch:
            start = initial_state(spec, sanity)
            cpu = time.process_time()
            records = TrainingRun(spec, sanity, config.weights, start).record(None, bar)
            step_seconds = (time.process_time() - cpu) / sanity.steps
            bar.close()
            terms = list(records[0]["terms"])
            records[0]["purpose"] = CHECK
            if note:
                records[0]["note"] = note
            if sanity.check_steps:
                bar = Progress(len(terms) * sanity.check_steps, "single-term checks", progress)
                with Workers(spec, sanity, start, model_path, Path(scratch)) as workers:
                    expected = step_seconds * sanity.check_steps * len(terms)
                    workers.start_workers(default_jobs(sanity, model_path, len(terms), expected))
                    records.extend(run_round(workers, check_slots(terms, broken_terms(parse(records))), bar))
    finally:
        bar.close()
    diagnosis = diagnose(records)
    result = ProfileResult(records, diagnosis, build_summary(diagnosis))
    if config.out:
        result.save(config.out)
    return result
