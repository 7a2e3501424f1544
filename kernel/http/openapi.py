"""What every API's OpenAPI document says beyond what FastAPI derives from its routes.

Callers are authenticated by an ASGI layer (``kernel.http.auth``), not by a FastAPI
dependency, so FastAPI cannot see that a route needs a token: the document is given
its security scheme here, once, for every operation but those ``OPEN_PATHS`` leaves
open. Nothing here runs per request: the document is built once, when first asked for.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from kernel.http.auth import OPEN_PATHS

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


def describe(app: FastAPI, *, operator_token: bool) -> None:
    """Have ``app``'s OpenAPI document name its bearer scheme and require it where the API does.

    ``operator_token``: the API takes the admin API's own token beside JWTs.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI's, which it keeps in ``app.openapi_schema``: changed in place
        secure(document, _OPERATOR if operator_token else _JWT)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it


def secure(document: dict[str, Any], description: str) -> None:
    """Name the bearer scheme in ``document`` and require it of every operation outside ``OPEN_PATHS``."""
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[BEARER_AUTH] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": description,
    }
    for path, item in document.get("paths", {}).items():
        for operation in _operations(item):
            operation["security"] = [] if path in OPEN_PATHS else [{BEARER_AUTH: []}]


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _operations(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [operation for method, operation in item.items() if method in _METHODS]
