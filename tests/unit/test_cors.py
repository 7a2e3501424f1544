"""Browser pages of other origins (``kernel.http.cors``): off unless an API lists exact origins; a listed
origin's preflight passes, any other's is refused, and the answers a listed page reads carry what it needs."""

from __future__ import annotations

import os
from functools import cache

import httpx
import pytest
from fastapi import FastAPI

from kernel.auth import AuthSettings, mint
from kernel.http.cors import ALLOWED_HEADERS, EXPOSED_HEADERS
from kernel.settings import cors_origin
from merlin.cli import main
from merlin.local.service_processes import FORKED
from read_api.settings import ReadApiSettings
from write_api.settings import WriteApiSettings

SECRET = "s" * 32
PAGE = "http://127.0.0.1:8084"
OTHER = "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("http://127.0.0.1:8084", "http://127.0.0.1:8084"),
        (" https://Chat.Example.COM ", "https://chat.example.com"),
        # A browser leaves the default port out of the Origin it sends.
        ("http://localhost:80", "http://localhost"),
        ("https://chat.example.com:443", "https://chat.example.com"),
        ("https://chat.example.com:8443", "https://chat.example.com:8443"),
        ("http://[::1]:8084", "http://[::1]:8084"),
    ],
)
def test_an_origin_is_kept_as_a_browser_writes_it(given: str, kept: str) -> None:
    assert cors_origin(given) == kept


def test_the_origins_are_a_json_list_read_under_each_apis_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_WRITE_API_CORS_ORIGINS", f'["{PAGE}", "https://Chat.Example.com"]')
    assert WriteApiSettings().cors_origins == [PAGE, "https://chat.example.com"]
    assert ReadApiSettings().cors_origins == []  # off by default, each API on its own


@pytest.fixture
def no_merlin_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MERLIN_") and name != FORKED:
            monkeypatch.delenv(name)


EXAMPLE = "e.g. http://127.0.0.1:8084"
NO_ORIGIN = f"Value error, an origin is http:// or https:// and a host, {EXAMPLE}"


@pytest.mark.usefixtures("no_merlin_variables")
@pytest.mark.parametrize(
    ("value", "told"),
    [
        ('["*"]', f"[0]: Value error, * is not taken: list each origin, {EXAMPLE} (got '*')"),
        ('["null"]', f"[0]: Value error, null is not taken: list each origin, {EXAMPLE} (got 'null')"),
        (
            f'["{PAGE}", "{PAGE}/"]',
            f"[1]: Value error, an origin has no path, query or fragment: {PAGE} (got '{PAGE}/')",
        ),
        (
            '["127.0.0.1:8084"]',
            f"[0]: {NO_ORIGIN} (got '127.0.0.1:8084')",
        ),
        (
            '["ftp://example.com"]',
            f"[0]: {NO_ORIGIN} (got 'ftp://example.com')",
        ),
        (
            '["http://me:pw@example.com"]',
            "[0]: Value error, an origin has no user or password (got 'http://me:pw@example.com')",
        ),
        (
            '["http://example.com:99999"]',
            f"[0]: Value error, not an origin (Port out of range 0-65535), {EXAMPLE} (got 'http://example.com:99999')",
        ),
        (PAGE, ": not a JSON list (Expecting value: line 1 column 1 (char 0))"),
    ],
)
def test_a_bad_origin_stops_the_api_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, told: str
) -> None:
    monkeypatch.setenv("MERLIN_READ_API_CORS_ORIGINS", value)
    assert main(["read-api"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err.splitlines()) == (
        "",
        [f"merlin: error: MERLIN_READ_API_CORS_ORIGINS{told}"],
    )


@cache
def _apps() -> dict[str, FastAPI]:
    from read_api.app import create_app as read_api
    from write_api.app import create_app as write_api

    auth = AuthSettings(jwt_secret=SECRET)
    return {
        "write": write_api(WriteApiSettings(cors_origins=[PAGE]), auth=auth),
        "read": read_api(ReadApiSettings(cors_origins=[PAGE]), auth=auth),
        "write without": write_api(WriteApiSettings(), auth=auth),
        "read without": read_api(ReadApiSettings(), auth=auth),
    }


async def _ask(api: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_apps()[api])
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.request(method, path, headers=headers)


def _preflight(page: str, method: str) -> dict[str, str]:
    return {
        "Origin": page,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ", ".join(name.lower() for name in ALLOWED_HEADERS),
    }


@pytest.mark.parametrize(
    ("api", "method", "path"),
    [
        ("write", "POST", "/v1/rooms/lobby/messages"),
        ("write", "PATCH", "/v1/rooms/lobby/messages/00000000-0000-0000-0000-000000000001"),
        ("read", "GET", "/v1/rooms/lobby/messages"),
        ("read", "POST", "/v1/live/tickets"),
    ],
)
async def test_a_preflight_from_a_listed_origin_passes_without_a_token(
    api: str, method: str, path: str
) -> None:
    answer = await _ask(api, "OPTIONS", path, _preflight(PAGE, method))
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == PAGE
    assert method in answer.headers["access-control-allow-methods"]
    allowed = {name.strip().lower() for name in answer.headers["access-control-allow-headers"].split(",")}
    assert {name.lower() for name in ALLOWED_HEADERS} <= allowed
    # A token in a header, never a cookie: no credentials mode.
    assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize("api", ["write", "read"])
async def test_a_preflight_from_another_origin_is_refused(api: str) -> None:
    answer = await _ask(api, "OPTIONS", "/v1/rooms/lobby/messages", _preflight(OTHER, "POST"))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("api", ["write without", "read without"])
async def test_without_origins_a_preflight_is_any_request_without_a_token(api: str) -> None:
    answer = await _ask(api, "OPTIONS", "/v1/rooms/lobby/messages", _preflight(PAGE, "POST"))
    assert answer.status_code == 401
    assert "access-control-allow-origin" not in answer.headers


async def test_a_listed_page_reads_answers_and_refusals_and_the_headers_it_needs() -> None:
    token = mint(SECRET, "alice")
    read = await _ask(
        "read", "GET", "/v1/rooms/lobby/messages/x", {"Origin": PAGE, "Authorization": f"Bearer {token}"}
    )
    # The page sees the real answer (422: not a message id), not a network error.
    assert read.status_code == 422
    assert read.headers["access-control-allow-origin"] == PAGE
    exposed = {name.strip().lower() for name in read.headers["access-control-expose-headers"].split(",")}
    assert exposed == {name.lower() for name in EXPOSED_HEADERS}
    assert {"etag", "retry-after", "x-request-id"} <= exposed
    # A token refused is a 401 the page can read, so it can ask for another.
    refused = await _ask("write", "GET", "/v1/rooms/lobby/messages", {"Origin": PAGE})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == PAGE
    other = await _ask("read", "GET", "/v1/rooms/lobby/messages", {"Origin": OTHER})
    assert "access-control-allow-origin" not in other.headers
