"""The documentation a user navigates: a short README that leads into the docs site, and no link that leads nowhere."""
import re
from pathlib import Path

import yaml

from paths import ROOT

DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:tests|benchmarks|notebooks_examples|lossdiag|docs|\.ci)/[a-z0-9_./-]*\.[a-z]+)(?!\w)")


def nav_pages(nav: list) -> list[str]:
    """Every page file named in mkdocs.yml's nav, nested sections included."""
    pages = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def local_links(page: Path) -> list[tuple[str, Path]]:
    """Each link of a Markdown page to a file of the repository, as written and as the path it resolves to."""
    found = []
    for target in LINK.findall(page.read_text()):
        path = target.split("#")[0]
        if path and not re.match(r"[a-z]+:", path):
            found.append((target, (page.parent / path).resolve()))
    return found


def test_readme_is_short_and_links_every_docs_page():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 250
    linked = {path for _, path in local_links(readme)}
    pages = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    missing = [page for page in pages if shown_file(DOCS / page) not in linked]
    assert not missing, f"README links none of {missing}"


def shown_file(page: Path) -> Path:
    """The file a docs page shows: the page itself, or the repository file it only includes (CHANGELOG.md)."""
    included = re.fullmatch(r'--8<-- "([^"]+)"\s*', page.read_text())
    return (ROOT / included.group(1)).resolve() if included else page.resolve()


def test_the_nav_holds_every_page_and_every_page_exists():
    pages = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))


def test_no_link_in_the_readme_or_the_docs_leads_nowhere():
    broken = [f"{page.name}: {target}" for page in [ROOT / "README.md", *DOCS.glob("*.md")]
              for target, path in local_links(page) if not path.exists()]
    assert not broken


def test_the_bundled_example_points_at_a_page_the_user_has(examples):
    docstring = (examples / "two_outputs.py").read_text().split('"""')[1]
    pointed = re.findall(r"\(see ([^)]+)\)", docstring)
    assert pointed and all((examples / path).is_file() for path in pointed)


def test_every_file_the_docs_name_is_there():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md", *DOCS.glob("*.md")]
    missing = [f"{page.name}: {path}" for page in pages for path in REPO_PATH.findall(page.read_text())
               if not (ROOT / path).exists()]
    assert not missing
