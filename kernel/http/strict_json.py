"""Request bodies read strictly: JSON only (415 otherwise), and no key twice (400).

With duplicate keys Python's parser keeps the last value, so a gateway that checks
the first could be bypassed (``{"sender_id": "alice", …, "sender_id": "bob"}``).
Routes are registered with ``StrictJsonRoute`` (``new_api`` sets it), which hands
FastAPI a request whose ``json()`` refuses repeated keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from kernel.http.responses import problem

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            # A decode error: FastAPI turns it into json_invalid, answered 400 with this reason.
            raise json.JSONDecodeError(f"duplicate key {key!r}", "", 0)
        document[key] = value
    return document


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=_unique_keys)
        return self._json


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed strictly, and that answers 415 to a body of another type."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            if takes_body and request.method in _BODY_METHODS:
                content_type = request.headers.get("content-type")
                if content_type is not None and not is_json(content_type):
                    return problem(
                        415, "unsupported-media-type", "The body must be JSON.",
                        "send it with Content-Type: application/json",
                    )  # fmt: skip
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
