"""helm, kubeconform and the Kubernetes JSON schemas the chart's tests use, as the Makefile makes them.

No cluster runs here, so the chart (deploy/helm/merlin) is checked by rendering it and validating
what comes out. kubeconform validates against JSON schemas of the Kubernetes API, which
``python -m tests.kube_tools schemas SWAGGER OUT`` makes from the API's own OpenAPI (v2) spec, laid
out as kubeconform looks them up (``{kind}-{group}-{version}.json``, ``{kind}-{version}.json`` for
the core group). They are self-contained (the definitions a kind reaches are copied in) and strict:
an object with known fields takes no others, as ``kubectl --validate=strict`` and kubeconform's own
published schemas have it. Two types are widened to what the API server accepts: an IntOrString is
a string or an integer, a Quantity a string or a number (``cpu: 1``). A field left null is refused,
where the API server would take it as unset: a template that renders a null is a mistake here.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests import PROJECT_ROOT

_DEFINITIONS = "#/definitions/"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

Schema = dict[str, Any]


def makefile_variable(name: str) -> str:
    """The value the Makefile gives ``name`` (``NAME := value``): one place for the tools' versions."""
    found = re.search(rf"^{name} := (\S+)$", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE)
    if found is None:
        raise LookupError(f"the Makefile sets no {name}")
    return found.group(1)


def cached(variable: str) -> Path:
    """A file the Makefile makes under .cache/, by the variable naming it (``HELM``, ``KUBE_SCHEMAS``…)."""
    path = makefile_variable(variable)
    for version in re.findall(r"\$\((\w+_VERSION)\)", path):
        path = path.replace(f"$({version})", makefile_variable(version))
    return PROJECT_ROOT / path


def schema_locations() -> list[str]:
    """kubeconform's ``-schema-location`` templates: the API's kinds, then the CRDs' (ServiceMonitor)."""
    return [
        str(cached("KUBE_SCHEMAS").parent / "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
        str(cached("CRD_SCHEMAS").parent / "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
    ]


def kubernetes_version() -> str:
    """The Kubernetes release the schemas describe, as kubeconform's ``-kubernetes-version`` takes it."""
    return makefile_variable("KUBERNETES_VERSION").removeprefix("v")


def _strict(node: Schema) -> Schema:
    """``node`` with its $refs made local, no descriptions, and no unknown field allowed beside known ones."""
    if "$ref" in node:  # its siblings are documentation only
        return {"$ref": node["$ref"]}
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out = {key: value for key, value in node.items() if key != "description"}
    if "properties" in out:
        out["properties"] = {name: _strict(field) for name, field in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    for combined in ("allOf", "anyOf", "oneOf"):
        if combined in out:
            out[combined] = [_strict(part) for part in out[combined]]
    return out


def _references(node: object) -> Iterator[str]:
    """The names of the definitions ``node`` refers to, at any depth."""
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith(_DEFINITIONS):
            yield reference.removeprefix(_DEFINITIONS)
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _definition(name: str, definitions: dict[str, Schema]) -> Schema:
    if name == _QUANTITY:
        return {"oneOf": [{"type": "string"}, {"type": "number"}]}
    return _strict(definitions[name])


def kind_schema(name: str, definitions: dict[str, Schema]) -> Schema:
    """The standalone strict schema of the kind the definition ``name`` describes."""
    (gvk,) = definitions[name]["x-kubernetes-group-version-kind"]
    group, version = gvk["group"], gvk["version"]
    schema = _definition(name, definitions)
    properties = schema["properties"]
    properties["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}" if group else version]}
    properties["kind"] = {"type": "string", "enum": [gvk["kind"]]}
    reached: dict[str, Schema] = {}
    waiting = list(_references(schema))
    while waiting:
        reference = waiting.pop()
        if reference not in reached:
            reached[reference] = _definition(reference, definitions)
            waiting.extend(_references(reached[reference]))
    schema["definitions"] = dict(sorted(reached.items()))
    return schema


def schema_file_name(gvk: dict[str, str]) -> str:
    """Where kubeconform looks for a kind's schema: ``{kind}{KindSuffix}.json``, in lower case."""
    suffix = f"-{gvk['group'].split('.')[0]}-{gvk['version']}" if gvk["group"] else f"-{gvk['version']}"
    return f"{gvk['kind']}{suffix}.json".lower()


def write_schemas(swagger: Path, out: Path) -> int:
    """One schema file in ``out`` for each kind of the spec ``swagger``; the number written."""
    definitions: dict[str, Schema] = json.loads(swagger.read_text())["definitions"]
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, definition in definitions.items():
        kinds = definition.get("x-kubernetes-group-version-kind", [])
        if len(kinds) != 1:  # none: not a kind; several: the API's shared option types (DeleteOptions)
            continue
        schema = kind_schema(name, definitions)
        (out / schema_file_name(kinds[0])).write_text(json.dumps(schema, separators=(",", ":")))
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube_tools", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    schemas = commands.add_parser("schemas", help="Kubernetes JSON schemas for kubeconform")
    schemas.add_argument("swagger", type=Path, help="api/openapi-spec/swagger.json of k8s.io/kubernetes")
    schemas.add_argument("out", type=Path)
    options = parser.parse_args()
    print(f"kube schemas: {write_schemas(options.swagger, options.out)} kinds in {options.out}")


if __name__ == "__main__":
    main()
