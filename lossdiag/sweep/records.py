"""sweep_records.jsonl: a header, one line per run as it finishes, an end line; and what a folder of them says.

A sweep killed half-way keeps every point that finished; `SweepData.from_records` builds the same plain data
(and sweep.json) from a finished or a partial file, so `lossdiag report` rebuilds the page from it.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from lossdiag.config import FIELDS, Config
from lossdiag.record.kinds import SweepKind
from lossdiag.record.schema import SWEEP_FIELDS, SWEEP_REQUIRED, valid
from lossdiag.sweep.choose import Choice, by_metric, by_rule, pareto

HEADER, POINT, ALONE, END = SweepKind


def rule_config(recorded: dict) -> Config:
    """The thresholds the sweep was run with, as the rule reads them (keys this version lacks are ignored)."""
    return dataclasses.replace(Config(), **{k: v for k, v in recorded.items() if k in FIELDS})


@dataclasses.dataclass(frozen=True)
class SweepData:
    """A sweep's points (in grid order, finished ones only), the alone runs, the front and the recommendation."""

    meta: dict
    points: list[dict]
    alone: dict[str, Optional[float]]
    pareto: list[int]
    choice: Choice
    ended: bool
    torn: bool
    repairs: tuple[str, ...] = ()

    @property
    def terms(self) -> list[str]:
        return list(self.meta["terms"])

    @property
    def metric(self) -> Optional[str]:
        return self.meta["config"].get("metric")

    @property
    def recommended(self) -> Optional[dict]:
        return self.points[self.choice.index] if self.choice.index is not None else None

    @property
    def planned(self) -> int:
        return len(self.meta["plan"])

    @classmethod
    def from_records(cls, records: Sequence[dict], torn: bool = False) -> "SweepData":
        """Read a sweep's records, checked field by field (a record of the wrong shape is dropped and said in
        `repairs`); raises ValueError when they do not start with a usable sweep header."""
        records, repairs = valid(records, HEADER, SWEEP_FIELDS, SWEEP_REQUIRED)
        meta = records[0]
        terms = list(meta["terms"])
        points = sorted((r for r in records if r.get("kind") == POINT), key=lambda r: r["step"])
        alone = {t: None for t in terms}
        alone.update({r["term"]: r["progress"].get(r["term"]) for r in records if r.get("kind") == ALONE})
        progress = [p["progress"] for p in points]
        config = meta["config"]
        if config.get("metric"):
            choice = by_metric([p["metrics"] for p in points], config["metric"])
        else:
            ends = {r["term"]: r.get("end_batches") for r in records if r.get("kind") == ALONE}
            choice = by_rule(points, ends, meta["probe"].get("start_batches") or [], terms, rule_config(config))
        ended = any(r.get("kind") == END for r in records)
        return cls(meta, points, alone, pareto(progress, terms), choice, ended, torn, tuple(repairs))

    def to_json(self) -> dict:
        """sweep.json (CONTRACT section 7), plus the header's context: what was swept, from where, and how."""
        points = [{key: p.get(key) for key in ("weights", "alpha", "progress", "final", "metrics", "scaled",
                                                "factor", "current", "seconds")} for p in self.points]
        for point, score in zip(points, self.choice.scores):
            point["score"] = score
        meta = self.meta
        return {"lossdiag_version": meta["lossdiag_version"], "source": meta["source"], "terms": self.terms,
                "weights_in_force": meta["weights"], "suggested_weights": meta["suggested"],
                "sweep_steps": meta["config"]["sweep_steps"], "seed": meta["config"]["seed"],
                "metric": self.metric, "probe": meta["probe"], "alone": self.alone, "points": points,
                "pareto": self.pareto, "recommended": self.choice.index, "criterion": self.choice.criterion,
                "planned_points": self.planned, "complete": self.ended and len(self.points) == self.planned,
                "ended_early": not self.ended and len(self.points) < self.planned, "kept": self.choice.kept,
                **({"record_repairs": list(self.repairs)} if self.repairs else {})}
