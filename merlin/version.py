"""``merlin --version``: the installed distribution's version, looked up only when asked for."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kernel.state_dirs import CODE_ROOT, DISTRIBUTION


def version_line() -> str:
    """``merlin-chat 0.1.0``: the name and version pip installed; or where merlin runs from uninstalled."""
    # Imported here: every other command would pay for it, and none needs it.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{DISTRIBUTION} {version(DISTRIBUTION)}"
    except PackageNotFoundError:
        return f"{DISTRIBUTION}, not installed (running from {CODE_ROOT})"


class VersionAction(argparse.Action):
    """argparse's own ``version`` action wants the text when the parser is built, for every command."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **_: Any) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print merlin's version and exit"
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(version_line())
        parser.exit()
