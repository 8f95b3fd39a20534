"""The driver of the one rule for any trainer: give it a function that runs weightings from the same start.

`find_weights_with` runs the weights in force and each term alone, then the candidates the rule asks for
(`Recommendation.pending`), until it decides. The profile drives the same `decide` over its records; the
Lightning and Hugging Face `find_weights` drive it with runs from a snapshot of the trainer's state.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

from lossdiag.advise.outcome import RunEnd, change
from lossdiag.advise.recommend import resolve_targets
from lossdiag.advise.rule import PROBE, Evidence, Recommendation, decide
from lossdiag.config import Config

RunMany = Callable[[Sequence[Mapping[str, float]]], Sequence[RunEnd]]


def alone_weights(terms: Sequence[str], term: str) -> dict[str, float]:
    """`term` at weight 1 and every other term at 0: the term trained alone."""
    return {t: float(t == term) for t in terms}


def learners(terms: Sequence[str], start: Sequence[Mapping[str, float]], alone: Mapping[str, RunEnd],
             config: Config) -> list[str]:
    """The terms that clearly go down trained alone: the ones share balancing may raise."""
    return [t for t in terms if t in alone and change(alone[t].end, start, t).clear(config.check_noise_z) < 0]


def find_weights_with(run: RunMany, terms: Sequence[str], weights: Mapping[str, float],
                      start: Sequence[Mapping[str, float]], shares: Mapping[str, float],
                      dominant: Optional[str] = None, config: Optional[Config] = None,
                      main: Sequence[str] = (), on: str = PROBE) -> Recommendation:
    """Decide keep / reweight / trade-off by runs from the same start, made by `run`.

    `run(weightings)` trains a fresh copy from the same start (same state, batches, optimizer and steps) once per
    weighting (in parallel where it can) and returns, in the same order, each run's RunEnd: each term's loss on
    each evaluation batch at the run's end. `start` is each term's loss on those batches before training;
    `shares` each term's share of the weighted gradient on shared parameters under `weights` (terms that reach no
    shared parameter left out), `dominant` the term past the dominance threshold; `on` says what the evaluation
    batches are ("validation" or "probe").
    """
    config = config or Config()
    terms = list(terms)
    first = list(run([dict(weights), *(alone_weights(terms, t) for t in terms)]))
    in_force, alone = first[0], dict(zip(terms, first[1:]))
    targets = resolve_targets(learners([t for t in terms if t in shares], start, alone, config),
                              config.target_shares)
    evidence = Evidence(terms=terms, weights=dict(weights), on=on, start=[dict(b) for b in start], in_force=in_force,
                        alone=alone, candidates=[], shares=dict(shares), dominant=dominant, targets=targets,
                        main=list(main or config.main or []), user_targets=bool(config.target_shares))
    decision = decide(evidence, config)
    while decision.pending:
        evidence = dataclasses.replace(evidence, candidates=[*evidence.candidates, *run(decision.pending)])
        decision = decide(evidence, config)
    return decision
