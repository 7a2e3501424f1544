"""The API explorer at ``/docs``: Swagger UI from files installed with merlin, opened with a bearer token.

Decision 0023. The page is a static shell that holds no data, so it and its assets answer without a
token, on the API's own port. The page asks for a token, keeps it in the tab's ``sessionStorage``,
loads ``/openapi.json`` with it (which still needs a token) and authorizes Swagger UI's
``bearerAuth`` scheme with it, so "Try it out" sends it. Nothing is fetched from elsewhere: Swagger
UI's own files come from the ``fastapi-offline`` package, the page's script and style from this one,
and a Content-Security-Policy holds the page to its own origin, without inline scripts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import FileResponse, HTMLResponse, Response

from kernel.http.responses import problem

PAGE_PATH = "/docs"
ASSETS_PREFIX = "/docs/assets/"

# 'self' only: no CDN, no inline script or style (Swagger UI sets styles through the DOM, which a
# policy does not govern), icons as data: URIs in Swagger UI's stylesheet. Nothing may frame the
# page, where a token is typed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    """A file the page loads: where it is installed, and what it is."""

    package: str
    path: str  # inside the package
    media_type: str

    def file(self) -> Path:
        """The installed file (a wheel installs packages as plain folders)."""
        return Path(str(resources.files(self.package).joinpath(self.path)))


_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
# Everything the page may load, by the name it is served under (ASSETS_PREFIX + name).
ASSETS = {
    "swagger-ui-bundle.js": Asset("fastapi_offline", "static/swagger-ui-bundle.js", _JS),
    "swagger-ui.css": Asset("fastapi_offline", "static/swagger-ui.css", _CSS),
    "favicon.png": Asset("fastapi_offline", "static/favicon.png", "image/png"),
    "explorer.js": Asset("kernel.http", "explorer_assets/explorer.js", _JS),
    "explorer.css": Asset("kernel.http", "explorer_assets/explorer.css", _CSS),
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · API explorer</title>
<link rel="icon" type="image/png" href="{assets}favicon.png">
<link rel="stylesheet" href="{assets}swagger-ui.css">
<link rel="stylesheet" href="{assets}explorer.css">
</head>
<body data-openapi-url="{openapi}">
<header class="explorer-bar">
<h1>{title}</h1>
<form id="token-form" class="explorer-token" hidden>
<label for="token-input">Bearer token</label>
<input id="token-input" type="password" autocomplete="off" spellcheck="false" required>
<button type="submit">Open</button>
<p id="token-note" class="explorer-note" role="status"></p>
</form>
<div id="token-held" class="explorer-token" hidden>
<span>A token is kept for this tab only.</span>
<button id="token-forget" type="button">Forget it</button>
<p id="held-note" class="explorer-note" role="status"></p>
</div>
</header>
<noscript><p class="explorer-note">The explorer needs JavaScript.</p></noscript>
<main id="swagger-ui"></main>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="{assets}explorer.js"></script>
</body>
</html>
"""


def page(title: str, root_path: str = "", openapi_url: str = "/openapi.json") -> str:
    """The explorer's HTML: no inline script, every asset under ``root_path`` + ``ASSETS_PREFIX``."""
    return _PAGE.format(
        title=html.escape(title),
        assets=html.escape(root_path + ASSETS_PREFIX),
        openapi=html.escape(root_path + openapi_url),
    )


def missing_assets() -> list[str]:
    """The assets whose file is not installed (none, in a sound install)."""
    return [name for name, asset in ASSETS.items() if not asset.file().is_file()]


def add_explorer(app: FastAPI) -> None:
    """Serve the explorer at ``/docs`` and its assets under ``/docs/assets/`` (FastAPI's own docs off)."""
    files = {name: (asset.file(), asset.media_type) for name, asset in ASSETS.items()}
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(PAGE_PATH, include_in_schema=False)
    async def explorer(request: Request) -> Response:
        text = page(app.title, request.scope.get("root_path", ""), openapi_url)
        # no-store: the page is small, and a cached one could outlive an upgrade of its assets.
        return HTMLResponse(text, headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})

    @app.get(ASSETS_PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return problem(404, "not-found", "No such asset.")
        path, media_type = found
        # no-cache: a browser asks again each time, so a page never mixes an old asset with a new merlin.
        headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return FileResponse(path, media_type=media_type, headers=headers)
