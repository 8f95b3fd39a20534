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
from typing import Callable, Collection, Optional, Sequence

from lossdiag.advise.diagnose import Diagnosis
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


def owned(out: Path, names: Collection[str]) -> set[str]:
    """Which of `names` in `out` an earlier lossdiag run wrote (see the module's docstring); without a manifest,
    all of them that are there when one of them is a JSON file of lossdiag's (summary.json, sweep.json)."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return set(listed) & set(names) if isinstance(listed, list) else set()
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return set()
    return {name for name in names if (out / name).is_file()} if _legacy(out, names) else set()


def _legacy(out: Path, names: Collection[str]) -> bool:
    for name in (n for n in names if n.endswith(".json")):
        try:
            earlier = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(earlier, dict) and "lossdiag_version" in earlier:
            return True
    return False


def _manifest(out: Path) -> set[str]:
    """Every name the folder's manifest lists (a profile's and a sweep's outputs can share a folder)."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()


def claim(out: Path, names: Collection[str]) -> None:
    """Refuse an output folder that is a file, or that holds, under a name the run writes, something lossdiag did
    not write: checked before any work, and again before the swap."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: is a file, not a folder")
    if not out.is_dir():
        return
    mine = owned(out, names)
    foreign = sorted(name for name in names if os.path.lexists(out / name) and name not in mine)
    if foreign:
        raise SpecError(f"--out {out}: '{foreign[0]}' there was not written by lossdiag; choose another --out or "
                        f"move it away")


class Staging:
    """A new folder inside `out` where a run writes its outputs; publish() swaps them into `out`.

    `names` are the files this kind of run writes (a profile's by default; a sweep passes its own), `records` the
    one its records stream to, kept after a failure.
    """

    def __init__(self, out: str | Path, keep: Collection[str] = (), names: Optional[Collection[str]] = None,
                 records: str = RECORDS) -> None:
        self.out = Path(out)
        self.keep = set(keep)
        self.names = set(names) if names is not None else own_names()
        self.records = records
        claim(self.out, self.names - self.keep)
        self.created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.out, prefix=STAGING_PREFIX))

    def publish(self) -> list[Path]:
        """Move the staged files into `out`, remove the ones an earlier run wrote that this one did not (except
        `keep`, the files this run wrote in place), record the manifest, and drop the staging folder."""
        new = sorted(p.name for p in self.path.iterdir() if p.name in self.names)
        claim(self.out, new)
        earlier = owned(self.out, self.names)
        others = {name for name in _manifest(self.out) - self.names if (self.out / name).is_file()}
        for name in new:
            os.replace(self.path / name, self.out / name)
        for name in sorted(earlier - set(new) - self.keep):
            (self.out / name).unlink(missing_ok=True)
        written = sorted(set(new) | others | {name for name in self.keep if (self.out / name).is_file()})
        write_atomic(self.out / MANIFEST, json.dumps(written) + "\n")
        shutil.rmtree(self.path, ignore_errors=True)
        return [self.out / name for name in new]

    def abandon(self) -> Optional[Path]:
        """After a failure: the staged records when any were streamed (they stay, for `lossdiag report`), else
        None, with the staging folder removed (and `out` too when this run created it and it is empty)."""
        records = self.path / self.records
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


def publish_with(staging: Staging, render: Callable[[Path], None], records: Optional[Sequence[dict]] = None) -> None:
    """Write `records` (when they were not streamed there) and what `render` draws into the staging folder, and
    swap it into the output folder; on a failure the output folder is left as it was."""
    try:
        if records is not None:
            write_records(staging.path / staging.records, records)
        render(staging.path)
        staging.publish()
    except BaseException as exc:
        keep_records(staging, exc)
        raise


def publish(staging: Staging, diagnosis: Diagnosis, summary: dict, records: Optional[Sequence[dict]] = None) -> None:
    """Render a finished profile into its staging folder and swap it into the output folder."""
    publish_with(staging, lambda folder: render_outputs(folder, diagnosis, summary), records)


def write_outputs(out: str | Path, diagnosis: Diagnosis, summary: dict,
                  records: Optional[Sequence[dict]] = None) -> None:
    """Write summary.json, the PNG figures and report.html (and `records`, when given) into `out` through a
    staging folder; without `records`, the records.jsonl already in `out` (a Monitor's, or the one
    `lossdiag report` read) stays as it is."""
    publish(Staging(out, keep=() if records is not None else (RECORDS,)), diagnosis, summary, records)
