"""The Python API (CONTRACT section 6): lossdiag.profile(...) and the result it returns."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from lossdiag.advise.probe import Probe, evaluation_probe
from lossdiag.advise.runs import run_record, train_under
from lossdiag.advise.shares import term_shares
from lossdiag.analyse.run import parse
from lossdiag.checks import broken_terms, single_term_records
from lossdiag.config import Config, load
from lossdiag.advise.diagnose import CHECK, Diagnosis, diagnose
from lossdiag.checks.findings import Finding
from lossdiag.train.loop import TrainingRun, device_of, ensure_steps, initial_state, start_training, with_model_targets
from lossdiag.train.progress import Progress
from lossdiag.record.stream import RECORDS, RecordWriter
from lossdiag.report.outputs import Staging, keep_records, publish, write_outputs
from lossdiag.train.rng import preserved_rng
from lossdiag.train.spec import ModelSpec, check_main, compute_terms, load_model_file, spec_from_objects, to_device
from lossdiag.report.summary import build_summary



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
    Options are the CLI's long options with '_' for '-' (steps=200, every=1, refine=1, out='dir', ...).
    A module passed in is trained on a copy; the caller's model and every RNG state are left as they were.
    """
    with preserved_rng():
        spec, model_path = _spec(model, batches, losses, weights, make_optimizer, validation_batches)
        if weights is not None and model_path is not None:
            options["weights"] = weights
        resolved = load(Path(config) if config else None, model_path, options)
        return run_profile(spec, resolved, progress)


def run_profile(spec: ModelSpec, config: Config, progress: Optional[bool] = None) -> ProfileResult:
    """Record the main run, refine the suggestion, run the checks, recommend weights and verify them, and diagnose;
    with config.out, records stream into a staging folder inside it, swapped in with the report only when the run
    succeeds (kept and named if it fails)."""
    ensure_steps(config)
    config = with_model_targets(spec, config)
    bar = Progress(config.steps * (1 + config.refine), "profiling", progress)
    staging: Optional[Staging] = None
    writer = None
    try:
        with preserved_rng():
            start = initial_state(spec, config)
            names = term_names(spec, config, start)
            check_main(spec, config.main, names)
            if len(names) < 2:
                return run_check(spec, config, progress, ONE_TERM)
            staging = Staging(config.out) if config.out else None
            writer = RecordWriter(staging.path / RECORDS) if staging is not None else None
            records = TrainingRun(spec, config, config.weights, start).record(writer, bar)
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
            records, diagnosis = advise(spec, config, start, records, writer, progress)
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


def term_names(spec: ModelSpec, config: Config, start: dict) -> list[str]:
    """The terms losses(model, batch) returns, from the first batch, before any training."""
    model, _, stream, device = start_training(spec, config, start)
    return list(compute_terms(spec, model, to_device(next(stream), device), None, " at step 0"))



def single_term_checks(spec: ModelSpec, config: Config, start: dict, records: list[dict], probe: Probe,
                       progress: Optional[bool] = None) -> list[dict]:
    """Train each term alone from the run's start; a term whose gradient cannot train it is skipped with the reason."""
    if config.check_steps == 0:
        return []
    terms = list(records[0]["terms"])
    bar = Progress(len(terms) * config.check_steps, "single-term checks", progress)
    try:
        return single_term_records(spec, config, start, terms, broken_terms(parse(records)), probe, bar)
    finally:
        bar.close()


def measured_run(kind: str, step: int, spec: ModelSpec, config: Config, start: dict, weights: dict[str, float],
                 probe: Probe, bar: Progress) -> dict:
    """A run from the start under `weights` for check_steps: its progress, and its shares at the end."""
    run = train_under(spec, config, start, weights, probe, config.check_steps, bar)
    raw, applied = term_shares(spec, run.model, run.optimizer, probe, weights)
    return run_record(kind, step, run, shares=raw, applied_shares=applied)


def advise(spec: ModelSpec, config: Config, start: dict, records: list[dict], writer: Optional[RecordWriter],
           progress: Optional[bool] = None) -> tuple[list[dict], Diagnosis]:
    """The checks, a run under the weights in force, and the verification rounds the recommendation asks for."""
    def add(new: list[dict]) -> Diagnosis:
        records.extend(new)
        if writer is not None:
            writer.write_many(new)
        return diagnose(records)

    if config.check_steps == 0 or (config.no_checks and config.no_verify):
        return records, diagnose(records)
    probe = evaluation_probe(spec, config.probe_batches, config.seed, device_of(config))
    if not config.no_checks:
        add(single_term_checks(spec, config, start, records, probe, progress))
    runs = 1 + (0 if config.no_verify else EXPECTED_CANDIDATES + config.verify_rounds)
    bar = Progress(runs * config.check_steps, "verifying", progress)
    try:
        diagnosis = add([measured_run("progress", 0, spec, config, start, dict(records[0]["weights"]), probe, bar)])
        number = 0
        while diagnosis.recommendation.pending and not config.no_verify:
            found = []
            for weights in diagnosis.recommendation.pending:
                number += 1
                found.append(measured_run("verify", number, spec, config, start, weights, probe, bar))
            diagnosis = add(found)
    finally:
        bar.close()
    return records, diagnosis


def run_check(spec: ModelSpec, config: Config, progress: Optional[bool] = None,
              note: Optional[str] = None) -> ProfileResult:
    """`lossdiag check`: a short recorded run (sanity_steps) for the gradient sanity checks, then each term alone.

    Only the sanity and single-term findings are reported; the checks run even when no_checks is set. `note`
    says why a profile ran as a check (one term: nothing to balance) and leads the verdict.
    """
    sanity = dataclasses.replace(config, steps=config.sanity_steps, every=1)
    bar = Progress(sanity.steps, "gradient sanity", progress)
    try:
        with preserved_rng():
            start = initial_state(spec, sanity)
            records = TrainingRun(spec, sanity, config.weights, start).record(None, bar)
            bar.close()
            records[0]["purpose"] = CHECK
            if note:
                records[0]["note"] = note
            probe = evaluation_probe(spec, sanity.probe_batches, sanity.seed, device_of(sanity))
            records.extend(single_term_checks(spec, sanity, start, records, probe, progress))
    finally:
        bar.close()
    diagnosis = diagnose(records)
    result = ProfileResult(records, diagnosis, build_summary(diagnosis))
    if config.out:
        result.save(config.out)
    return result
