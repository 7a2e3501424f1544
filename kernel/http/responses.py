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
