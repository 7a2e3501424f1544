"""Driving Debian's headless Chromium with Playwright in the tests, with nothing leaving the loopback.

Playwright cannot download its own browser builds here: ``make chromium`` installs Debian's package.
Every request a page makes is recorded, and any that would leave this machine is blocked, so a page
must work offline.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, ConsoleMessage, Route, async_playwright

from tests import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
# As root there is no sandbox to have; nothing but the page may reach the network.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of what rendered (var/ is not committed).
ARTIFACTS = PROJECT_ROOT / "var" / "test-artifacts"


def loopback(url: str) -> bool:
    """Whether ``url`` stays on this machine (or in the page: data and blob URLs)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Watched:
    """What the browser asked for, what was kept from it, and what its console said."""

    requested: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        url = route.request.url
        self.requested.append(url)
        if loopback(url):
            await route.continue_()
        else:
            self.blocked.append(url)
            await route.abort("blockedbyclient")

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


@asynccontextmanager
async def launched(executable: Path = CHROMIUM) -> AsyncIterator[Browser]:
    """Headless Chromium from ``executable``, closed on exit."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
