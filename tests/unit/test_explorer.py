"""The API explorer's page (``kernel.http.explorer``): its own assets only, all installed, no inline script,
open without a token while the OpenAPI document it loads is not."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from functools import cache
from html.parser import HTMLParser

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI

from admin_api.settings import AdminApiSettings
from kernel.auth import ADMIN, READ, AuthSettings, mint
from kernel.http.explorer import (
    ASSETS,
    ASSETS_PREFIX,
    CONTENT_SECURITY_POLICY,
    PAGE_PATH,
    missing_assets,
    page,
)
from tests import PROJECT_ROOT
from webhooks.settings import EndpointsSettings

SECRET = "s" * 32
OPERATOR_TOKEN = "t" * 20
OURS = PROJECT_ROOT / "kernel" / "http" / "explorer_assets"


class _Page(HTMLParser):
    """What a page would have a browser load or run."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for attribute in ("src", "href", "action", "formaction", "poster", "srcset"):
            if named.get(attribute):
                self.urls.append(named[attribute] or "")
        self.handlers += [name for name in named if name.startswith("on")]
        if "style" in named:
            self.inline_styles.append(named["style"] or "")
        self._in = tag if tag in ("script", "style") else None

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline_scripts.append(data)
        if self._in == "style" and data.strip():
            self.inline_styles.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def _parsed(text: str) -> _Page:
    parsed = _Page()
    parsed.feed(text)
    return parsed


def test_the_page_loads_nothing_but_its_own_assets_and_runs_no_inline_script() -> None:
    parsed = _parsed(page("merlin <read> API"))
    assert parsed.urls, "the page loads its assets"
    for url in parsed.urls:
        assert url.startswith(ASSETS_PREFIX), url  # same origin, no scheme or host
        assert url.removeprefix(ASSETS_PREFIX) in ASSETS, url
    names = {url.removeprefix(ASSETS_PREFIX) for url in parsed.urls}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "explorer.js", "explorer.css"} <= names
    assert (parsed.inline_scripts, parsed.inline_styles, parsed.handlers) == ([], [], [])
    assert "merlin &lt;read&gt; API" in page("merlin <read> API")


def test_behind_a_prefix_the_page_asks_for_its_assets_and_document_under_it() -> None:
    text = page("t", root_path="/chat", openapi_url="/openapi.json")
    assert all(url.startswith("/chat" + ASSETS_PREFIX) for url in _parsed(text).urls)
    assert 'data-openapi-url="/chat/openapi.json"' in text


def test_every_asset_is_installed_with_merlin() -> None:
    assert missing_assets() == []
    for name, asset in ASSETS.items():
        assert asset.file().stat().st_size > 0, name


def test_swagger_ui_renders_openapi_3_1() -> None:
    """FastAPI writes OpenAPI 3.1 documents, which Swagger UI reads from version 5 on."""
    bundle = ASSETS["swagger-ui-bundle.js"].file().read_text(encoding="utf-8")
    found = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert found is not None, "Swagger UI's bundle says its version"
    assert int(found.group(1)) >= 5, found.group()


def test_our_script_and_style_name_no_other_origin() -> None:
    elsewhere = re.compile(r"(https?:)?//[a-z0-9]", re.IGNORECASE)
    for path in OURS.iterdir():
        assert elsewhere.search(path.read_text(encoding="utf-8")) is None, path


def test_every_file_of_the_explorer_is_package_data() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["kernel.http"]
    files = [path.relative_to(OURS.parent).as_posix() for path in OURS.iterdir()]
    assert files
    assert [name for name in files if not any(fnmatch(name, pattern) for pattern in patterns)] == []
    ours = {asset.path for asset in ASSETS.values() if asset.package == "kernel.http"}
    assert ours == set(files)


@cache
def _apps() -> dict[str, FastAPI]:
    from admin_api.app import create_app as admin_api
    from read_api.app import create_app as read_api
    from write_api.app import create_app as write_api

    auth = AuthSettings(jwt_secret=SECRET)
    admin = AdminApiSettings.model_validate({"MERLIN_ADMIN_TOKEN": OPERATOR_TOKEN})
    keys = EndpointsSettings(secret_keys=Fernet.generate_key().decode())
    return {
        "write": write_api(auth=auth),
        "read": read_api(auth=auth),
        "admin": admin_api(admin, auth=auth, endpoints=keys),
    }


async def _get(api: str, path: str, token: str | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=_apps()[api])
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.get(path, headers=headers)


@pytest.mark.parametrize("api", ["write", "read", "admin"])
async def test_the_page_and_its_assets_answer_without_a_token(api: str) -> None:
    shell = await _get(api, PAGE_PATH)
    assert shell.status_code == 200
    assert shell.headers["content-type"] == "text/html; charset=utf-8"
    assert shell.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert re.search(r"script-src 'self';", CONTENT_SECURITY_POLICY)
    assert shell.headers["x-content-type-options"] == "nosniff"
    assert shell.headers["cache-control"] == "no-store"
    for url in _parsed(shell.text).urls:
        answer = await _get(api, url)
        asset = ASSETS[url.removeprefix(ASSETS_PREFIX)]
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] == asset.media_type
        assert answer.content == asset.file().read_bytes()


@pytest.mark.parametrize("api", ["write", "read", "admin"])
async def test_only_the_listed_assets_are_served(api: str) -> None:
    # Beside Swagger UI's files in fastapi-offline's folder, but not one the page loads.
    assert (await _get(api, ASSETS_PREFIX + "redoc.standalone.js")).status_code == 404
    assert (await _get(api, ASSETS_PREFIX + "nothing.js")).status_code == 404
    # FastAPI's own pages are gone; what is not open needs a token before it is even looked up.
    for gone in ("/redoc", "/docs/oauth2-redirect", "/docs/", "/docsx"):
        assert (await _get(api, gone)).status_code == 401, gone


@pytest.mark.parametrize("api", ["write", "read"])
async def test_the_document_needs_a_token_of_the_service_any_scope(api: str) -> None:
    assert (await _get(api, "/openapi.json")).status_code == 401
    assert (await _get(api, "/openapi.json", "not-a-token")).status_code == 401
    other_secret = mint("x" * 32, "viewer", scopes=(READ,))
    assert (await _get(api, "/openapi.json", other_secret)).status_code == 401
    reader = await _get(api, "/openapi.json", mint(SECRET, "viewer", scopes=(READ,)))
    assert reader.status_code == 200
    assert "bearerAuth" in reader.json()["components"]["securitySchemes"]


async def test_the_admin_apis_document_needs_its_own_token_or_the_admin_scope() -> None:
    assert (await _get("admin", "/openapi.json")).status_code == 401
    assert (await _get("admin", "/openapi.json", mint(SECRET, "viewer", scopes=(READ,)))).status_code == 403
    assert (await _get("admin", "/openapi.json", mint(SECRET, "ops", scopes=(ADMIN,)))).status_code == 200
    assert (await _get("admin", "/openapi.json", OPERATOR_TOKEN)).status_code == 200
