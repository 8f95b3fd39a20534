"""Runs from the same start, in this process or in worker processes: a sweep's points, and the profile's checks and
candidates (lossdiag.advise.from_start).

Each run trains a fresh model from the profile's start (lossdiag.train.runs), measures each term's progress on
the probe batches and, for a sweep point of a model file that has one, calls validate(model). Results do not
depend on how many processes ran them: every process seeds the same way, rebuilds the same probe, loads the same
start and runs each run on config.run_threads torch threads, wherever it runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from lossdiag.train.probe import Probe, evaluation_probe
from lossdiag.train.runs import train_under
from lossdiag.config import Config
from lossdiag.train.loop import device_of
from lossdiag.train.spec import ModelSpec, load_model_file
from lossdiag.train.metrics import evaluate

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


Work = Callable[[Bench, Job], dict]


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


PARALLEL_SECONDS = 10.0
"""The runs' estimated time in one process from which workers start by default: below it, starting them (each
imports torch and loads the model file, seconds of CPU) costs more than it saves."""


def default_jobs(config: Config, model_path: Optional[str], runs: int, seconds: Optional[float] = None) -> int:
    """--jobs, else every core (at most `runs`) for a model file on the CPU whose runs, where their time in one
    process is estimated (`seconds`), take long enough to repay starting workers; objects from a notebook and
    devices run in-process."""
    if model_path is None:
        return 1
    if config.jobs is not None:
        return max(1, min(config.jobs, runs))
    if config.device or (seconds is not None and seconds < PARALLEL_SECONDS):
        return 1
    return max(1, min(available_cores(), runs))


@contextlib.contextmanager
def run_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for one run, and restored after: a run's figures depend on how
    many threads summed its reductions, so every run from the same start uses the same number in any process."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def probe_for(spec: ModelSpec, config: Config) -> Probe:
    """The evaluation batches every run of a sweep is scored on: validation_batches() when the model file has it,
    else probe_batches probe batches, as the profile uses."""
    return evaluation_probe(spec, config.probe_batches, config.seed, device_of(config))


_BENCH: Optional[Bench] = None
_FAILED: Optional[BaseException] = None


def _watch_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed), instead of computing for nobody."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _start_worker(model_path: str, config: Config, start_file: str, metric_names: Optional[list[str]],
                  parent: int) -> None:
    """Load the model file, the start and the probe once per worker; a failure is raised by the first job it gets
    (an initializer that raises would only be restarted by the pool, forever)."""
    global _BENCH, _FAILED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(config.run_threads)
    try:
        spec = load_model_file(model_path)
        _BENCH = Bench(spec, config, torch.load(start_file, weights_only=True), probe_for(spec, config),
                       metric_names)
    except Exception as exc:  # noqa: BLE001 - handed to the parent with the first job
        _FAILED = exc


def _work(work: Work, job: Job) -> dict:
    if _FAILED is not None:
        raise _FAILED
    assert _BENCH is not None, "worker used before _start_worker"
    return work(_BENCH, job)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored while workers are started, so they inherit it ignored from their first instruction: a Ctrl-C
    at the terminal reaches the whole process group, and a worker still importing torch would print a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


class Workers:
    """Runs jobs from one start: in this process, or in spawned workers kept for every batch of jobs once started.

    Workers load the model file themselves as soon as they start, while this process goes on (the profile records
    its run meanwhile when --jobs is given); a usage error in one is raised here. In this process the probe is
    built at the first job (`probe` when given). Every run, here or in a worker, runs on config.run_threads threads.
    """

    def __init__(self, spec: ModelSpec, config: Config, start: dict, model_path: Optional[str], scratch: Path,
                 metric_names: Optional[list[str]] = None, probe: Optional[Probe] = None) -> None:
        self.spec, self.config, self.start, self.metric_names, self.probe = spec, config, start, metric_names, probe
        self.model_path, self.scratch = model_path, scratch
        self.pool = None

    def start_workers(self, processes: int) -> None:
        """Start `processes` workers, from then on every job runs in them; nothing for one process, for objects (no
        model file to load) or when they are already started."""
        if processes <= 1 or self.model_path is None or self.pool is not None:
            return
        start_file = self.scratch / "start.pt"
        torch.save(self.start, start_file)
        context = multiprocessing.get_context("spawn")
        with _interrupts_ignored():
            self.pool = context.Pool(processes, _start_worker, (self.model_path, self.config, str(start_file),
                                                                self.metric_names, os.getpid()))

    def bench(self) -> Bench:
        """What a job run in this process needs: the probe is evaluated from here on."""
        if self.probe is None:
            self.probe = probe_for(self.spec, self.config)
        return Bench(self.spec, self.config, self.start, self.probe, self.metric_names)

    def run(self, jobs: Sequence[Job], work: Work = run_job, ordered: bool = True) -> Iterator[dict]:
        """Yield each job's record (`work(bench, job)`, a module-level function): in the jobs' order, or as each
        finishes when not `ordered`."""
        if self.pool is None:
            for job in jobs:
                with run_threads(self.config.run_threads):
                    record = work(self.bench(), job)
                yield record
            return
        mapped = self.pool.imap if ordered else self.pool.imap_unordered
        yield from mapped(functools.partial(_work, work), jobs, chunksize=1)

    def close(self) -> None:
        """End the workers, finished or not."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_all(bench: Bench, jobs: Sequence[Job], processes: int, model_path: Optional[str],
            scratch: Path) -> Iterator[dict]:
    """Yield each sweep job's record as it finishes: in this process, or in `processes` spawned workers."""
    with Workers(bench.spec, bench.config, bench.start, model_path, scratch, bench.metric_names,
                 bench.probe) as workers:
        workers.start_workers(processes)
        yield from workers.run(jobs, ordered=False)
