"""The tree shows the pipeline, and the import graph keeps it so (read from lossdiag/'s source with ast, nothing
imported): record -> train -> analyse -> checks -> advise -> report, then the sweep (which runs the profile's
stages and writes its page through report), under the public faces (api, Monitor, integrations, the command
line). No unit imports one later in that order, no two units import each other through any path, no module
imports another module's private (`_name`) names or a private module outside its package, and no module is over
300 lines. The same checks run on a small hand-made tree to show that each one fails."""
from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
from pathlib import Path

import pytest

import lossdiag

MAX_LINES = 300

# Each unit of the tree and its place in the pipeline: a unit may import its own modules and units of a lower or
# equal rank, never a higher one. The base (errors, the version, the configuration) is below every stage; the
# public faces above them all.
RANKS = {
    "errors": 0, "_version": 0, "config": 0,
    "record": 1, "train": 2, "analyse": 3, "checks": 4, "advise": 5, "report": 6, "sweep": 7,
    "api": 8, "monitor": 8, "integrations": 9, "cli": 10, "__init__": 11, "__main__": 11,
}

@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement's arrow: the importing module, the module imported from and the names taken."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int


def unit(module: str) -> str:
    """The pipeline unit a module belongs to: its subpackage, or its own name at the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def private_part(module: str) -> int:
    """The index of the first private part of a dotted module name (lossdiag._version: 1), or -1."""
    return next((k for k, part in enumerate(module.split(".")) if part.startswith("_") and not part.startswith("__")),
                -1)


@dataclasses.dataclass(frozen=True)
class Tree:
    """A package's source read as text: its modules, their imports of one another and what breaks the rules."""

    root: Path

    @functools.cached_property
    def modules(self) -> dict[str, Path]:
        found = {}
        for path in sorted(self.root.rglob("*.py")):
            parts = [self.root.name, *path.relative_to(self.root).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        return found

    @functools.cached_property
    def imports(self) -> tuple[Import, ...]:
        """Every import of one of the package's modules, at module level or in a function (a lazy import is an
        arrow too)."""
        name, found = self.root.name, []
        for module, path in self.modules.items():
            package = (module if path.name == "__init__.py" else module.rsplit(".", 1)[0]).split(".")
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found += [Import(module, a.name, (), node.lineno) for a in node.names
                              if a.name == name or a.name.startswith(name + ".")]
                elif isinstance(node, ast.ImportFrom):
                    base = package[:len(package) - node.level + 1] if node.level else []
                    target = ".".join([*base, node.module] if node.module else base)
                    if target == name or target.startswith(name + "."):
                        found.append(Import(module, target, tuple(a.name for a in node.names), node.lineno))
        return tuple(found)

    @functools.cached_property
    def arrows(self) -> dict[tuple[str, str], Import]:
        """Between different units: one example import for each (importer, imported) pair."""
        found: dict[tuple[str, str], Import] = {}
        for arrow in self.imports:
            source, target = unit(arrow.source), unit(arrow.target)
            if target == "__init__" and arrow.names:
                target = next((n for n in arrow.names if n in RANKS), "__init__")
            if source != target:
                found.setdefault((source, target), arrow)
        return found

    def back_arrows(self) -> dict[tuple[str, str], Import]:
        return {pair: a for pair, a in self.arrows.items() if RANKS.get(pair[1], 99) > RANKS.get(pair[0], 99)}

    def cycles(self) -> list[str]:
        """Each pair of units that reach each other through the import graph, as 'a <-> b' (a before b)."""
        graph: dict[str, set[str]] = {}
        for source, target in self.arrows:
            graph.setdefault(source, set()).add(target)

        def reachable(start: str) -> set[str]:
            seen, todo = set(), [start]
            while todo:
                for following in graph.get(todo.pop(), ()):
                    if following not in seen:
                        seen.add(following)
                        todo.append(following)
            return seen

        return sorted(f"{a} <-> {b}" for a in graph for b in reachable(a) if a < b and a in reachable(b))

    def private_imports(self) -> dict[tuple[str, str], Import]:
        """(importer, name) for each private name (not a submodule) imported from another module."""
        return {(a.source, name): a for a in self.imports for name in a.names
                if name.startswith("_") and not name.startswith("__") and a.source != a.target
                and f"{a.target}.{name}" not in self.modules}

    def private_modules_outside(self) -> list[str]:
        """Imports of a private module (`_name.py`) from outside the package that holds it."""
        def inside(source: str, target: str) -> bool:
            package = ".".join(target.split(".")[:private_part(target)])
            return source == package or source.startswith(package + ".")

        imported = [(a, module) for a in self.imports
                    for module in [a.target, *(f"{a.target}.{n}" for n in a.names)] if module in self.modules]
        return [f"{a.source} (line {a.line}) imports {module}" for a, module in imported
                if private_part(module) > 0 and not inside(a.source, module)]

    def undefined_names(self, module: str) -> list[str]:
        """Names a module reads that it neither defines, imports nor gets from builtins, anywhere in the file (a
        coarse check without scopes: it catches a name left behind when code moves between modules)."""
        tree = ast.parse(self.modules[module].read_text())
        defined = set(dir(builtins)) | {"__file__", "__name__"}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                defined.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                defined.add(node.name)
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        return sorted(read - defined)

    def line_count(self, module: str) -> int:
        return len(self.modules[module].read_text().splitlines())


LOSSDIAG = Tree(Path(lossdiag.__file__).parent)


def test_every_unit_of_the_tree_has_a_place_in_the_pipeline():
    assert sorted({unit(m) for m in LOSSDIAG.modules} - set(RANKS)) == []


def test_every_folder_of_modules_is_a_package():
    """setuptools' find_packages installs only folders with an __init__.py: one without would be left out."""
    folders = {path.parent for path in LOSSDIAG.modules.values()}
    assert sorted(str(f) for f in folders if not (f / "__init__.py").is_file()) == []


def test_no_arrow_points_back_up_the_pipeline():
    back = [f"{a.source} (line {a.line}) imports {a.target}: {s} may not import the later {t}"
            for (s, t), a in LOSSDIAG.back_arrows().items()]
    assert back == []


def test_no_two_units_import_each_other_through_any_path():
    assert LOSSDIAG.cycles() == []


def test_no_module_imports_another_modules_private_names():
    private = [f"{a.source} (line {a.line}) imports {name} from {a.target}"
               for (source, name), a in LOSSDIAG.private_imports().items()]
    assert private == []


def test_a_private_module_is_imported_only_inside_its_own_package():
    assert LOSSDIAG.private_modules_outside() == []


@pytest.mark.parametrize("module", sorted(LOSSDIAG.modules))
def test_no_module_is_over_300_lines(module):
    lines = LOSSDIAG.line_count(module)
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by job"


@pytest.mark.parametrize("module", sorted(LOSSDIAG.modules))
def test_every_name_a_module_reads_is_defined_or_imported(module):
    assert LOSSDIAG.undefined_names(module) == []


def hand_made(tmp_path: Path, files: dict[str, str]) -> Tree:
    """A package named lossdiag under tmp_path holding `files` (path: source), with an __init__ in each folder."""
    root = tmp_path / "lossdiag"
    for name, source in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(source)
    return Tree(root)


def test_the_checks_find_a_back_arrow_a_cycle_and_private_imports_in_a_hand_made_tree(tmp_path):
    tree = hand_made(tmp_path, {
        "record/stream.py": "def later():\n    from lossdiag.report.terminal import render\n",
        "report/terminal.py": ("from ..record import stream\nfrom lossdiag.analyse.run import _helper\n"
                               "from lossdiag.analyse import _kernel\n"),
        "analyse/run.py": "import lossdiag.record.stream\nfrom lossdiag.analyse._kernel import every\n",
        "analyse/_kernel.py": "every = 1\n",
    })
    assert set(tree.back_arrows()) == {("record", "report")}
    assert tree.cycles() == ["analyse <-> record", "analyse <-> report", "record <-> report"]
    assert list(tree.private_imports()) == [("lossdiag.report.terminal", "_helper")]
    assert tree.private_modules_outside() == ["lossdiag.report.terminal (line 3) imports lossdiag.analyse._kernel"]


def test_the_checks_pass_a_tree_that_keeps_the_rules(tmp_path):
    tree = hand_made(tmp_path, {
        "report/terminal.py": "from lossdiag.analyse.run import helper\nfrom . import _draw\n",
        "report/_draw.py": "def draw():\n    pass\n",
        "analyse/run.py": "from lossdiag.record import stream\n\n\ndef helper():\n    pass\n",
        "record/stream.py": "import json\n",
    })
    assert tree.back_arrows() == {} and tree.cycles() == [] and tree.private_modules_outside() == []
    assert tree.private_imports() == {}


def test_a_name_left_behind_by_a_move_is_found(tmp_path):
    tree = hand_made(tmp_path, {"record/scopes.py": "def measure(model):\n    return BufferGuard(model)\n"})
    assert tree.undefined_names("lossdiag.record.scopes") == ["BufferGuard"]


def test_a_module_over_300_lines_is_counted_as_such(tmp_path):
    tree = hand_made(tmp_path, {"analyse/long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert tree.line_count("lossdiag.analyse.long") == MAX_LINES + 1
