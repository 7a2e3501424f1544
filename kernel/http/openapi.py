"""What every API's OpenAPI document says beyond what FastAPI derives from its routes.

Callers are authenticated by an ASGI layer (``kernel.http.auth``), not by a FastAPI
dependency, so FastAPI cannot see that a route needs a token: the document is given
its security scheme here, once, for every operation but those ``OPEN_PATHS`` leaves
open. So with the answers that layers in front of every route give (401, 403, 429,
the edge's 503; for a body, 400, 413, 415; for any input, 422): each operation is
given them here, as problem+json (``kernel.http.problems``), rather than by every
route. Nothing here runs per request: the document is built once, when first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastapi import FastAPI

from kernel.http.auth import OPEN_PATHS
from kernel.http.problems import (
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    problem_kinds,
    problem_responses,
    problem_schema,
)
from kernel.http.responses import PROBLEM_TYPE_BASE, REQUEST_ID_HEADER
from kernel.state_dirs import DISTRIBUTION, find_checkout

# The name client generators and the docs' "Authorize" box know the scheme by.
BEARER_AUTH = "bearerAuth"
_JWT = (
    "A JWT in `Authorization: Bearer <token>`: HS256 signed with `MERLIN_AUTH_JWT_SECRET`, or RS256, "
    "ES256 or EdDSA by a key of `MERLIN_AUTH_JWKS_URL`; `exp`, `sub`, `aud` and `iss` required. "
    "`sub` is the caller (a message's sender), `scope` holds `messages:write`, `messages:read` "
    'and/or `admin`, `rooms` the rooms it may use (`["*"]` for all).'
)
_OPERATOR = (
    "`MERLIN_ADMIN_TOKEN` in `Authorization: Bearer <token>`, or, where the APIs verify JWTs, a JWT "
    "whose `scope` holds `admin` (HS256 with `MERLIN_AUTH_JWT_SECRET`, or a key of `MERLIN_AUTH_JWKS_URL`)."
)
_ERRORS = (
    f"\n\nErrors are RFC 9457 problem documents (`application/problem+json`) whose `type` is "
    f"`{PROBLEM_TYPE_BASE}<kind>`; `429` and `503` carry `Retry-After` (seconds). Before any route, "
    "the listener answers `408` (`request-timeout`) to a request too slow to arrive and `431` "
    "(`headers-too-large`) to too large a head, and closes the connection. Every answer of the "
    "service carries its request's `X-Request-Id`."
)
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SUCCESS = ("1", "2", "3")
# FastAPI's own schema of its validation errors, which no merlin API answers with.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

Amendment = Callable[[dict[str, Any]], None]


@cache
def package_version() -> str:
    """The version of the installed distribution; a checkout's pyproject version when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        import tomllib

        checkout = find_checkout()
        if checkout is None:
            return "0+unknown"
        project = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        return str(project.get("version", "0+unknown"))


@dataclass(frozen=True, slots=True)
class Edge:
    """What answers in front of an API's routes, as its document states it."""

    operator_token: bool = False  # the admin API's own token is taken beside JWTs
    rate_limited: bool = False  # callers' requests are rate limited (429)
    body_limit: bool = False  # bodies over a limit are refused before they are read (413)


def describe(app: FastAPI, edge: Edge) -> None:
    """Complete ``app``'s OpenAPI document with what answers in front of its routes (``edge``)."""
    amend(app, lambda document: complete(document, edge))


def amend(app: FastAPI, change: Amendment) -> None:
    """Have ``change`` applied to ``app``'s OpenAPI document once it is built, after earlier changes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI's (and earlier changes'), kept in ``app.openapi_schema``
        change(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it


def complete(document: dict[str, Any], edge: Edge) -> None:
    """Name the bearer scheme, the ``Problem`` schema and the headers in ``document``; give each operation
    its security and the problems answered in front of its route."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_AUTH] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": _OPERATOR if edge.operator_token else _JWT,
    }
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = problem_schema()
    components.setdefault("headers", {}).update(_headers())
    document["info"]["description"] = document["info"].get("description", "") + _ERRORS
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _complete_operation(item[method], path not in OPEN_PATHS, edge)
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)


def _complete_operation(operation: dict[str, Any], secured: bool, edge: Edge) -> None:
    operation["security"] = [{BEARER_AUTH: []}] if secured else []
    responses: dict[str, dict[str, Any]] = operation.setdefault("responses", {})
    kinds = ["too-many-connections"]
    if secured:
        kinds += ["unauthorized", "forbidden"]
        if edge.rate_limited:
            kinds.append("rate-limited")
    if operation.get("parameters") or "requestBody" in operation:
        kinds.append("invalid-request")
    if "requestBody" in operation:
        kinds += ["malformed-json", "unsupported-media-type"]
        if edge.body_limit:
            kinds.append("too-large")
    for status, response in responses.items():
        if not status.startswith(_SUCCESS):
            kinds += problem_kinds(response)
    problems = {str(status): answer for status, answer in problem_responses(*dict.fromkeys(kinds)).items()}
    successes = {status: answer for status, answer in responses.items() if status.startswith(_SUCCESS)}
    operation["responses"] = {**successes, **problems}
    for answer in operation["responses"].values():
        answer.setdefault("headers", {})["X-Request-Id"] = {"$ref": "#/components/headers/RequestId"}


def _headers() -> dict[str, Any]:
    return {
        RETRY_AFTER.rsplit("/", 1)[1]: {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        WWW_AUTHENTICATE.rsplit("/", 1)[1]: {
            "description": "The scheme to authenticate with.",
            "required": True,
            "schema": {"type": "string", "const": 'Bearer realm="merlin"'},
        },
        "RequestId": {
            "description": f"The request's id (`{REQUEST_ID_HEADER}`): the client's sane `X-Request-Id`, "
            "else a new one. Absent only on the listener's own answers (`too-many-connections`).",
            "schema": {"type": "string"},
        },
    }
