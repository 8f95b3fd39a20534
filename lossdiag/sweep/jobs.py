"""One sweep run, and many of them in parallel processes: same start, same batches, same probe in every process.

Each run trains a fresh model from the profile's start (lossdiag.advise.runs), measures each term's progress on
the probe batches and, when the model file has one, calls validate(model). Results do not depend on how many
processes ran them: every process seeds the same way, rebuilds the same probe and loads the same start.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from lossdiag.advise.probe import Probe, evaluation_probe
from lossdiag.advise.runs import train_under
from lossdiag.config import Config
from lossdiag.train.loop import device_of
from lossdiag.train.spec import ModelSpec, load_model_file
from lossdiag.sweep.metrics import evaluate

PARENT_CHECK_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Job:
    """One run to do: a sweep point (its grid index and candidate) or a term trained alone."""

    kind: str
    index: int
    weights: dict[str, float]
    describe: dict


@dataclasses.dataclass(frozen=True)
class Bench:
    """What every run shares: the model spec, the options, the start state and the probe batches."""

    spec: ModelSpec
    config: Config
    start: dict
    probe: Probe
    metric_names: Optional[list[str]]


def run_job(bench: Bench, job: Job) -> dict:
    """Train one run and return its record: weights, progress and final values on the probe, metrics, time."""
    started = time.perf_counter()
    trained = train_under(bench.spec, bench.config, bench.start, job.weights, bench.probe, bench.config.sweep_steps)
    metrics = None
    if job.kind == "point" and bench.spec.validate is not None:
        metrics = evaluate(bench.spec, trained.model, bench.config.seed, bench.metric_names, bench.config.metric)
    return {"kind": job.kind, "step": job.index, **job.describe, "weights": job.weights,
            "progress": trained.progress, "final": trained.after, "end_batches": trained.after_batches,
            "metrics": metrics,
            "noise": trained.noise, "skipped_updates": trained.skipped_updates, "seconds": time.perf_counter() - started}


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def probe_for(spec: ModelSpec, config: Config) -> Probe:
    """The evaluation batches every run of a sweep is scored on: validation_batches() when the model file has it,
    else probe_batches probe batches, as the profile uses."""
    return evaluation_probe(spec, config.probe_batches, config.seed, device_of(config))


_BENCH: Optional[Bench] = None


def _watch_parent(parent: int) -> None:
    """End this worker when the sweep that started it is gone (killed), instead of computing for nobody."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _start_worker(model_path: str, config: Config, start_file: str, metric_names: Optional[list[str]],
                  threads: int, parent: int) -> None:
    global _BENCH
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    spec = load_model_file(model_path)
    _BENCH = Bench(spec, config, torch.load(start_file, weights_only=True), probe_for(spec, config), metric_names)


def _work(job: Job) -> dict:
    assert _BENCH is not None, "worker used before _start_worker"
    return run_job(_BENCH, job)


def run_all(bench: Bench, jobs: Sequence[Job], processes: int, model_path: Optional[str],
            scratch: Path) -> Iterator[dict]:
    """Yield each job's record as it finishes: in this process, or in `processes` spawned workers.

    Workers split the cores between them (torch threads per worker = cores // processes) and load the model
    file themselves; a usage error in one ends the others.
    """
    if processes <= 1 or model_path is None:
        for job in jobs:
            yield run_job(bench, job)
        return
    start_file = scratch / "start.pt"
    torch.save(bench.start, start_file)
    threads = max(1, available_cores() // processes)
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(processes, _start_worker, (model_path, bench.config, str(start_file), bench.metric_names,
                                                   threads, os.getpid()))
    try:
        yield from pool.imap_unordered(_work, jobs, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
