"""The live-rooms page in a real browser: Debian's headless Chromium, driven by Playwright, on merlin's
services as `merlin dev` runs them (the page on a port of its own, its origin allowed by both APIs).

Two pages as two users in one room: what one posts or edits shows on the other within a second; a
page reloaded while the other keeps posting shows every message once, in order, afterwards. Every
request that would leave the loopback is blocked and recorded. Screenshots go to var/test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, Request, Route, expect

from merlin.dev import page_origins
from merlin.live_page import LivePage, PageServer, listening
from merlin.local.kept_secrets import KeptFiles
from merlin.local.service_processes import Service, Services
from tests.browser import ARTIFACTS, Watched

# What one user posts or edits is on the other's page within this.
LIVE_WITHIN_MS = 1_000
# A page's start: its script, its first call, a stream opened (a cold browser on a busy machine).
STARTED_WITHIN_MS = 30_000
# A page's own write is shown by reading it back (read-your-writes), through the projection.
OWN_WRITE_WITHIN_MS = 10_000


@dataclass
class Live:
    """merlin's services and the live-rooms page, with alice's and bob's tokens."""

    write: Service
    read: Service
    url: str  # the page's
    tokens: dict[str, str]


@pytest.fixture
async def live(sqlite_services: Services, tmp_path: Path) -> AsyncIterator[Live]:
    sock = listening(0)
    # The APIs allow the page's origin, as `merlin dev` sets them.
    origins = json.dumps(page_origins(sock.getsockname()[1]))
    write = await sqlite_services.write_api(MERLIN_WRITE_API_CORS_ORIGINS=origins)
    read = await sqlite_services.read_api(MERLIN_READ_API_CORS_ORIGINS=origins)
    sqlite_services.forwarder()
    kept = KeptFiles(tmp_path / "var")
    kept.var_dir.mkdir()
    tokens = {user: sqlite_services.token(user) for user in ("alice", "bob")}
    for user, token in tokens.items():
        kept.user_token(user).write_text(token + "\n")
    page = LivePage(write.url or "", read.url or "", {user: kept.user_token(user) for user in tokens})
    async with PageServer(page, sock) as server:
        yield Live(write, read, server.url, tokens)
    for service in (write, read):
        output = service.output()
        assert not [user for user, token in tokens.items() if token in output], (
            f"{service.name} logged a token"
        )


async def opened(browser: Browser, watched: Watched) -> tuple[BrowserContext, Page]:
    """A context of its own (its own sessionStorage: another user's tab) and a page in it."""
    context = await browser.new_context(viewport={"width": 1000, "height": 900})
    await context.route("**/*", watched.route)
    page = await context.new_page()
    page.on("console", watched.console)
    return context, page


async def sign_in_as(page: Page, url: str, user: str) -> None:
    await page.goto(url)
    button = page.locator(f'.dev-user[data-user="{user}"]')
    await expect(button).to_be_visible(timeout=STARTED_WITHIN_MS)
    await button.click()
    await expect(page.locator("#me")).to_have_text(user, timeout=STARTED_WITHIN_MS)


def bodies(page: Page) -> Locator:
    """The texts of the messages the page shows, in the order it shows them."""
    return page.locator("#messages .message .body")


async def post(page: Page, text: str) -> None:
    """Post ``text`` from ``page`` and wait until the page shows it (read-your-writes)."""
    await page.fill("#post-input", text)
    await page.press("#post-input", "Enter")
    await expect(bodies(page).filter(has_text=text)).to_have_count(1, timeout=OWN_WRITE_WITHIN_MS)


async def edit(page: Page, text: str, new_text: str) -> None:
    item = page.locator("#messages .message").filter(has=page.locator(".body", has_text=text))
    await item.locator(".edit").click()
    await item.locator(".edit-form input").fill(new_text)
    await item.locator(".edit-form button[type=submit]").click()


