"""``merlin config SERVICE``: the settings a service would run with, and where each came from.

It reads the environment and nothing else: no broker, store or API is asked anything.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

SHOWN = ("write-api", "read-api", "admin-api", "forwarder", "all")


def _text(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, separators=(",", ":"))


def _config(options: argparse.Namespace) -> int:
    # Loaded here, as the settings are: the command's other uses need neither.
    from merlin.settings_registry import READ_BY, in_force

    rows = [row for settings in READ_BY[options.reads] for row in in_force(settings)]
    if options.json:
        print(json.dumps({"service": options.reads, "settings": [asdict(row) for row in rows]}, indent=2))
        return 0
    names = max(len(row.variable) for row in rows)
    values = min(40, max(len(_text(row.value)) for row in rows))  # a long one pushes no column
    for index, row in enumerate(rows):
        if index == 0 or row.settings != rows[index - 1].settings:
            print(f"{'' if index == 0 else chr(10)}# {row.settings}")
        print(f"{row.variable:<{names}}  {_text(row.value):<{values}}  {row.source}")
    return 0


def add_config_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser(
        "config",
        help="the settings a service would run with: variable, value (secrets masked), source",
        description="Print the settings SERVICE would run with in this environment, each as its variable, "
        "its value (secrets masked) and where it came from (environment or default). It connects to "
        "nothing. Like every command, it is refused when a MERLIN_* variable is no setting or a value "
        "is bad.",
    )
    config.add_argument(
        "reads", metavar="SERVICE", nargs="?", default="all", choices=SHOWN,
        help=f"{', '.join(SHOWN)} (default: all, the settings of every command)",
    )  # fmt: skip
    config.add_argument("--json", action="store_true", help="a JSON document, for machines")
    config.set_defaults(handler=_config)
