"""Request ids and the access log of the HTTP services (``kernel.http.middleware.RequestLog``), and the
log settings."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.testing import capture_logs

from kernel.auth import ANYONE, Caller
from kernel.http.errors import add_outage_handler, install_error_handlers
from kernel.http.middleware import RequestLog, request_id
from kernel.settings import LoggingSettings


def test_a_sane_request_id_is_kept() -> None:
    assert request_id(b"abc-123") == "abc-123"
    assert request_id(b"0f8fad5b-d9cb-469f-a165-70867728950e") == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert request_id(b"svc:req.42_x") == "svc:req.42_x"
    assert request_id(b"a" * 128) == "a" * 128


@pytest.mark.parametrize(
    "given",
    [None, b"", b"a" * 129, b"has space", b"<script>", b'quote"s', b"new\nline", b"-leading", "é".encode()],
)
def test_anything_else_gets_a_new_one(given: bytes | None) -> None:
    made = request_id(given)
    assert len(made) == 32
    assert int(made, 16) >= 0
    assert made != request_id(given)


class _Caller:
    """Stands for ``Authenticate``: the caller in the scope's state."""

    def __init__(self, app: ASGIApp, caller: Caller | None) -> None:
        self.app = app
        self.caller = caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.caller is not None:
            scope.setdefault("state", {})["caller"] = self.caller
        await self.app(scope, receive, send)


def _app(access: bool = True, caller: Caller | None = None) -> tuple[FastAPI, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    app = FastAPI()

    @app.get("/v1/rooms/{room_id}")
    async def room(request: Request, room_id: str) -> dict[str, str]:
        seen.append(structlog.contextvars.get_contextvars())
        return {"room": room_id}

    app.add_middleware(_Caller, caller=caller)
    # structlog's own logger, which ``capture_logs`` sees (not the one ``configure_logging`` makes).
    app.add_middleware(RequestLog, access=access, log=structlog.get_logger("merlin.access"))
    return app, seen


async def _get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        return await client.get(path, headers=headers)


async def test_the_access_line_has_the_route_template_status_duration_caller_and_request_id() -> None:
    app, seen = _app(caller=Caller("u7", frozenset(), frozenset()))
    with capture_logs() as logs:
        answer = await _get(app, "/v1/rooms/r-9", **{"X-Request-Id": "client-1"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "client-1"
    assert seen == [{"request_id": "client-1"}]  # bound for the request's own log lines
    assert structlog.contextvars.get_contextvars() == {}  # and only for them
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["route"] == "/v1/rooms/{room_id}"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert line["sub"] == "u7"
    assert line["request_id"] == "client-1"
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0


async def test_an_unmatched_path_is_logged_as_it_came_and_an_unauthenticated_caller_has_no_sub() -> None:
    app, _ = _app(caller=ANYONE)
    with capture_logs() as logs:
        answer = await _get(app, "/nowhere", **{"X-Request-Id": "bad id!"})
    assert answer.status_code == 404
    made = answer.headers["x-request-id"]
    assert made != "bad id!"
    assert len(made) == 32
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["route"] == "/nowhere"
    assert line["status"] == 404
    assert line["sub"] is None
    assert line["request_id"] == made


async def test_the_access_log_can_be_turned_off_and_the_request_id_stays() -> None:
    app, seen = _app(access=False)
    with capture_logs() as logs:
        answer = await _get(app, "/v1/rooms/r-1")
    assert [entry for entry in logs if entry["event"] == "request"] == []
    assert seen == [{"request_id": answer.headers["x-request-id"]}]


def test_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LoggingSettings().level == "INFO"
    assert LoggingSettings().access is True
    monkeypatch.setenv("MERLIN_LOG_LEVEL", "debug")
    monkeypatch.setenv("MERLIN_LOG_ACCESS", "false")
    assert LoggingSettings().level == "DEBUG"
    assert LoggingSettings().access is False
    monkeypatch.setenv("MERLIN_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError):
        LoggingSettings()


async def test_an_unexpected_error_is_answered_with_the_requests_id_once() -> None:
    app, _ = _app()
    install_error_handlers(app, retry_after_seconds=1)

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    # Starlette's outermost handler answers past the middleware; the transport must not re-raise.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://api"
    ) as client:
        with capture_logs() as logs:
            answer = await client.get("/v1/broken", headers={"X-Request-Id": "client-500"})
    assert answer.status_code == 500
    assert answer.headers.get_list("x-request-id") == ["client-500"]
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert (line["status"], line["request_id"]) == (500, "client-500")


async def test_an_error_answered_inside_the_middleware_carries_the_id_once() -> None:
    app, _ = _app()
    # An outage handler answers a non-outage error as the unexpected one, inside the middleware.
    add_outage_handler(app, (KeyError,), lambda _exc: False, "store")

    @app.get("/v1/lookup")
    async def lookup() -> None:
        raise KeyError("x")

    answer = await _get(app, "/v1/lookup", **{"X-Request-Id": "client-501"})
    assert answer.status_code == 500
    assert answer.headers.get_list("x-request-id") == ["client-501"]
