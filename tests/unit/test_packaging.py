"""What an installed merlin needs: dependencies declared, files shipped, state kept outside the code."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Mapping
from fnmatch import fnmatch
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

from kernel.state_dirs import (
    CHECKOUT,
    DISTRIBUTION,
    default_cache_dir,
    default_var_dir,
    find_checkout,
    normalized,
)
from merlin.cli import main
from merlin.local.kafka import BROKER_FILES, LocalKafka
from merlin.local.settings import LocalSettings
from read_store.settings import DEFAULT_URL
from tests import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
SHIPPED = tuple(name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
# Modules of a dependency that are not its API, though no underscore says so.
INTERNAL = {"sqlalchemy.util": "SQLAlchemy's own helpers"}


def _write_pyproject(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "pyproject.toml").write_text(text)
    return folder


def test_a_checkout_is_a_folder_whose_pyproject_names_this_distribution(tmp_path: Path) -> None:
    assert CHECKOUT == PROJECT_ROOT  # the tests run from one
    assert find_checkout(_write_pyproject(tmp_path / "ours", '[project]\nname = "Merlin_Chat"\n')) is not None
    assert find_checkout(_write_pyproject(tmp_path / "other", '[project]\nname = "merlin"\n')) is None
    assert find_checkout(_write_pyproject(tmp_path / "broken", "[project\n")) is None
    assert find_checkout(_write_pyproject(tmp_path / "none", "")) is None
    assert find_checkout(tmp_path / "missing") is None


def test_installed_the_state_goes_to_the_users_data_and_cache_directories() -> None:
    env = {"HOME": "/home/ada", "XDG_DATA_HOME": "/data", "XDG_CACHE_HOME": "/caches"}
    assert default_var_dir(None, env) == Path("/data/merlin")
    assert default_cache_dir(None, env) == Path("/caches/merlin")
    # Unset, empty or relative (which the XDG spec says to ignore): the defaults under the home.
    for unset in ({"HOME": "/home/ada"}, {"HOME": "/home/ada", "XDG_DATA_HOME": "", "XDG_CACHE_HOME": "rel"}):
        assert default_var_dir(None, unset) == Path("/home/ada/.local/share/merlin")
        assert default_cache_dir(None, unset) == Path("/home/ada/.cache/merlin")


def test_in_a_checkout_the_state_stays_beside_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HOME": "/home/ada", "XDG_DATA_HOME": "/data", "XDG_CACHE_HOME": "/caches"}
    assert default_var_dir(PROJECT_ROOT, env) == PROJECT_ROOT / "var"
    assert default_cache_dir(PROJECT_ROOT, env) == PROJECT_ROOT / ".cache"
    monkeypatch.delenv("MERLIN_LOCAL_VAR_DIR", raising=False)
    monkeypatch.delenv("MERLIN_LOCAL_CACHE_DIR", raising=False)
    local = LocalSettings()
    assert (local.var_dir, local.cache_dir) == (PROJECT_ROOT / "var", PROJECT_ROOT / ".cache")
    assert DEFAULT_URL.removeprefix("sqlite+aiosqlite:///") == str(PROJECT_ROOT / "var" / "merlin.db")


def test_the_variables_still_override_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERLIN_LOCAL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MERLIN_LOCAL_CACHE_DIR", str(tmp_path / "cache"))
    local = LocalSettings()
    assert (local.var_dir, local.cache_dir) == (tmp_path / "var", tmp_path / "cache")


def test_the_jar_cache_is_keyed_by_the_shipped_poms_bytes(tmp_path: Path) -> None:
    kafka = LocalKafka(LocalSettings(cache_dir=tmp_path))
    assert kafka.libs_dir.parent.parent == tmp_path / "kafka"
    assert (BROKER_FILES / "pom.xml").read_text().startswith("<?xml")
    assert "Configuration:" in (BROKER_FILES / "log4j2.yaml").read_text()


def test_every_file_beside_the_broker_is_package_data() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["merlin.local"]
    folder = PROJECT_ROOT / "merlin" / "local" / "kafka_broker"
    files = [path.relative_to(folder.parent).as_posix() for path in folder.iterdir()]
    assert files
    assert [name for name in files if not any(fnmatch(name, pattern) for pattern in patterns)] == []


def test_the_version_is_the_installed_distributions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7" if name == DISTRIBUTION else "?")
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"{DISTRIBUTION} 9.8.7\n"


def test_uninstalled_the_version_says_where_merlin_runs_from(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"{DISTRIBUTION}, not installed (running from {PROJECT_ROOT})\n"


def test_every_third_party_import_of_the_shipped_code_is_a_declared_dependency() -> None:
    declared = _declared()
    undeclared = {
        module: sorted(_providers(module, names))
        for module, names in _imports()
        if not _providers(module, names) & set(declared)
    }
    assert undeclared == {}, "import these through a dependency of [project] in pyproject.toml"


def test_a_dependency_whose_internals_are_imported_has_an_upper_bound() -> None:
    declared = _declared()
    unbounded = {
        module: declared[dist]
        for module, names in _imports()
        if _internal(module, names)
        for dist in _providers(module, names) & set(declared)
        if not re.search(r"<|==|~=", declared[dist])
    }
    assert unbounded == {}, "bound these below their next release that may change what is imported"


def _declared() -> dict[str, str]:
    """Each dependency of [project], by its normalized name: its whole requirement."""
    requirements: list[str] = PYPROJECT["project"]["dependencies"]
    named = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement) for requirement in requirements)
    return {normalized(match.group()): match.string for match in named if match}


@cache
def _imports() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each third-party module the shipped packages import, with the names taken from it.

    Imports in a ``try`` that catches ImportError are left out: optional, the code works without them.
    """
    paths = sorted(path for package in SHIPPED for path in (PROJECT_ROOT / package).rglob("*.py"))
    return tuple(
        found for path in paths for found in _ImportVisitor.of(ast.parse(path.read_text(), str(path)))
    )


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[str, tuple[str, ...]]] = []

    @classmethod
    def of(cls, tree: ast.AST) -> list[tuple[str, tuple[str, ...]]]:
        visitor = cls()
        visitor.visit(tree)
        return visitor.found

    def visit_Try(self, node: ast.Try) -> None:
        optional = any(_catches_import_error(handler.type) for handler in node.handlers)
        children: list[ast.AST] = [*node.handlers, *node.orelse, *node.finalbody]
        for child in children if optional else [*node.body, *children]:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, ()) for alias in node.names if _third_party(alias.name)]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module and _third_party(node.module):
            self.found.append((node.module, tuple(alias.name for alias in node.names)))


