"""No function of the shipped packages is too tangled to read: radon grades none of them D or worse.

Radon's cyclomatic-complexity grades: A to C (up to 20 paths) read in one sitting;
D (21 to 30) and worse are where bugs hide and reviews give up. A function that
reaches D is split before it lands, not after.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from radon.complexity import cc_rank, cc_visit

ROOT = Path(__file__).resolve().parents[2]
WORST_ALLOWED = "C"


def _shipped_packages() -> list[Path]:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [ROOT / pattern.rstrip("*") for pattern in found["include"]]


def _graded_worse_than_allowed(package: Path) -> list[str]:
    worse = []
    for path in sorted(package.rglob("*.py")):
        for block in cc_visit(path.read_text()):
            grade = cc_rank(block.complexity)
            if grade > WORST_ALLOWED:
                where = f"{path.relative_to(package.parent)}:{block.lineno}"
                worse.append(f"{where} {block.fullname} {grade} ({block.complexity})")
    return worse


def test_the_shipped_packages_are_the_ones_checked() -> None:
    packages = _shipped_packages()
    assert len(packages) >= 9
    assert [package for package in packages if not package.is_dir()] == []


def test_no_shipped_function_is_graded_d_or_worse() -> None:
    worse = [line for package in _shipped_packages() for line in _graded_worse_than_allowed(package)]
    assert worse == [], "split these functions:\n" + "\n".join(worse)


def test_the_check_sees_a_tangled_function(tmp_path: Path) -> None:
    branches = "\n".join(f"    if x == {n}:\n        return {n}" for n in range(25))
    (tmp_path / "tangled.py").write_text(f"def tangled(x):\n{branches}\n    return -1\n")
    [found] = _graded_worse_than_allowed(tmp_path)
    assert "tangled D (26)" in found
