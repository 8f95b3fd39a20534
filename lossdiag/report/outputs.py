"""Everything a run leaves in its output folder: written into a staging folder inside it, swapped in only when the
run succeeds, and never touching a file lossdiag did not write.

Which files lossdiag wrote is kept in the folder's manifest (MANIFEST); a folder an earlier version wrote (no
manifest, a summary.json of lossdiag's) counts its files of lossdiag's names as lossdiag's. A run that fails keeps
its streamed records in the staging folder and says where; with nothing recorded, the staging folder goes.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Collection, Optional, Sequence

from lossdiag.diagnose import Diagnosis
from lossdiag.errors import SpecError
from lossdiag.record.stream import RECORDS
from lossdiag.report.files import summary_json, write_atomic, write_records

SUMMARY = "summary.json"
REPORT = "report.html"
MANIFEST = ".lossdiag-outputs.json"
STAGING_PREFIX = "lossdiag-unfinished-"


def own_names() -> set[str]:
    """The file names a run of lossdiag writes into its output folder."""
    from lossdiag.report.figures import FIGURE_NAMES

    return {RECORDS, SUMMARY, REPORT, *(f"{name}.png" for name in FIGURE_NAMES)}


def owned(out: Path) -> set[str]:
    """The files in `out` that an earlier lossdiag run wrote (see the module's docstring)."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return set(listed) & own_names() if isinstance(listed, list) else set()
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return set()
    try:
        earlier = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(earlier, dict) or "lossdiag_version" not in earlier:
        return set()
    return {name for name in own_names() if (out / name).is_file()}


def claim(out: Path, names: Collection[str]) -> None:
    """Refuse an output folder that is a file, or that holds, under a name the run writes, something lossdiag did
    not write: checked before any work, and again before the swap."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: is a file, not a folder")
    if not out.is_dir():
        return
    mine = owned(out)
    foreign = sorted(name for name in names if os.path.lexists(out / name) and name not in mine)
    if foreign:
        raise SpecError(f"--out {out}: '{foreign[0]}' there was not written by lossdiag; choose another --out or "
                        f"move it away")


class Staging:
    """A new folder inside `out` where a run writes its outputs; publish() swaps them into `out`."""

    def __init__(self, out: str | Path, keep: Collection[str] = ()) -> None:
        self.out = Path(out)
        self.keep = set(keep)
        claim(self.out, own_names() - self.keep)
        self.created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.out, prefix=STAGING_PREFIX))

    def publish(self) -> list[Path]:
        """Move the staged files into `out`, remove the ones an earlier run wrote that this one did not (except
        `keep`, the files this run wrote in place), record the manifest, and drop the staging folder."""
        new = sorted(p.name for p in self.path.iterdir() if p.name in own_names())
        claim(self.out, new)
        earlier = owned(self.out)
        for name in new:
            os.replace(self.path / name, self.out / name)
        for name in sorted(earlier - set(new) - self.keep):
            (self.out / name).unlink(missing_ok=True)
        written = sorted(set(new) | {name for name in self.keep if (self.out / name).is_file()})
        write_atomic(self.out / MANIFEST, json.dumps(written) + "\n")
        shutil.rmtree(self.path, ignore_errors=True)
        return [self.out / name for name in new]

    def abandon(self) -> Optional[Path]:
        """After a failure: the staged records when any were streamed (they stay, for `lossdiag report`), else
        None, with the staging folder removed (and `out` too when this run created it and it is empty)."""
        records = self.path / RECORDS
        if records.is_file() and records.stat().st_size:
            return records
        shutil.rmtree(self.path, ignore_errors=True)
        if self.created:
            with contextlib.suppress(OSError):
                self.out.rmdir()
        return None


def keep_records(staging: Optional[Staging], exc: BaseException) -> None:
    """After a failed run: abandon its staging folder, noting on the exception where its records were kept."""
    kept = staging.abandon() if staging is not None else None
    if kept is not None:
        exc.add_note(f"the records streamed so far are kept in {kept} (lossdiag report {kept.parent} builds their "
                     f"page)")


def render_outputs(folder: Path, diagnosis: Diagnosis, summary: dict) -> None:
    """Write summary.json, the PNG figures this run can draw and report.html into `folder`."""
    from lossdiag.report.figures import report_figures
    from lossdiag.report.html import page

    write_atomic(folder / SUMMARY, summary_json(summary))
    figures = report_figures(diagnosis, summary)
    for figure in figures:
        if figure.png is not None:
            write_atomic(folder / f"{figure.name}.png", figure.png)
    write_atomic(folder / REPORT, page(diagnosis, summary, figures))


def publish(staging: Staging, diagnosis: Diagnosis, summary: dict, records: Optional[Sequence[dict]] = None) -> None:
    """Render a finished run into its staging folder (with `records`, when they were not streamed there) and swap
    it into the output folder; on a failure the output folder is left as it was."""
    try:
        if records is not None:
            write_records(staging.path / RECORDS, records)
        render_outputs(staging.path, diagnosis, summary)
        staging.publish()
    except BaseException as exc:
        keep_records(staging, exc)
        raise


def write_outputs(out: str | Path, diagnosis: Diagnosis, summary: dict,
                  records: Optional[Sequence[dict]] = None) -> None:
    """Write summary.json, the PNG figures and report.html (and `records`, when given) into `out` through a
    staging folder; without `records`, the records.jsonl already in `out` (a Monitor's, or the one
    `lossdiag report` read) stays as it is."""
    publish(Staging(out, keep=() if records is not None else (RECORDS,)), diagnosis, summary, records)
