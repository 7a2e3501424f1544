"""bench/results/ keeps the runs the documentation cites, and the documentation cites only runs it keeps.

A run's files are cited as ``bench-results/<file>`` from a docs page (the site serves bench/results/
there) or as ``bench/results/<file>`` from anywhere else. A run no page cites is deleted: git
history keeps it (bench/results/README.md says at which commit).
"""

import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"

CITED = re.compile(r"(?:bench-results|bench/results)/([\w.-]+\.(?:json|png|md))")
LINK = re.compile(r"\]\(([^)\s]*bench-results/[^)\s]*)\)")
# Not results: what git ignores here (quick smoke runs, half-written files), and the folder's keeper.
IGNORED = ("quick-*", "*.tmp", ".*")


def _pages() -> list[Path]:
    return [ROOT / "README.md", RESULTS / "README.md", *sorted(DOCS.rglob("*.md"))]


def _citations() -> dict[str, list[Path]]:
    cited: dict[str, list[Path]] = {}
    for page in _pages():
        for name in CITED.findall(page.read_text(encoding="utf-8")):
            cited.setdefault(name, []).append(page)
    return cited


def _results() -> list[str]:
    return sorted(
        path.name
        for path in RESULTS.iterdir()
        if path.is_file() and path.name != "README.md" and not any(path.match(p) for p in IGNORED)
    )


def test_every_result_file_is_cited_by_a_page() -> None:
    cited = _citations()
    uncited = [name for name in _results() if name not in cited]
    assert not uncited, (
        f"bench/results/ holds files no page cites: {uncited}; cite them from a docs page "
        "(as bench-results/<file>) or delete them (git history keeps them)"
    )


def test_every_cited_result_exists() -> None:
    missing = {
        name: sorted(str(page.relative_to(ROOT)) for page in pages)
        for name, pages in _citations().items()
        if not (RESULTS / name).is_file()
    }
    assert not missing, f"pages cite results that bench/results/ does not hold: {missing}"


def test_docs_pages_reach_the_results_from_where_they_are() -> None:
    wrong = []
    for page in DOCS.rglob("*.md"):
        folder = page.parent.relative_to(DOCS).as_posix()
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            resolved = posixpath.normpath(posixpath.join(folder, target.split("#", 1)[0]))
            if not resolved.startswith("bench-results/"):
                wrong.append(f"{page.relative_to(ROOT)}: {target}")
    assert not wrong, f"links that miss the docs root's bench-results/: {wrong}"
