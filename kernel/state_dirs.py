"""Where merlin keeps its state: beside the code in a checkout, in the user's directories once installed.

Two folders: ``var/`` (the local servers' data and logs, the secrets ``merlin dev`` keeps, the
default SQLite read store) and ``.cache/`` (downloads: the Kafka broker's jars). A checkout keeps
them at its root, where ``make run``, the tests and the docs expect them. An installed merlin's
code sits in site-packages, which is shared, often read-only, and replaced on every upgrade: there
they are ``$XDG_DATA_HOME/merlin`` and ``$XDG_CACHE_HOME/merlin`` (decision 0019).
``MERLIN_LOCAL_VAR_DIR`` and ``MERLIN_LOCAL_CACHE_DIR`` override both.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

# What pip installs; the command, the packages and the folders in the user's directories are "merlin"
# (a distribution of that name on PyPI is another project).
DISTRIBUTION = "merlin-chat"
_FOLDER = "merlin"

# The folder that holds merlin's top-level packages: a checkout's root, or site-packages.
CODE_ROOT = Path(__file__).resolve().parents[1]


def find_checkout(code_root: Path = CODE_ROOT) -> Path | None:
    """``code_root`` when it is a checkout of merlin (its pyproject.toml names the distribution), else None.

    A pyproject.toml of another project (a site-packages that holds one by accident, a checkout
    that vendors merlin's packages) does not count.
    """
    try:
        project = tomllib.loads((code_root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    name = project.get("project", {}).get("name")
    return code_root if isinstance(name, str) and normalized(name) == DISTRIBUTION else None


def normalized(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503): ``Merlin_Chat`` is ``merlin-chat``."""
    return re.sub(r"[-_.]+", "-", name).lower()


CHECKOUT = find_checkout()


def default_var_dir(checkout: Path | None = CHECKOUT, env: Mapping[str, str] = os.environ) -> Path:
    """The checkout's ``var/``, else ``$XDG_DATA_HOME/merlin`` (``~/.local/share/merlin``)."""
    if checkout is not None:
        return checkout / "var"
    return _xdg(env, "XDG_DATA_HOME", Path(".local", "share")) / _FOLDER


def default_cache_dir(checkout: Path | None = CHECKOUT, env: Mapping[str, str] = os.environ) -> Path:
    """The checkout's ``.cache/``, else ``$XDG_CACHE_HOME/merlin`` (``~/.cache/merlin``)."""
    if checkout is not None:
        return checkout / ".cache"
    return _xdg(env, "XDG_CACHE_HOME", Path(".cache")) / _FOLDER


def _xdg(env: Mapping[str, str], variable: str, under_home: Path) -> Path:
    # The XDG Base Directory spec: unset, empty or relative means the default under the home.
    given = env.get(variable, "")
    if given and Path(given).is_absolute():
        return Path(given)
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / under_home
