"""JSON and problem+json (RFC 9457) responses, encoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

PROBLEM_TYPE_BASE = "https://merlin.dev/problems/"
# Every answer carries its request's id (kernel.http.middleware.RequestLog), an unexpected 500 too.
REQUEST_ID_HEADER = "x-request-id"


class OrjsonResponse(JSONResponse):
    """A JSON response encoded with orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An RFC 9457 problem document; ``kind`` names its type under PROBLEM_TYPE_BASE."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + kind, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/problem+json"
    )


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}
_DESCRIPTIONS = {
    400: "Malformed request (e.g. not JSON)",
    401: "No valid bearer token",
    403: "The token does not allow this (scope, room or sender)",
    404: "Not found",
    413: "Request body too large",
    415: "The body is not JSON",
    422: "A field is invalid; `errors` names it",
    429: "Too many requests from this caller; retry after `Retry-After` seconds",
    503: "Temporarily unable; retry after `Retry-After` seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries saying that these statuses answer with problem+json."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Problem"),
            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
