"""The three APIs' OpenAPI documents: fit for client generators and the docs' "Authorize" box."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from cryptography.fernet import Fernet

from admin_api.settings import AdminApiSettings
from kernel.auth import AuthSettings
from kernel.http.auth import OPEN_PATHS
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