async def write_as(live: Live, user: str, room: str, body: str) -> str:
    """A message posted through the write API, once the read API has it; its id."""
    headers = {"Authorization": f"Bearer {live.tokens[user]}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        answer = await client.post(f"{live.write.url}/v1/rooms/{room}/messages", json={"body": body})
        assert answer.status_code == 202, answer.text
        written = answer.json()
        read = await client.get(
            f"{live.read.url}/v1/rooms/{room}/messages/{written['message_id']}",
            params={"after_position": written["position"]},
        )
        assert read.status_code == 200, read.text
    return str(written["message_id"])


async def test_a_page_shows_the_history_posts_and_edits_with_a_pasted_token(
    live: Live, chromium: Browser
) -> None:
    room = f"history-{uuid.uuid4().hex[:8]}"
    await write_as(live, "alice", room, "first, before the page")
    await write_as(live, "bob", room, "bob's, before the page")
    watched = Watched()
    context, page = await opened(chromium, watched)
    patches: list[dict[str, str]] = []

    def seen(request: Request) -> None:
        if request.method == "PATCH":
            patches.append(request.headers)

    page.on("request", seen)
    await page.goto(f"{live.url}/?room={room}")
    # A token the APIs refuse brings the form back, saying so.
    await page.fill("#token-input", "not-a-token")
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#note")).to_contain_text("refused", timeout=STARTED_WITHIN_MS)
    await expect(page.locator("#token-form")).to_be_visible(timeout=STARTED_WITHIN_MS)

    await page.fill("#token-input", f"Bearer {live.tokens['alice']}")
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#me")).to_have_text("alice", timeout=STARTED_WITHIN_MS)
    await expect(bodies(page)).to_have_text(
        ["first, before the page", "bob's, before the page"], timeout=STARTED_WITHIN_MS
    )
    # Only one's own messages offer an edit.
    await expect(page.locator("#messages .message .edit")).to_have_count(1, timeout=STARTED_WITHIN_MS)

    await post(page, "posted from the page")
    await edit(page, "first, before the page", "first, edited on the page")
    expected = ["first, edited on the page", "bob's, before the page", "posted from the page"]
    await expect(bodies(page)).to_have_text(expected, timeout=OWN_WRITE_WITHIN_MS)
    await expect(page.locator("#messages .message .meta").first).to_contain_text("v2")
    assert [headers.get("if-match") for headers in patches] == ['"1"']
    assert all(headers.get("idempotency-key") for headers in patches)

    # The token is kept for this tab: a reload shows the room again, each message once.
    await page.reload()
    await expect(bodies(page)).to_have_text(expected, timeout=STARTED_WITHIN_MS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "live-rooms-history.png", full_page=True)
    await context.close()

    assert watched.blocked == []
    assert not [url for url in watched.requested if any(token in url for token in live.tokens.values())]
    # The refused token's 401s are the console's only errors.
    assert [error for error in watched.console_errors if "401" not in error] == []


async def test_two_users_see_each_others_posts_and_edits_live_and_a_reload_misses_nothing(
    live: Live, chromium: Browser
) -> None:
    room = f"live-{uuid.uuid4().hex[:8]}"
    url = f"{live.url}/?room={room}"
    watched = Watched()
    context_a, alice = await opened(chromium, watched)
    context_b, bob = await opened(chromium, watched)
    await sign_in_as(alice, url, "alice")
    await sign_in_as(bob, url, "bob")
    for page in (alice, bob):
        await expect(page.locator("#live-status")).to_have_attribute(
            "data-state", "live", timeout=STARTED_WITHIN_MS
        )

    shown: list[str] = []
    await post(alice, "hello from alice")
    shown.append("hello from alice")
    await expect(bodies(bob)).to_have_text(shown, timeout=LIVE_WITHIN_MS)
    await post(bob, "hi alice, bob here")
    shown.append("hi alice, bob here")
    await expect(bodies(alice)).to_have_text(shown, timeout=LIVE_WITHIN_MS)

    await edit(bob, "hi alice, bob here", "hi alice, bob here (edited)")
    shown[1] = "hi alice, bob here (edited)"
    await expect(bodies(alice)).to_have_text(shown, timeout=LIVE_WITHIN_MS)
    await edit(alice, "hello from alice", "hello from alice (edited)")
    shown[0] = "hello from alice (edited)"
    await expect(bodies(bob)).to_have_text(shown, timeout=LIVE_WITHIN_MS)
    await expect(bob.locator("#messages .message .meta").first).to_contain_text("v2", timeout=LIVE_WITHIN_MS)

    # Bob reloads while alice keeps posting. His reloaded page's stream is held until alice has
    # posted more, so those messages reach him only by resuming after what he had shown.
    for n in range(1, 4):
        await post(alice, f"before the reload {n}")
        shown.append(f"before the reload {n}")
    await expect(bodies(bob)).to_have_text(shown, timeout=LIVE_WITHIN_MS)
    kept = await bob.evaluate(f"window.sessionStorage.getItem('merlin.live.position:{room}')")
    assert isinstance(kept, str), "bob's page keeps the last position it showed"
    asked: list[str] = []
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_stream(route: Route) -> None:
        asked.append(route.request.url)
        held.set()
        await release.wait()
        await route.fallback()

    await context_b.route(lambda url: f"/v1/rooms/{room}/live?" in url, hold_the_stream)
    await bob.reload()
    await asyncio.wait_for(held.wait(), STARTED_WITHIN_MS / 1000)
    for n in range(1, 4):
        await post(alice, f"during the reload {n}")
        shown.append(f"during the reload {n}")
    release.set()
    await expect(bob.locator("#live-status")).to_have_attribute(
        "data-state", "live", timeout=STARTED_WITHIN_MS
    )
    for n in range(1, 4):
        await post(alice, f"after the reload {n}")
        shown.append(f"after the reload {n}")
    await expect(bodies(bob)).to_have_text(shown, timeout=LIVE_WITHIN_MS)
    await expect(bodies(alice)).to_have_text(shown, timeout=LIVE_WITHIN_MS)
    assert f"after_position={kept}" in asked[0], asked
    ids = await bob.locator("#messages .message").evaluate_all(
        "items => items.map(item => item.dataset.messageId)"
    )
    assert len(set(ids)) == len(ids) == len(shown)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await bob.screenshot(path=ARTIFACTS / "live-rooms-bob.png", full_page=True)
    await alice.screenshot(path=ARTIFACTS / "live-rooms-alice.png", full_page=True)
    await context_a.close()
    await context_b.close()

    assert watched.blocked == []
    assert not [url for url in watched.requested if any(token in url for token in live.tokens.values())]
    # The stream is opened with a ticket, the only credential a URL carries.
    streams = [url for url in watched.requested if "/live?" in url]
    assert streams
    assert all("ticket=" in url for url in streams)
    assert watched.console_errors == []
