"""The live-rooms page of ``merlin dev``: a chat page on a loopback port of its own (decision 0026).

One picks a room, posts, edits and sees the room's messages arrive live. The page is plain HTML,
JavaScript and CSS installed with merlin (``live_page_assets/``, package data), served as files: no
build step, no inline script, nothing from another origin. It calls the write and read APIs from the
browser, on their own ports, which is why ``merlin dev`` lists this page's origin in their CORS
settings (``kernel.http.cors``).

Signing in is pasting a token, or, when ``merlin dev`` minted them, taking alice's or bob's: the
server hands those to callers on this machine only (``POST /dev/tokens/{user}``). The page keeps
the token in the tab's ``sessionStorage``, sends it only in ``Authorization`` headers, and opens the
live stream (an ``EventSource``, which cannot send headers) with a single-use ticket instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

PAGE_PATH = "/"
ASSETS_PREFIX = "/assets/"
CONFIG_PATH = "/config.json"
TOKENS_PREFIX = "/dev/tokens/"
# The development users `merlin dev` mints tokens for, in the order the page offers them.
DEV_USERS = ("alice", "bob")

_HTML = "text/html; charset=utf-8"
# Everything the page may load, by the name it is served under (ASSETS_PREFIX + name).
ASSETS = {"live.js": "text/javascript; charset=utf-8", "live.css": "text/css; charset=utf-8"}
PAGE_FILE = "index.html"
_PACKAGE = "merlin"
_FOLDER = "live_page_assets"


def asset_file(name: str) -> Path:
    """The installed file of the page (``index.html``) or of one of its assets."""
    return Path(str(resources.files(_PACKAGE).joinpath(_FOLDER, name)))


def missing_files() -> list[str]:
    """The page's files that are not installed (none, in a sound install)."""
    return [name for name in (PAGE_FILE, *ASSETS) if not asset_file(name).is_file()]


def content_security_policy(*origins: str) -> str:
    """The page's own files only, no inline script; calls to itself and to the APIs' ``origins``."""
    connect = " ".join(("'self'", *dict.fromkeys(origins)))
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src {connect}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _on_this_machine(request: Request) -> bool:
    """Whether the caller is on the loopback and named this server by a loopback name.

    The name matters as much as the address: a page of another site whose host name resolves to
    127.0.0.1 (DNS rebinding) would be same-origin with this server, but its requests carry its own
    name in ``Host``. A cross-site request carries its ``Origin``, which must be this server's.
    """
    client = request.client.host if request.client else ""
    host = request.headers.get("host", "")
    try:
        from_loopback = ipaddress.ip_address(client).is_loopback
        named = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    if not from_loopback or named not in ("127.0.0.1", "localhost", "::1"):
        return False
    given_origin = request.headers.get("origin")
    return given_origin is None or given_origin == f"http://{host}"


@dataclass(frozen=True)
class LivePage:
    """What the page is told: where the APIs answer, and whose tokens it may hand out."""

    write_api: str  # e.g. http://127.0.0.1:8081
    read_api: str
    # User → the file holding a token of theirs, read when asked (`merlin dev` mints them anew on start).
    dev_tokens: Mapping[str, Path] = field(default_factory=dict)

    @property
    def security_headers(self) -> dict[str, str]:
        return {
            "Content-Security-Policy": content_security_policy(
                _origin(self.write_api), _origin(self.read_api)
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }

    def app(self) -> Starlette:
        """The page's ASGI app: the page, its assets, its configuration and the development tokens."""
        headers = self.security_headers

        async def page(_request: Request) -> Response:
            # no-store: a cached page could outlive an upgrade of its script.
            return FileResponse(
                asset_file(PAGE_FILE), media_type=_HTML, headers={**headers, "Cache-Control": "no-store"}
            )

        async def asset(request: Request) -> Response:
            name = request.path_params["name"]
            if name not in ASSETS:
                return JSONResponse({"error": "no such asset"}, 404, headers=headers)
            return FileResponse(
                asset_file(name), media_type=ASSETS[name], headers={**headers, "Cache-Control": "no-cache"}
            )

        async def config(_request: Request) -> Response:
            body = {
                "write_api": self.write_api,
                "read_api": self.read_api,
                "dev_users": [user for user in DEV_USERS if user in self.dev_tokens],
            }
            return JSONResponse(body, headers={**headers, "Cache-Control": "no-store"})

        async def token(request: Request) -> Response:
            if not _on_this_machine(request):
                return JSONResponse({"error": "development tokens go to this machine's own pages"}, 403)
            path = self.dev_tokens.get(request.path_params["user"])
            if path is None:
                return JSONResponse({"error": "no development token for this user"}, 404)
            try:
                text = path.read_text().strip()
            except OSError:
                return JSONResponse({"error": "the development token is not there: restart merlin dev"}, 404)
            return JSONResponse({"token": text}, headers={**headers, "Cache-Control": "no-store"})

        return Starlette(
            routes=[
                Route(PAGE_PATH, page, methods=["GET"]),
                Route(ASSETS_PREFIX + "{name}", asset, methods=["GET"]),
                Route(CONFIG_PATH, config, methods=["GET"]),
                Route(TOKENS_PREFIX + "{user}", token, methods=["POST"]),
            ]
        )


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the caller's loop owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listening(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: any free port); OSError when it is taken."""
    return socket.create_server(("127.0.0.1", port))


class PageServer:
    """Serves a ``LivePage`` on a listening socket, on the running loop, while entered."""

    def __init__(self, page: LivePage, sock: socket.socket) -> None:
        config = uvicorn.Config(
            page.app(), log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
        self.server = _Server(config)
        self.sock = sock
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> PageServer:
        # The socket listens already: a browser's first connection waits in its backlog, not refused.
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="live-page")
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
