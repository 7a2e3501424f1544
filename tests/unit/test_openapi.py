"""The three APIs' OpenAPI documents: fit for client generators and the docs' "Authorize" box."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from typing import Any

import pytest
from cryptography.fernet import Fernet
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

from admin_api.settings import AdminApiSettings
from domain import EVENT_TYPES
from kernel.auth import AuthSettings
from kernel.http.auth import OPEN_PATHS
from kernel.http.problems import PROBLEMS
from kernel.http.responses import PROBLEM_TYPE_BASE
from tests import PROJECT_ROOT
from webhooks.payload_schemas import event_schemas
from webhooks.settings import EndpointsSettings

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@cache
def documents() -> dict[str, dict[str, Any]]:
    """Each API's document, as its app serves it at ``/openapi.json`` (built, never started)."""
    from admin_api.app import create_app as admin_api
    from read_api.app import create_app as read_api
    from write_api.app import create_app as write_api

    auth = AuthSettings(jwt_secret="s" * 32)
    admin = AdminApiSettings.model_validate({"MERLIN_ADMIN_TOKEN": "t" * 20})
    keys = EndpointsSettings(secret_keys=Fernet.generate_key().decode())
    apps = {
        "write": write_api(auth=auth),
        "read": read_api(auth=auth),
        "admin": admin_api(admin, auth=auth, endpoints=keys),
    }
    return {name: app.openapi() for name, app in apps.items()}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


@pytest.mark.parametrize("api", ["write", "read", "admin"])
def test_the_bearer_scheme_is_named_once_and_required_by_every_operation_but_health(api: str) -> None:
    document = documents()[api]
    assert document["components"]["securitySchemes"]["bearerAuth"] | {"description": ""} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "",
    }
    secured = {path for path, _, operation in operations(document) if operation["security"]}
    open_ = {path for path, _, operation in operations(document) if operation["security"] == []}
    assert open_ == OPEN_PATHS
    for path, method, operation in operations(document):
        if path not in OPEN_PATHS:
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
    assert secured == set(document["paths"]) - OPEN_PATHS


@pytest.mark.parametrize("api", ["write", "read", "admin"])
def test_each_document_is_valid_openapi_3_1(api: str) -> None:
    document = documents()[api]
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_operation_ids_are_named_in_camel_case_and_unique_across_the_documents() -> None:
    named = [
        operation["operationId"]
        for document in documents().values()
        for item in (*document["paths"].values(), *document.get("webhooks", {}).values())
        for method, operation in item.items()
        if method in METHODS
    ]
    assert len(named) == len(set(named)), sorted(name for name in named if named.count(name) > 1)
    # FastAPI's own are the function's name, path and method joined by underscores.
    assert [name for name in named if not re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)+", name)] == []
    assert {"postMessage", "editMessage", "getMessage", "listRoomMessages", "getEventOutcome"} <= set(named)


@pytest.mark.parametrize("api", ["write", "read", "admin"])
def test_every_answer_has_a_schema_and_none_is_empty(api: str) -> None:
    document = documents()[api]
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            content = response.get("content")
            if status == "204":
                assert content is None, (method, path)
                continue
            assert content, (method, path, status)
            for media, described in content.items():
                assert described.get("schema") not in (None, {}), (method, path, status, media)
                if not status.startswith("2"):
                    assert (media, described["schema"]) == (
                        "application/problem+json",
                        {"$ref": "#/components/schemas/Problem"},
                    ), (method, path, status)
    assert [name for name, schema in document["components"]["schemas"].items() if not schema] == []


@pytest.mark.parametrize("api", ["write", "read", "admin"])
def test_errors_name_their_problem_types_and_headers(api: str) -> None:
    document = documents()[api]
    headers = document["components"]["headers"]
    assert headers["RetryAfter"]["required"] is True
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert "503" in responses, (method, path)  # the listener's own, at the most connections
        for status, response in responses.items():
            if status.startswith("2"):
                continue
            kinds = response["content"]["application/problem+json"]["examples"]
            assert kinds, (method, path, status)
            for kind, example in kinds.items():
                assert PROBLEMS[kind].status == int(status)
                assert example["value"]["type"] == PROBLEM_TYPE_BASE + kind
                assert PROBLEM_TYPE_BASE + kind in response["description"]
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"] == {"$ref": "#/components/headers/RetryAfter"}
            if status == "401":
                assert "WWW-Authenticate" in response["headers"]
        if path not in OPEN_PATHS:
            assert {"401", "403"} <= set(responses), (method, path)
        if "requestBody" in operation:
            assert {"400", "415", "422"} <= set(responses), (method, path)


def test_what_each_api_alone_answers_is_stated_where_it_answers_it() -> None:
    write, read, admin = (documents()[api] for api in ("write", "read", "admin"))

    def kinds(document: dict[str, Any], status: str) -> set[str]:
        found: set[str] = set()
        for path, _, operation in operations(document):
            if path not in OPEN_PATHS and status in operation["responses"]:
                found |= set(
                    operation["responses"][status]["content"]["application/problem+json"]["examples"]
                )
        return found

    assert kinds(write, "503") == {"unavailable", "outcome-unknown", "too-many-connections"}
    assert kinds(write, "413") == {"too-large"}
    assert kinds(read, "503") == {
        "unavailable",
        "projection-behind",
        "too-many-waiters",
        "too-many-streams",
        "too-many-connections",
    }
    assert kinds(read, "429") == {"rate-limited", "too-many-waiting-reads"}
    assert kinds(read, "413") == set()  # no body limit, no body
    assert kinds(admin, "429") == set()  # the admin API limits no caller
    assert kinds(admin, "409") == {"conflict"}


def test_the_version_is_the_packages() -> None:
    installed = metadata.version("merlin-chat")
    assert installed == tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {document["info"]["version"] for document in documents().values()} == {installed}


def test_every_problem_the_code_answers_is_in_the_catalog() -> None:
    """Each ``problem(status, "kind", ...)`` of the shipped code (and the edge's own) is one the documents
    can name, with that status."""
    answered: set[tuple[object, object]] = set()
    for package in ("kernel", "write_api", "read_api", "admin_api"):
        for source in (PROJECT_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("problem", "_problem")
                    and len(node.args) >= 2
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[1], ast.Constant)
                ):
                    answered.add((node.args[0].value, node.args[1].value))
    assert len(answered) > 15  # the scan finds them
    assert {(problem.status, problem.kind) for problem in PROBLEMS.values()} >= answered


def test_the_admin_document_describes_what_endpoints_are_sent() -> None:
    document = documents()["admin"]
    assert set(document["webhooks"]) == set(EVENT_TYPES)
    for event_type, schema in event_schemas().items():
        call = document["webhooks"][event_type]["post"]
        body = call["requestBody"]["content"]["application/json"]["schema"]
        embedded = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        # One source: the published JSON Schema less its own identifiers.
        assert embedded == {key: value for key, value in schema.items() if key not in ("$schema", "$id")}
        assert "HMAC-SHA256" in embedded["description"]
        parameters = {parameter["name"]: parameter for parameter in call["parameters"]}
        assert {"webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key"} <= {
            name for name, parameter in parameters.items() if parameter["required"]
        }
        assert "constant time" in parameters["webhook-signature"]["description"]
