"""The Python API of the sweep (CONTRACT section 7): lossdiag.sweep(...) and the result it returns."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from lossdiag.config import Config, load
from lossdiag.errors import SpecError
from lossdiag.record.stream import SWEEP_RECORDS, finite_or_none
from lossdiag.train.spec import ModelSpec, load_model_file, spec_from_objects
from lossdiag.sweep.records import SweepData
from lossdiag.sweep.run import run_sweep


@dataclasses.dataclass
class SweepResult:
    """A finished (or partial) sweep: its records and what they say."""

    records: list[dict]
    data: SweepData

    @functools.cached_property
    def summary(self) -> dict:
        """The content of sweep.json."""
        return finite_or_none(self.data.to_json())

    @property
    def points(self) -> list[dict]:
        """Every finished point in grid order: weights, alpha, progress, final, metrics, score."""
        return self.summary["points"]

    @property
    def recommended(self) -> Optional[dict]:
        """The recommended point (one of `points`), or None when no point qualifies."""
        index = self.data.choice.index
        return self.points[index] if index is not None else None

    def __repr__(self) -> str:
        chosen = self.recommended
        name = "none" if chosen is None else (f"alpha {chosen['alpha']:.6g}" if chosen["alpha"] is not None
                                              else str(chosen["weights"]))
        return f"<SweepResult: {len(self.points)} points, recommended {name}, by {self.data.choice.criterion}>"

    def save(self, out: str | Path) -> Path:
        """Write sweep_records.jsonl, sweep.json, sweep.png and sweep.html into a folder, replacing lossdiag's
        earlier outputs there only once all are written."""
        from lossdiag.report.sweep_outputs import write_sweep_outputs

        write_sweep_outputs(out, self.summary, self.data.meta["config"], self.records)
        return Path(out)

    def _repr_html_(self) -> str:
        """In Jupyter: the verdict, the line to paste, the table of points and the figure."""
        from lossdiag.report.figures.sweep import sweep_figures
        from lossdiag.report.sweep_html import sweep_fragment

        return sweep_fragment(self.summary, self.data.meta["config"], sweep_figures(self.summary))


def _spec(model: Any, batches: Any, losses: Any, weights: Any, make_optimizer: Any,
          validate: Any) -> tuple[ModelSpec, Optional[str]]:
    if isinstance(model, (str, Path)):
        if validate is not None:
            raise SpecError(f"{model}: validate= goes with objects; a model file defines validate(model) itself")
        return load_model_file(model), str(model)
    if batches is None or losses is None:
        raise SpecError("sweep(model, batches, losses): pass a model file's path, or all three objects")
    if validate is not None and not callable(validate):
        raise SpecError(f"validate must be a function validate(model), got {type(validate).__name__}")
    spec = spec_from_objects(model, batches, losses, weights, make_optimizer)
    return dataclasses.replace(spec, validate=validate), None


def sweep(model: Any, batches: Any = None, losses: Optional[Callable] = None, *,
          weights: Optional[Mapping[str, float]] = None,
          make_optimizer: Optional[Callable[[Iterable], Any]] = None,
          validate: Optional[Callable[[Any], Mapping[str, float]]] = None,
          config: Optional[str | Path] = None, progress: Optional[bool] = None, **options: Any) -> SweepResult:
    """Sweep the weights of a model file, or of (model, batches, losses) objects, and recommend a point.

    Options are the CLI's long options with '_' for '-' (points=9, sweep_steps=200, metric='val_loss',
    jobs=2, out='dir', ...). Objects run in this process (jobs apply to model files only); the caller's
    model and every RNG state are left as they were.
    """
    spec, model_path = _spec(model, batches, losses, weights, make_optimizer, validate)
    if weights is not None and model_path is not None:
        options["weights"] = weights
    resolved = load(Path(config) if config else None, Path(model_path) if model_path else None, options)
    return run_sweep_result(spec, resolved, model_path, progress)


def run_sweep_result(spec: ModelSpec, config: Config, model_path: Optional[str] = None,
                     progress: Optional[bool] = None) -> SweepResult:
    """Run the sweep and return the result; with config.out, records stream into a staging folder inside it,
    swapped in with the page only when the sweep succeeds (kept and named if it fails)."""
    from lossdiag.report.outputs import keep_records
    from lossdiag.report.sweep_outputs import publish_sweep, sweep_staging

    staging = sweep_staging(config.out) if config.out else None
    try:
        records = run_sweep(spec, config, model_path, progress,
                            records_path=staging.path / SWEEP_RECORDS if staging is not None else None)
    except BaseException as exc:
        keep_records(staging, exc)
        raise
    result = SweepResult(records, SweepData.from_records(records))
    if staging is not None:
        publish_sweep(staging, result.summary, result.data.meta["config"])
    return result