def _catches_import_error(caught: ast.expr | None) -> bool:
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(
        isinstance(name, ast.Name) and name.id in {"ImportError", "ModuleNotFoundError"} for name in names
    )


def _third_party(module: str) -> bool:
    top = module.partition(".")[0]
    return top not in sys.stdlib_module_names and top not in SHIPPED and top != "__future__"


def _internal(module: str, names: tuple[str, ...]) -> bool:
    parts = module.split(".")[1:]
    private_part = any(part.startswith("_") or part.endswith("impl") or "internal" in part for part in parts)
    private_name = any(name.startswith("_") and not name.startswith("__") for name in names)
    return private_part or private_name or any(module.startswith(known) for known in INTERNAL)


def _providers(module: str, names: tuple[str, ...] = ()) -> set[str]:
    """The distributions (normalized names) that hold ``module``: one, unless the top is a namespace."""
    top = module.partition(".")[0]
    candidates = {normalized(dist) for dist in _top_level_providers().get(top, [])}
    if len(candidates) <= 1:
        return candidates
    # A namespace (opentelemetry) that several distributions fill: those holding the module's file,
    # or for ``from opentelemetry import trace`` the files of the modules imported from it.
    files = _module_files()
    parents = [".".join(module.split(".")[:n]) for n in range(module.count(".") + 1, 1, -1)]
    held = next((files[parent] for parent in parents if parent in files), None)
    if held is None:
        held = set().union(*(files.get(f"{module}.{name}", set()) for name in names))
    return held & candidates


@cache
def _top_level_providers() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@cache
def _module_files() -> dict[str, set[str]]:
    """Every installed module by its dotted name, with the distributions whose files hold it."""
    held: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = normalized(dist.metadata["Name"])
        for file in dist.files or ():
            if file.suffix not in {".py", ".so"} or file.parts[0] == ".." or ".dist-info" in file.parts[0]:
                continue
            parts = [*file.parts[:-1], file.name.split(".")[0]]
            held.setdefault(".".join(parts[:-1] if parts[-1] == "__init__" else parts), set()).add(name)
    return held
