"""The web face in a real browser (Debian's chromium, driven by playwright) against a
real hub filled with the demo story.

Screenshots of each page go to the test's temp dir, or to ``$IMPACTBUS_SCREENSHOTS``
when set (``IMPACTBUS_SCREENSHOTS=docs/screenshots pytest tests/web/test_browser.py``
refreshes the README's pictures).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.bus import DIGESTS
from services.runtime.demo import load_demo
from tests.web.conftest import WebHub

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not at /usr/bin/chromium (`make test` installs it as root)",
    ),
]

if CHROMIUM.exists():
    from playwright.async_api import BrowserContext, Page, Route, async_playwright, expect


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("IMPACTBUS_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",  # a fresh user-data dir per test
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 900, "height": 1100},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def demo_hub(web_hub: WebHub) -> WebHub:
    await load_demo(web_hub.bus)
    await web_hub.wait_quiet(30)
    return web_hub


async def sign_in(page: Page, hub: WebHub) -> None:
    token = await hub.token(initiatives=("somerville", "oporajita"))
    await page.goto(f"{hub.url}/login")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{hub.url}/post")


async def emails_to(hub: WebHub, address: str) -> list[dict[str, object]]:
    return [e for e in await hub.outbox("email") if address in str(e["to"])]


async def test_a_changed_preference_decides_where_the_next_event_goes(
    demo_hub: WebHub, browser: BrowserContext, shots: Path
) -> None:
    hub = demo_hub
    page = await browser.new_page()
    await page.goto(f"{hub.url}/preferences/{hub.signer.preferences_token('priya')}")
    for words in (
        "Milestones from every initiative",
        "Meeting notes from Shape Up Somerville",
        "Metric updates from Shape Up Somerville",
    ):
        await expect(page.get_by_role("group", name=words)).to_be_visible()
    await page.screenshot(path=shots / "preferences.png", full_page=True)

    await page.goto(f"{hub.url}/preferences/{hub.signer.preferences_token('maria')}")
    await expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
    group = page.get_by_role("group", name="Everything from Shape Up Somerville")
    await expect(group).to_be_visible()

    await group.get_by_label("In my digest").check()
    await page.get_by_label("How often").select_option("weekly")
    await page.get_by_label("On (weekly)").select_option("fri")
    save = page.get_by_role("button", name="Save preferences")
    await save.focus()
    await page.keyboard.press("Enter")  # keyboard only
    await expect(page.get_by_role("status")).to_have_text("Your preferences are saved.")
    await expect(group.get_by_label("In my digest")).to_be_checked()

    before = len(await emails_to(hub, "maria.lopez@schools.example"))
    await hub.post(title="Walk-to-school day announced", topic="walk-to-school")
    await hub.wait_quiet()
    assert len(await emails_to(hub, "maria.lopez@schools.example")) == before
    info = await hub.bus.js.stream_info(DIGESTS, subjects_filter="digest.maria")
    assert (info.state.subjects or {}).get("digest.maria") == 1

    await page.set_viewport_size({"width": 375, "height": 800})  # readable on a phone
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375


async def test_a_milestone_posted_in_the_form_reaches_the_outbox(
    demo_hub: WebHub, browser: BrowserContext, shots: Path
) -> None:
    hub = demo_hub
    page = await browser.new_page()
    await sign_in(page, hub)
    await page.get_by_label("Initiative").select_option("somerville")
    await page.get_by_label("Milestone", exact=True).check()
    await page.get_by_role("button", name="Next").click()
    stored = await hub.events()

    await page.get_by_role("button", name="Preview").click()  # empty: errors, nothing sent
    await expect(page.locator("#e-title")).to_have_text("required")
    title = page.get_by_role("textbox", name="Milestone", exact=True)
    await expect(title).to_have_attribute("aria-invalid", "true")
    assert await hub.events() == stored

    await page.goto(f"{hub.url}/post?initiative=somerville&kind=milestone")  # a fresh form
    await page.get_by_role("textbox", name="Milestone", exact=True).fill(
        "Second indoor market opens at the high school"
    )
    await page.get_by_label("Reached").check()
    await page.get_by_label("Due").fill("2026-11-20")
    await page.get_by_label("Note").fill("Open every Saturday, 9:00 to 13:00 <b>all winter</b>.")
    await page.screenshot(path=shots / "post.png", full_page=True)
    await page.get_by_role("button", name="Preview").click()
    await expect(page.get_by_role("heading", name="Preview")).to_be_visible()
    await page.get_by_role("button", name="Publish").click()

    await expect(page.get_by_role("status")).to_contain_text("Published.")
    await expect(
        page.get_by_text("Second indoor market opens at the high school").first
    ).to_be_visible()
    await page.set_viewport_size({"width": 900, "height": 1500})
    await page.screenshot(path=shots / "initiative.png")

    await hub.wait_quiet()
    await page.goto(f"{hub.url}/outbox?channel=email")
    subject = "[somerville] Milestone reached: Second indoor market opens at the high school"
    card = page.get_by_role("region", name="email to maria")
    await expect(card.get_by_role("heading", name=subject).first).to_be_visible()
    frame = page.frame_locator("iframe.mail").first
    await expect(frame.get_by_text("all winter", exact=False)).to_be_visible()
    await expect(frame.locator("b")).to_have_count(0)  # the note's markup stays text
    await page.screenshot(path=shots / "outbox.png")


async def test_one_click_unsubscribe_stops_delivery(
    demo_hub: WebHub, browser: BrowserContext, shots: Path
) -> None:
    hub = demo_hub
    [*_, last] = await emails_to(hub, "maria.lopez@schools.example")
    url = str(last["headers"]["List-Unsubscribe"]).strip("<>")  # type: ignore[index]
    page = await browser.new_page()

    await page.goto(url)
    await expect(page.get_by_role("heading", name="Unsubscribe?")).to_be_visible()
    await expect(page.get_by_text("Everything from Shape Up Somerville")).to_be_visible()
    await page.screenshot(path=shots / "unsubscribe.png", full_page=True)
    assert len(await hub.directory.list_subscriptions("maria")) == 1  # looking changed nothing

    async with page.expect_response(url) as answer:
        await page.get_by_role("button", name="Unsubscribe").click()
    response = await answer.value
    assert response.status == 200
    assert response.request.method == "POST"
    await expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    assert await hub.directory.list_subscriptions("maria") == []

    before = len(await emails_to(hub, "maria.lopez@schools.example"))
    await hub.post(title="Crosswalks repainted near schools", topic="crosswalks")
    await hub.wait_quiet()
    assert len(await emails_to(hub, "maria.lopez@schools.example")) == before


async def test_forged_and_expired_links_get_a_clear_page(
    demo_hub: WebHub, browser: BrowserContext
) -> None:
    from tests.web.test_unsubscribe import old_token

    hub = demo_hub
    page = await browser.new_page()
    sub = (await hub.directory.list_subscriptions("maria"))[0]

    forged = await page.goto(
        f"{hub.url}/unsubscribe/{hub.signer.unsubscribe_token('maria', sub.id)[:-3]}xyz"
    )
    assert forged is not None
    assert forged.status == 400
    await expect(page.get_by_role("heading", name="This link is not valid")).to_be_visible()
    await expect(page.get_by_text("Nothing was changed.")).to_be_visible()

    expired = await page.goto(
        f"{hub.url}/preferences/{old_token(hub, {'r': 'maria'}, salt='preferences')}"
    )
    assert expired is not None
    assert expired.status == 410
    await expect(page.get_by_role("heading", name="Link expired")).to_be_visible()
    assert await hub.directory.list_subscriptions("maria") == [sub]


async def test_api_docs_render_with_no_network_but_the_hub(
    web_hub: WebHub, browser: BrowserContext, shots: Path
) -> None:
    hub = web_hub
    allowed = urlsplit(hub.url).netloc
    elsewhere: list[str] = []

    async def only_the_hub(route: Route) -> None:
        if urlsplit(route.request.url).netloc == allowed:
            await route.continue_()
        else:  # as on a machine without internet
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    await browser.route("**/*", only_the_hub)
    page = await browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    await page.goto(f"{hub.url}/docs")

    await expect(page.get_by_role("heading", name="impactbus API")).to_be_visible()
    spec = (await hub.client.get("/openapi.json")).json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    await expect(page.locator(".opblock-summary")).to_have_count(operations)
    events = page.locator(".opblock-post").filter(has_text="/v1/events:batch")
    await expect(events).to_contain_text("Publish")
    await page.screenshot(path=shots / "docs.png")
    assert elsewhere == []
    assert problems == []
