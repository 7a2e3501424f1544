"""The live-rooms page of ``merlin dev`` (``merlin.live_page``): its files are package data, it loads only
its own, runs no inline script, calls no origin but the APIs', and hands development tokens to this
machine's own pages only."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from merlin.dev import _allow_page, _browser_url, page_origins
from merlin.live_page import (
    ASSETS,
    ASSETS_PREFIX,
    PAGE_FILE,
    LivePage,
    asset_file,
    content_security_policy,
    missing_files,
)
from merlin.local.kept_secrets import KeptFiles
from read_api.settings import ReadApiSettings
from tests import PROJECT_ROOT
from write_api.settings import WriteApiSettings

FOLDER = PROJECT_ROOT / "merlin" / "live_page_assets"
WRITE = "http://127.0.0.1:8081"
READ = "http://127.0.0.1:8082"


class _Page(HTMLParser):
    """What a page would have a browser load or run."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for attribute in ("src", "href", "action", "formaction", "poster", "srcset"):
            if named.get(attribute):
                self.urls.append(named[attribute] or "")
        self.inline += [f"{name}=" for name in named if name.startswith("on") or name == "style"]
        self._in_script = tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def _parsed() -> _Page:
    parsed = _Page()
    parsed.feed(asset_file(PAGE_FILE).read_text(encoding="utf-8"))
    return parsed


def test_the_page_loads_only_its_own_assets_by_path_and_runs_nothing_inline() -> None:
    parsed = _parsed()
    assert {url.removeprefix(ASSETS_PREFIX) for url in parsed.urls} == set(ASSETS)
    assert all(url.startswith(ASSETS_PREFIX) for url in parsed.urls)  # same origin: no scheme, no host
    assert parsed.inline == []


def test_its_script_and_style_name_no_other_origin() -> None:
    elsewhere = re.compile(r"(https?:)?//[a-z0-9\[]", re.IGNORECASE)
    for name in (PAGE_FILE, *ASSETS):
        text = asset_file(name).read_text(encoding="utf-8")
        assert elsewhere.search(text) is None, name
    # The APIs' origins come from the page's server at run time, nowhere else.
    script = asset_file("live.js").read_text(encoding="utf-8")
    assert '"/config.json"' in script
    assert "localStorage" not in script.replace("sessionStorage", "")


def test_every_file_of_the_page_is_package_data_and_installed() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["merlin"]
    files = sorted(path.relative_to(FOLDER.parent).as_posix() for path in FOLDER.iterdir())
    assert files == sorted(f"live_page_assets/{name}" for name in (PAGE_FILE, *ASSETS))
    assert [name for name in files if not any(fnmatch(name, pattern) for pattern in patterns)] == []
    assert missing_files() == []


def test_the_policy_lets_the_page_call_itself_and_the_two_apis_only() -> None:
    policy = content_security_policy(WRITE, READ, READ)
    assert f"connect-src 'self' {WRITE} {READ};" in policy
    assert "script-src 'self';" in policy
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy


def _served(tmp_path: Path, users: tuple[str, ...] = ("alice", "bob")) -> LivePage:
    kept = KeptFiles(tmp_path)
    for user in users:
        kept.user_token(user).write_text(f"token-of-{user}\n")
    return LivePage(WRITE, READ, {user: kept.user_token(user) for user in users})


async def _ask(
    page: LivePage,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    host: str = "127.0.0.1:8084",
) -> httpx.Response:
    transport = httpx.ASGITransport(app=page.app(), client=client)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as caller:
        return await caller.request(method, path, headers=headers)


async def test_the_page_and_its_assets_are_served_with_their_policy(tmp_path: Path) -> None:
    page = _served(tmp_path)
    shell = await _ask(page, "GET", "/")
    assert shell.status_code == 200
    assert shell.headers["content-type"] == "text/html; charset=utf-8"
    assert shell.headers["content-security-policy"] == content_security_policy(WRITE, READ)
    assert shell.headers["x-content-type-options"] == "nosniff"
    assert shell.headers["referrer-policy"] == "no-referrer"
    for name, media_type in ASSETS.items():
        answer = await _ask(page, "GET", ASSETS_PREFIX + name)
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == media_type
        assert answer.content == asset_file(name).read_bytes()
    for missing in ("index.html", "../live_page.py", "nothing.js"):
        assert (await _ask(page, "GET", ASSETS_PREFIX + missing)).status_code == 404, missing


