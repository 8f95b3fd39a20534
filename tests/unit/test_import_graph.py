"""The tree shows the pipeline, and the import graph keeps it so (read from lossdiag/'s source with ast, nothing
imported): record -> train -> analyse -> checks -> advise -> sweep -> report, under the public faces (api, Monitor,
integrations, the command line). No package imports one later in that order, no two packages import each other
through any path, no module imports another module's private (`_name`) names, and no module is over 300 lines."""
from __future__ import annotations

import ast
import dataclasses
import functools
from pathlib import Path

import pytest

import lossdiag

PACKAGE = Path(lossdiag.__file__).parent
MAX_LINES = 300

# Each unit of the tree and its place in the pipeline: a unit may import its own modules and units of a lower or
# equal rank, never a higher one. The base (errors, the version, the configuration) is below every stage; the
# public faces above them all.
RANKS = {
    "errors": 0, "_version": 0, "config": 0,
    "record": 1, "train": 2, "analyse": 3, "checks": 4, "advise": 5, "sweep": 6, "report": 7,
    "api": 8, "monitor": 8, "integrations": 9, "cli": 10, "__init__": 11, "__main__": 11,
}


# Debts being paid while this test landed, each with who pays it; an entry that no longer applies fails
# test_every_known_debt_is_still_owed, so the lists only shrink.
KNOWN_BACK_ARROWS = {("checks", "advise"), ("sweep", "report")}
KNOWN_CYCLES = {"advise <-> checks", "report <-> sweep"}
KNOWN_PRIVATE = {  # the sweep's renderers borrow the profile's (report/)
    ("lossdiag.report.sweep_figures", "_finish"), ("lossdiag.report.sweep_figures", "_legend"),
    ("lossdiag.report.sweep_html", "_figures"), ("lossdiag.report.sweep_html", "_table"),
    ("lossdiag.report.sweep_html", "_tag"), ("lossdiag.report.sweep_terminal", "_table")}
KNOWN_LONG = {"lossdiag.advise.rule", "lossdiag.monitor", "lossdiag.report.figures", "lossdiag.report.terminal"}


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement's arrow: the importing module, the module imported from and the names taken."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path) -> str:
    parts = ["lossdiag", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The pipeline unit a module belongs to: its subpackage, or its own name at the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@functools.lru_cache(maxsize=None)
def imports() -> tuple[Import, ...]:
    """Every import of a lossdiag module, at module level or inside a function (a lazy import is an arrow too)."""
    found = []
    for module, path in modules().items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                names = tuple(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("lossdiag"):
                        found.append(Import(module, alias.name, (), node.lineno))
                continue
            else:
                continue
            if target == "lossdiag" or target.startswith("lossdiag."):
                found.append(Import(module, target, names, node.lineno))
    return tuple(found)


def arrows() -> dict[tuple[str, str], Import]:
    """Between different units: one example import for each (importer, imported) pair."""
    found: dict[tuple[str, str], Import] = {}
    for arrow in imports():
        source, target = unit(arrow.source), unit(arrow.target)
        if target == "__init__" and arrow.names:
            target = next((n for n in arrow.names if n in RANKS), "__init__")
        if source != target:
            found.setdefault((source, target), arrow)
    return found


def back_arrows() -> dict[tuple[str, str], Import]:
    return {pair: a for pair, a in arrows().items() if RANKS.get(pair[1], 99) > RANKS.get(pair[0], 99)}


def cycles() -> list[str]:
    """Each pair of units that reach each other through the import graph, as 'a <-> b' (a before b)."""
    graph: dict[str, set[str]] = {}
    for source, target in arrows():
        graph.setdefault(source, set()).add(target)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return sorted(f"{a} <-> {b}" for a in graph for b in reachable(a) if a < b and a in reachable(b))


def private_imports() -> dict[tuple[str, str], Import]:
    """(importer, name) for each private name imported from another module."""
    return {(a.source, name): a for a in imports() for name in a.names
            if name.startswith("_") and not name.startswith("__") and a.source != a.target}


def line_count(module: str) -> int:
    return len(modules()[module].read_text().splitlines())


def test_every_unit_of_the_tree_has_a_place_in_the_pipeline():
    assert sorted({unit(m) for m in modules()} - set(RANKS)) == []


def test_no_arrow_points_back_up_the_pipeline():
    back = [f"{a.source} (line {a.line}) imports {a.target}: {s} may not import the later {t}"
            for (s, t), a in back_arrows().items() if (s, t) not in KNOWN_BACK_ARROWS]
    assert back == []


def test_no_two_units_import_each_other_through_any_path():
    assert [cycle for cycle in cycles() if cycle not in KNOWN_CYCLES] == []


def test_no_module_imports_another_modules_private_names():
    private = [f"{a.source} (line {a.line}) imports {name} from {a.target}"
               for (source, name), a in private_imports().items() if (source, name) not in KNOWN_PRIVATE]
    assert private == []


def test_a_private_module_is_imported_only_inside_its_own_package():
    def private_part(module: str) -> int:
        return next((k for k, part in enumerate(module.split(".")) if part.startswith("_")
                     and not part.startswith("__")), -1)

    def inside(source: str, target: str) -> bool:
        package = ".".join(target.split(".")[:private_part(target)])
        return source == package or source.startswith(package + ".")

    outside = [f"{a.source} (line {a.line}) imports {a.target}" for a in imports()
               if private_part(a.target) > 0 and not inside(a.source, a.target)]
    assert outside == []


@pytest.mark.parametrize("module", sorted(set(modules()) - KNOWN_LONG))
def test_no_module_is_over_300_lines(module):
    assert line_count(module) <= MAX_LINES, f"{module} has {line_count(module)} lines (at most {MAX_LINES}): split it"


def test_every_known_debt_is_still_owed():
    paid = ([f"back arrow {s} -> {t}" for s, t in KNOWN_BACK_ARROWS - set(back_arrows())]
            + [f"cycle {c}" for c in KNOWN_CYCLES - set(cycles())]
            + [f"private {n} in {m}" for m, n in KNOWN_PRIVATE - set(private_imports())]
            + [f"{m} is {line_count(m) if m in modules() else 'gone'}" for m in KNOWN_LONG
               if m not in modules() or line_count(m) <= MAX_LINES])
    assert paid == [], "paid debts: remove them from the KNOWN_ lists"
