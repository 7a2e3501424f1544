"""The documentation's reference pages, written from the code: ``python -m merlin.docs_reference``
(``make docs-reference``).

docs/reference/http-api.md and webhooks.md come from the APIs' OpenAPI documents (each kept as JSON
in docs/reference/openapi/ too, for download), metrics.md from the services' Prometheus registries,
cli.md from the ``merlin`` command's parser, docs/decisions/index.md from the decision records and
docs/settings.md from the settings classes (``merlin.settings_reference``). They are committed, and a
unit test fails while one differs from what this writes (decision 0024).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from pydantic import SecretStr

from admin_api.app import create_app as admin_app
from admin_api.settings import AdminApiSettings
from forwarder.metrics import ForwarderMetrics
from kernel.auth import AuthSettings
from kernel.http.operations import Operations
from kernel.state_dirs import CHECKOUT
from merlin import settings_reference
from merlin.cli import build_parser
from read_api.app import create_app as read_app
from webhooks.settings import EndpointsSettings
from write_api.app import create_app as write_app

# Installed, there is no docs/ to refresh: the folder must be given.
DOCS = CHECKOUT / "docs" if CHECKOUT is not None else None
REFRESH = "python -m merlin.docs_reference"

HTTP_API = Path("reference/http-api.md")
WEBHOOKS = Path("reference/webhooks.md")
METRICS = Path("reference/metrics.md")
CLI = Path("reference/cli.md")
DECISIONS = Path("decisions/index.md")
SETTINGS = Path("settings.md")
OPENAPI = Path("reference/openapi")

# Settings that let each app be built as its service builds it, with nothing running: no token or
# key here is ever used, and none of them changes what the documents say.
_JWT_SECRET = SecretStr("documentation-only-" + "x" * 32)
_ADMIN_TOKEN = SecretStr("documentation-only")
_FERNET_KEY = SecretStr("A" * 43 + "=")  # well-formed


def _generated(source: str) -> str:
    return f"<!-- Written by `{REFRESH}` (`make docs-reference`) from {source}: change that, not this. -->"


def _apps() -> dict[str, FastAPI]:
    """Each API's app, by its command's name."""
    return {
        "write-api": write_app(auth=AuthSettings(jwt_secret=_JWT_SECRET)),
        "read-api": read_app(auth=AuthSettings(jwt_secret=_JWT_SECRET)),
        "admin-api": admin_app(
            AdminApiSettings.model_validate({"MERLIN_ADMIN_TOKEN": _ADMIN_TOKEN}),
            auth=AuthSettings(jwt_secret=_JWT_SECRET),
            endpoints=EndpointsSettings(secret_keys=_FERNET_KEY),
        ),
    }


# --- The HTTP API and the webhooks, from the OpenAPI documents ---------------------------------------------

Document = Mapping[str, Any]


def _anchor(*parts: str) -> str:
    return "-".join(re.sub(r"[^a-z0-9_]+", "-", part.lower()).strip("-") for part in parts)


def _cell(text: object) -> str:
    """``text`` fit for one cell of a Markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _schema_ref(schema: Mapping[str, Any], api: str) -> str:
    """A schema in a few words: a link to a named one, or its type."""
    reference = schema.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[-1]
        return f"[`{name}`](#{_anchor(api, 'schema', name)})"
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            joiner = " and " if combined == "allOf" else " or "
            return joiner.join(_schema_ref(each, api) for each in schema[combined])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(each)}`" for each in schema["enum"])
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {_schema_ref(schema['items'], api)}"
    if kind is None:
        return "any"
    shown = " or ".join(kind) if isinstance(kind, list) else str(kind)
    return f"`{shown}`" + (f" ({schema['format']})" if "format" in schema else "")


def _references(value: object) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/components/schemas/"):
                yield item.rsplit("/", 1)[-1]
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _referred(document: Document, start: object) -> list[str]:
    """The document's named schemas that ``start`` refers to, directly or through one another."""
    schemas = document.get("components", {}).get("schemas", {})
    found: list[str] = []
    pending = list(_references(start))
    while pending:
        name = pending.pop(0)
        if name not in found and name in schemas:
            found.append(name)
            pending.extend(_references(schemas[name]))
    return found


def _json_block(value: object) -> list[str]:
    return ["```json", json.dumps(value, indent=2, ensure_ascii=False), "```"]


def _security(document: Document, operation: Mapping[str, Any]) -> str:
    required = operation.get("security", document.get("security"))
    if required is None:
        return "none declared in the document"
    if not required:
        return "none"
    return " or ".join(
        " and ".join(
            f"`{name}`" + (f" ({', '.join(scopes)})" if scopes else "") for name, scopes in each.items()
        )
        or "none"
        for each in required
    )


def _parameters(parameters: Sequence[Mapping[str, Any]], api: str) -> list[str]:
    lines = ["| name | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
    for parameter in parameters:
        cells = (
            f"`{parameter['name']}`",
            parameter.get("in", ""),
            _schema_ref(parameter.get("schema", {}), api),
            "yes" if parameter.get("required") else "no",
            _cell(parameter.get("description", "")),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _content(content: Mapping[str, Any], api: str) -> str:
    return "; ".join(
        f"`{media}`: {_schema_ref(item.get('schema', {}), api)}" for media, item in content.items()
    )


def _responses(responses: Mapping[str, Any], api: str) -> list[str]:
    lines = ["| status | description | content |", "| --- | --- | --- |"]
    for status, response in responses.items():
        cells = (
            f"`{status}`",
            _cell(response.get("description", "")),
            _content(response.get("content", {}), api),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _operation(
    document: Document, api: str, method: str, path: str, operation: Mapping[str, Any]
) -> list[str]:
    operation_id = operation.get("operationId", f"{method}-{path}")
    lines = [f"### `{method.upper()} {path}` {{#{_anchor(api, operation_id)}}}", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    lines += [f"- Operation id: `{operation_id}`", f"- Security: {_security(document, operation)}"]
    if operation.get("tags"):
        lines.append("- Tags: " + ", ".join(f"`{tag}`" for tag in operation["tags"]))
    if operation.get("deprecated"):
        lines.append("- Deprecated")
    lines.append("")
    if operation.get("parameters"):
        lines += ["Parameters:", "", *_parameters(operation["parameters"], api), ""]
    body = operation.get("requestBody")
    if body:
        required = " (required)" if body.get("required") else ""
        lines += [f"Request body{required}: {_content(body.get('content', {}), api)}", ""]
    if operation.get("responses"):
        lines += ["Responses:", "", *_responses(operation["responses"], api), ""]
    return lines


_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _operations(paths: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    for path, item in paths.items():
        for method in _METHODS:
            if method in item:
                yield method, path, item[method]


def _schemas(document: Document, api: str, names: Iterable[str], level: str) -> list[str]:
    schemas = document.get("components", {}).get("schemas", {})
    lines: list[str] = []
    for name in names:
        lines += [
            f"{level} `{name}` {{#{_anchor(api, 'schema', name)}}}",
            "",
            *_json_block(schemas[name]),
            "",
        ]
    return lines


def _api_section(api: str, document: Document) -> list[str]:
    info = document.get("info", {})
    lines = [
        f"## {info.get('title', api)} {{#{_anchor(api)}}}",
        "",
        info.get("description", ""),
        "",
        f"`merlin {api}`; OpenAPI {document.get('openapi', '')}, version {info.get('version', '')}; "
        f"the whole document: [openapi/{api}.json](openapi/{api}.json).",
        "",
    ]
    schemes = document.get("components", {}).get("securitySchemes", {})
    if schemes:
        lines += ["Security schemes:", "", "| name | type | details |", "| --- | --- | --- |"]
        for name, scheme in schemes.items():
            details = {k: v for k, v in scheme.items() if k not in ("type", "description")}
            text = _cell(scheme.get("description", "")) or ", ".join(
                f"{k}: `{v}`" for k, v in details.items()
            )
            lines.append(f"| `{name}` | {scheme.get('type', '')} | {text} |")
        lines.append("")
    for method, path, operation in _operations(document.get("paths", {})):
        lines += _operation(document, api, method, path, operation)
    names = list(document.get("components", {}).get("schemas", {}))
    if names:
        lines += [f"### Schemas of the {info.get('title', api)} {{#{_anchor(api, 'schemas')}}}", ""]
        lines += _schemas(document, api, names, "####")
    return lines


def render_http_api(documents: Mapping[str, Document]) -> str:
    """reference/http-api.md: every operation of every API."""
    links = ", ".join(f"[{api}](openapi/{api}.json)" for api in documents)
    lines = [
        "# HTTP API",
        "",
        _generated("the APIs' OpenAPI documents"),
        "",
        "Every operation of merlin's three APIs, as their OpenAPI documents describe them. An operator "
        f"reads each document at the API's `/openapi.json`; here they are to download: {links}.",
        "",
    ]
    for api, document in documents.items():
        lines += _api_section(api, document)
    return "\n".join(lines).rstrip("\n") + "\n"


def _webhook(document: Document, api: str, name: str, method: str, operation: Mapping[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()}` {{#{_anchor('webhook', name, method)}}}", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    if operation.get("operationId"):
        lines += [f"- Operation id: `{operation['operationId']}`", ""]
    headers = [p for p in operation.get("parameters", []) if p.get("in") == "header"]
    if headers:
        lines += ["Headers:", "", *_parameters(headers, api), ""]
    others = [p for p in operation.get("parameters", []) if p.get("in") != "header"]
    if others:
        lines += ["Parameters:", "", *_parameters(others, api), ""]
    body = operation.get("requestBody", {})
    for media, item in body.get("content", {}).items():
        schema = item.get("schema", {})
        lines += [f"Payload, `{media}`:", "", *_json_block(schema), ""]
        referred = _referred(document, schema)
        if referred:
            lines += ["The schemas it refers to:", ""]
            schemas = document.get("components", {}).get("schemas", {})
            for each in referred:
                lines += [f"`{each}`:", "", *_json_block(schemas[each]), ""]
    if operation.get("responses"):
        lines += ["Answers merlin expects:", "", *_responses(operation["responses"], api), ""]
    return lines


def render_webhooks(documents: Mapping[str, Document]) -> str:
    """reference/webhooks.md: the ``webhooks`` of every document (OpenAPI 3.1)."""
    lines = [
        "# Webhooks",
        "",
        _generated("the `webhooks` of the APIs' OpenAPI documents"),
        "",
        "What merlin sends to endpoints: per webhook, its headers and the JSON Schema of its payload.",
        "",
    ]
    found = False
    for api, document in documents.items():
        for name, item in document.get("webhooks", {}).items():
            found = True
            source = f"From the [{api} document](openapi/{api}.json)."
            lines += [f"## `{name}` {{#{_anchor('webhook', name)}}}", "", source, ""]
            for method in _METHODS:
                if method in item:
                    lines += _webhook(document, api, name, method, item[method])
    if not found:
        lines += ["No API's OpenAPI document declares webhooks.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- Metrics, from the services' registries ---------------------------------------------------------------


@dataclass(frozen=True)
class MetricDoc:
    """One metric family as Prometheus scrapes it."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]


# What a family is called in the exposition, from its name in the registry.
_SUFFIXES = {"counter": "_total", "info": "_info"}


def metrics_of(registry: CollectorRegistry) -> list[MetricDoc]:
    """Every family ``registry`` exports, with its labels, even while it has no series yet."""
    found: dict[str, MetricDoc] = {}
    # prometheus_client keeps no public list of a registry's collectors; a labelled metric without
    # series collects no samples, so its label names come from the metric object itself.
    for collector in list(registry._collector_to_names):
        described: Callable[[], Iterable[Metric]] | None = getattr(collector, "describe", None)
        families = list(described() if described is not None else [])
        families += collector.collect()
        for family in families:
            labels: list[str] = []
            if isinstance(collector, MetricWrapperBase):
                labels += collector._labelnames
            labels += getattr(family, "_labelnames", ())
            labels += [label for sample in family.samples for label in sample.labels if label != "le"]
            name = family.name + _SUFFIXES.get(family.type, "")
            known = found.get(name)
            merged = (*(known.labels if known else ()), *labels)
            found[name] = MetricDoc(name, family.type, family.documentation, tuple(dict.fromkeys(merged)))
    return list(found.values())


def _registries() -> dict[str, CollectorRegistry]:
    """Each service's registry, by its command's name, holding every metric the service exports."""
    registries: dict[str, CollectorRegistry] = {}
    for name, app in _apps().items():
        # Middleware (the request counters among it) is built on the app's first call.
        app.build_middleware_stack()
        operations: Operations = app.state.operations
        registries[name] = operations.registry
    registries["forwarder"] = ForwarderMetrics().registry
    return registries


def render_metrics(registries: Mapping[str, CollectorRegistry]) -> str:
    """reference/metrics.md: every metric of every service."""
    services: dict[str, list[str]] = {}
    metrics: dict[str, MetricDoc] = {}
    for service, registry in registries.items():
        for metric in metrics_of(registry):
            metrics.setdefault(metric.name, metric)
            services.setdefault(metric.name, []).append(f"`{service}`")
    lines = [
        "# Metrics",
        "",
        _generated("the services' Prometheus registries"),
        "",
        "Every metric a service exports on its metrics listener (and the APIs on `/metrics` too): a "
        "counter's samples end in `_total`, a histogram's in `_bucket`, `_sum` and `_count`. Under "
        "`--workers N` an API's parent answers for its workers: `process_*` once per worker, labelled "
        "`worker`, and no `python_gc_*`.",
        "",
        "| metric | type | labels | help | exported by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(metrics):
        metric = metrics[name]
        labels = ", ".join(f"`{label}`" for label in metric.labels)
        cells = (f"`{name}`", metric.kind, labels, _cell(metric.help), ", ".join(services[name]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- The merlin command, from its parser -------------------------------------------------------------------


def _argument(action: argparse.Action) -> tuple[str, str]:
    """How ``action`` is written on the command line, and the value it takes."""
    if action.choices is not None and not isinstance(action.choices, Mapping):
        value = "one of " + ", ".join(f"`{choice}`" for choice in action.choices)
    elif action.nargs == 0 or not action.option_strings:
        value = ""
    else:
        metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        value = f"`{metavar}`"
    if action.option_strings:
        return ", ".join(f"`{option}`" for option in action.option_strings), value
    return f"`{action.metavar if isinstance(action.metavar, str) else action.dest}`", value


def _command(parser: argparse.ArgumentParser, words: list[str], summary: str | None) -> list[str]:
    depth = min(len(words) + 1, 6)
    title = " ".join(words)
    lines = [f"{'#' * depth} `{title}` {{#{_anchor(*words)}}}", ""]
    for text in dict.fromkeys(each for each in (summary, parser.description) if each):
        lines += [" ".join(text.split()).replace("``", "`"), ""]
    rows: list[str] = []
    formatter = argparse.HelpFormatter(title)
    subcommands: list[tuple[argparse.ArgumentParser, str, str | None]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {each.dest: each.help for each in action._choices_actions}
            subcommands += [(sub, name, helps.get(name)) for name, sub in action.choices.items()]
            continue
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        written, value = _argument(action)
        required = "yes" if action.required else "no"
        help_text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| {written} | {value} | {required} | {_cell(help_text)} |")
    if rows:
        lines += ["| argument | value | required | description |", "| --- | --- | --- | --- |", *rows, ""]
    for group in parser._mutually_exclusive_groups:
        options = ", ".join(f"`{action.option_strings[0]}`" for action in group._group_actions)
        lines += [f"{'Exactly' if group.required else 'At most'} one of {options}.", ""]
    if subcommands:
        links = ", ".join(f"[`{name}`](#{_anchor(*words, name)})" for _, name, _ in subcommands)
        lines += [f"Commands: {links}", ""]
    for sub, name, sub_summary in subcommands:
        lines += _command(sub, [*words, name], sub_summary)
    return lines


def render_cli(parser: argparse.ArgumentParser) -> str:
    """reference/cli.md: every command and subcommand of ``merlin``, with its arguments."""
    lines = ["# The merlin command", "", _generated("the `merlin` command's argument parser"), ""]
    lines += _command(parser, [parser.prog], None)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- The decision records ----------------------------------------------------------------------------------

_RECORD = re.compile(r"\d{4}-[a-z0-9-]+\.md")
# The records' titles say "# 0001 — …" or "# 0007: …".
_TITLE = re.compile(r"#\s+(?P<number>\d{4})\s*(?:\N{EM DASH}|:)\s*(?P<title>\S.*)")


def render_decisions(folder: Path) -> str:
    """decisions/index.md: every record in ``folder``, by number, with its title."""
    rows = []
    for path in sorted(folder.iterdir()):
        if not _RECORD.fullmatch(path.name):
            continue
        first = path.read_text().split("\n", 1)[0]
        matched = _TITLE.fullmatch(first.strip())
        if matched is None or not path.name.startswith(matched["number"]):
            raise ValueError(f"{path}: its first line is not '# NNNN — title' with the file's number")
        rows.append(f"| [{matched['number']}]({path.name}) | {_cell(matched['title'])} |")
    lines = [
        "# Decision records",
        "",
        _generated("the records' titles"),
        "",
        "Why merlin is built as it is: each record states a decision, what it was weighed against "
        "and what follows from it. A new record is `NNNN-slug.md` in this folder, its first line "
        "`# NNNN: title`.",
        "",
        "| record | decision |",
        "| --- | --- |",
        *rows,
    ]
    return "\n".join(lines) + "\n"


# --- All of them -------------------------------------------------------------------------------------------


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Each API's OpenAPI document, by its command's name."""
    return {name: app.openapi() for name, app in _apps().items()}


def render(docs: Path) -> dict[Path, str]:
    """Every generated file, by its path under ``docs``."""
    documents = openapi_documents()
    pages = {
        HTTP_API: render_http_api(documents),
        WEBHOOKS: render_webhooks(documents),
        METRICS: render_metrics(_registries()),
        CLI: render_cli(build_parser()),
        DECISIONS: render_decisions(docs / DECISIONS.parent),
        SETTINGS: settings_reference.render(),
    }
    for api, document in documents.items():
        pages[OPENAPI / f"{api}.json"] = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference pages into the checkout's docs/, or into the folder given."""
    parser = argparse.ArgumentParser(prog=REFRESH, description=__doc__)
    parser.add_argument("docs", nargs="?", type=Path, default=DOCS, help="default: %(default)s")
    docs: Path | None = parser.parse_args(argv).docs
    if docs is None:
        parser.error("merlin runs from no checkout here: give the docs folder to write into")
    for relative, text in render(docs).items():
        path = docs / relative
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