async def test_the_config_names_the_apis_and_the_users_with_tokens(tmp_path: Path) -> None:
    config = (await _ask(_served(tmp_path), "GET", "/config.json")).json()
    assert config == {"write_api": WRITE, "read_api": READ, "dev_users": ["alice", "bob"]}
    without = (await _ask(LivePage(WRITE, READ), "GET", "/config.json")).json()
    assert without["dev_users"] == []


@pytest.mark.parametrize("host", ["127.0.0.1:8084", "localhost:8084", "[::1]:8084"])
async def test_a_development_token_goes_to_this_machines_own_page(tmp_path: Path, host: str) -> None:
    answer = await _ask(_served(tmp_path), "POST", "/dev/tokens/bob", {"Origin": f"http://{host}"}, host=host)
    assert answer.status_code == 200
    assert answer.json() == {"token": "token-of-bob"}
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("client", "host", "origin"),
    [
        (("192.0.2.7", 50000), "127.0.0.1:8084", None),  # another machine
        (("127.0.0.1", 50000), "attacker.example:8084", None),  # a name rebound to the loopback
        (("127.0.0.1", 50000), "127.0.0.1:8084", "http://attacker.example"),  # another site's page
        (("127.0.0.1", 50000), "127.0.0.1:8084", "http://127.0.0.1:9999"),  # another local page
    ],
)
async def test_a_development_token_is_refused_to_anyone_else(
    tmp_path: Path, client: tuple[str, int], host: str, origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else {}
    answer = await _ask(_served(tmp_path), "POST", "/dev/tokens/alice", headers, client=client, host=host)
    assert answer.status_code == 403
    assert "token-of" not in answer.text


async def test_only_the_users_merlin_dev_minted_for_have_tokens(tmp_path: Path) -> None:
    page = _served(tmp_path, users=("alice",))
    assert (await _ask(page, "POST", "/dev/tokens/bob")).status_code == 404
    assert (await _ask(page, "POST", "/dev/tokens/..%2Fauth.secret")).status_code == 404
    assert (await _ask(page, "GET", "/dev/tokens/alice")).status_code == 405  # never a link's GET
    assert (await _ask(LivePage(WRITE, READ), "POST", "/dev/tokens/alice")).status_code == 404


def test_bobs_token_is_kept_beside_alices(tmp_path: Path) -> None:
    kept = KeptFiles(tmp_path)
    assert kept.user_token("alice") == kept.dev_token == tmp_path / "dev.token"
    assert kept.user_token("bob") == tmp_path / "dev-bob.token"


def test_merlin_dev_lets_its_page_call_both_apis_beside_the_origins_they_had() -> None:
    env: dict[str, str] = {}
    _allow_page(
        env,
        8084,
        WriteApiSettings(cors_origins=["https://chat.example.com"]),
        ReadApiSettings(cors_origins=[]),
    )
    assert env == {
        "MERLIN_WRITE_API_CORS_ORIGINS": '["https://chat.example.com", "http://127.0.0.1:8084", '
        '"http://localhost:8084"]',
        "MERLIN_READ_API_CORS_ORIGINS": '["http://127.0.0.1:8084", "http://localhost:8084"]',
    }
    assert page_origins(8084) == ["http://127.0.0.1:8084", "http://localhost:8084"]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8081"),
        ("0.0.0.0", "http://127.0.0.1:8081"),
        ("::", "http://[::1]:8081"),
    ],
)
def test_the_page_calls_an_api_where_a_browser_here_reaches_it(host: str, url: str) -> None:
    assert _browser_url(host, 8081) == url
