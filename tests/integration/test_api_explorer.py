"""The API explorer in a real browser: Debian's headless Chromium, driven by Playwright, on a real read API.

Every request that would leave the loopback is blocked and recorded, so the page must work offline:
Swagger UI from merlin's own files, the document loaded with the token pasted into the page, and
"Try it out" authorized by it. A screenshot of what rendered is kept in var/test-artifacts/.
"""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Browser, Page, expect

from kernel.auth import READ
from merlin.local.service_processes import Service, Services
from tests.browser import ARTIFACTS, Watched

# Swagger UI renders a document of some hundred kilobytes from a 1.5 MB script: seconds on a busy machine.
RENDERED_WITHIN_MS = 30_000
# Every wait of this module's expectations, not Playwright's 5 s. The setting is global: the live-rooms
# page's test (test_live_page.py) gives each of its expectations its own timeout.
expect.set_options(timeout=RENDERED_WITHIN_MS)
MESSAGES = "/v1/rooms/{room_id}/messages"


async def paste(page: Page, token: str) -> None:
    form = page.locator("#token-form")
    await expect(form).to_be_visible()
    await page.fill("#token-input", token)
    await page.click("#token-form button[type=submit]")


async def test_the_explorer_opens_offline_with_a_pasted_token_and_tries_a_call(
    sqlite_services: Services, chromium: Browser
) -> None:
    read = await sqlite_services.read_api()
    # Any token of the service opens it: a reader's, not an operator's.
    token = sqlite_services.token("viewer", scopes=(READ,))
    paths = await documented_paths(read, token)
    watched = Watched()
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    await context.route("**/*", watched.route)
    page = await context.new_page()
    page.on("console", watched.console)

    answer = await page.goto(f"{read.url}/docs")
    assert answer is not None
    assert answer.status == 200  # no token needed for the page

    # A token the service refuses: the form comes back and says so.
    await paste(page, "not-a-token")
    await expect(page.locator("#token-note")).to_contain_text("refused")
    await expect(page.locator("#token-form")).to_be_visible()

    await paste(page, token)
    await expect(page.locator("#token-held")).to_be_visible()
    rendered = page.locator(".opblock-summary-path")
    await expect(rendered.first).to_be_visible()
    await expect(rendered).to_have_count(len(paths))
    assert set(await rendered.evaluate_all("nodes => nodes.map(node => node.dataset.path)")) == paths

    # "Authorize" holds the pasted token under the bearer scheme.
    authorize = page.locator(".auth-wrapper .btn.authorize")
    await expect(authorize).to_have_class(re.compile(r"\blocked\b"))
    await authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    await expect(dialog).to_contain_text("bearerAuth")
    await expect(dialog).to_contain_text("Authorized")
    await dialog.locator("button.btn-done").click()

    # Try it out: a page of a room's messages, authorized by the pasted token alone.
    operation = page.locator(".opblock-get").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{MESSAGES}"]')
    )
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator('tr[data-param-name="room_id"] input').fill("r1")
    await operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status")
    await expect(status).to_have_text("200")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "api-explorer.png", full_page=True)

    # The token is kept for this tab: a reload opens the explorer again, another tab asks anew.
    await page.reload()
    await expect(rendered.first).to_be_visible()
    other = await context.new_page()
    await other.goto(f"{read.url}/docs")
    await expect(other.locator("#token-form")).to_be_visible()
    await context.close()

    assert watched.blocked == []
    assert watched.requested
    assert [url for url in watched.requested if not url.startswith(f"{read.url}/")] == []
    assert not [url for url in watched.requested if token in url]
    # A refused document is a console error of Swagger UI's; nothing else may be (a CSP violation is).
    assert [error for error in watched.console_errors if "401" not in error] == []
    assert token not in read.output()


async def documented_paths(service: Service, token: str) -> set[str]:
    async with httpx.AsyncClient(base_url=service.url or "", timeout=10) as client:
        document = await client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert document.status_code == 200, document.text
    return set(document.json()["paths"])
