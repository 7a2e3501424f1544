"""docs/settings.md, written from the settings classes: ``python -m merlin.settings_reference``
(``make docs-settings``). A unit test fails while the file differs from what this writes."""

from __future__ import annotations

import argparse
import inspect
import json
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic import HttpUrl, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from kernel.state_dirs import CHECKOUT, default_cache_dir, default_var_dir
from merlin.settings_registry import DIRECT, READ_BY, SETTINGS, variables

# Installed, there is no docs/ to refresh: the path must be given.
DOCUMENT = CHECKOUT / "docs" / "settings.md" if CHECKOUT is not None else None
REFRESH = "python -m merlin.settings_reference"

_HEAD = f"""# Settings

<!-- Written by `{REFRESH}` (`make docs-settings`) from the settings classes: change a
description there, not here. -->

Every setting is an environment variable whose name starts with `MERLIN_`. merlin refuses to run
with a `MERLIN_*` variable that is none of those below, naming the closest it knows, and reports a
bad value as one line naming its variable (decision 0020). `merlin config SERVICE` prints the
settings a service would run with in this environment and where each came from (`--json` for
machines). Tracing alone is configured by OpenTelemetry's own `OTEL_*` variables instead
(docs/operations.md).

Lists and objects are written as JSON; booleans as `true` or `false`; durations in the unit their
name ends with (`_MS`, `_SECONDS`), or in seconds. In the defaults, `<var>` and `<cache>` are
merlin's state directories: a checkout's `var/` and `.cache/`; installed, `$XDG_DATA_HOME/merlin`
and `$XDG_CACHE_HOME/merlin` (decision 0019).
"""

_TYPES: dict[object, str] = {
    bool: "boolean", int: "integer", float: "number", str: "text", Path: "path", SecretStr: "text, secret",
    HttpUrl: "URL",
}  # fmt: skip
# The constraints of pydantic's Field (annotated_types' Ge, Gt, …), by the attribute each holds.
_BOUNDS = (("ge", "≥ {}"), ("gt", "> {}"), ("le", "≤ {}"), ("lt", "< {}"), ("min_length", "{}+ characters"),
           ("max_length", "≤ {} characters"))  # fmt: skip


def render() -> str:
    """The whole document."""
    sections = [_HEAD, *(_section(settings) for settings in SETTINGS), _direct()]
    return "\n".join(sections)


def _section(settings: type[BaseSettings]) -> str:
    prefix = str(settings.model_config.get("env_prefix", ""))
    readers = [f"`merlin {name}`" for name, read in READ_BY.items() if name != "all" and settings in read]
    summary = " ".join((inspect.getdoc(settings) or "").split("\n\n")[0].split()).replace("``", "`")
    lines = [
        f"## `{prefix}*`: {settings.__name__}",
        "",
        summary,
        f"Defined in `{settings.__module__}`" + (f"; read by {', '.join(readers)}." if readers else "."),
        "",
        "| variable | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    names: dict[str, list[str]] = {}
    for variable in variables(settings):
        names.setdefault(variable.field, []).append(f"`{variable.name}`")
    for field, info in settings.model_fields.items():
        cells = (" or ".join(names[field]), _type(info), _default(info), info.description or "")
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _direct() -> str:
    lines = [
        "## Read without a settings class",
        "",
        "| variable | default | description |",
        "| --- | --- | --- |",
        *(f"| `{each.name}` | {each.default} | {_cell(each.description)} |" for each in DIRECT),
    ]
    return "\n".join(lines) + "\n"


def _type(info: FieldInfo) -> str:
    annotation = info.annotation
    arguments = typing.get_args(annotation)
    optional = type(None) in arguments
    if optional:
        annotation = next(argument for argument in arguments if argument is not type(None))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        shown = "one of " + ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    elif origin is list:
        shown = "JSON list"
    elif origin is dict:
        shown = "JSON object"
    else:
        shown = _TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = [
        shape.format(getattr(rule, name))
        for rule in info.metadata
        for name, shape in _BOUNDS
        if getattr(rule, name, None) is not None
    ]
    return ", ".join([shown, *bounds]) + (", optional" if optional else "")


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, list | dict):
        value = json.dumps(value)
    # The state directories by name: the same document in every checkout and on every machine.
    shown = str(value).replace(str(default_var_dir()), "<var>").replace(str(default_cache_dir()), "<cache>")
    return f"`{shown}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference to the checkout's docs/settings.md, or to the path given."""
    parser = argparse.ArgumentParser(prog="python -m merlin.settings_reference", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DOCUMENT, help="default: %(default)s")
    path: Path | None = parser.parse_args(argv).path
    if path is None:
        parser.error("merlin runs from no checkout here: give the path to write")
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
