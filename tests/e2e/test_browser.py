"""The page the gateway serves at / in a real browser: Debian's Chromium, driven by
Playwright (launched with its executable path; Playwright's own browser downloads are
not used). A user logs in, places an order and sees its notification arrive without
a reload, chats in a room, and cancels the order. The last screen is saved as
``.run/test-artifacts/browser.png``.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".run" / "test-artifacts"
# What a headless Chromium needs on a machine with no display and a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE = 30_000  # ms: how long a live update may take to show


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed ('make tools' installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def test_a_signed_in_user_sees_order_notifications_arrive_live_and_chats(page, target, new_account):
    me = new_account("Browser User")
    response = page.goto(target.gateway_url + "/")
    assert response is not None
    assert response.ok
    assert "rel=preload" in (response.headers.get("link") or "")

    page.fill("#login-form input[name=email]", me.email)
    page.fill("#login-form input[name=password]", me.password)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who-name")).to_contain_text("Browser User")
    expect(page.locator("#events-state")).to_have_attribute("data-state", "on", timeout=LIVE)
    expect(page.locator("#chat-state")).to_have_attribute("data-state", "on", timeout=LIVE)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    page.click("#order-form button[type=submit]")
    expect(page.locator("#orders tr")).to_have_count(1)
    placed = page.locator("#notifications li[data-type='order.placed']")
    expect(placed).to_have_count(1, timeout=LIVE)
    expect(placed).to_contain_text("Order confirmed")

    page.fill("#join-form input[name=room]", "browser-room")
    page.click("#join-form button[type=submit]")
    expect(page.locator("#rooms .room")).to_contain_text("#browser-room", timeout=LIVE)
    page.fill("#say-form input[name=message]", "hello from the browser")
    page.click("#say-form button[type=submit]")
    expect(page.locator("#chat li.said")).to_contain_text("hello from the browser", timeout=LIVE)

    page.click("#orders tr button")
    expect(page.locator("#orders .status")).to_have_text("CANCELLED")
    expect(page.locator("#notifications li[data-type='order.cancelled']")).to_have_count(1, timeout=LIVE)
    assert page.evaluate("window.sameDocument") is True

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "browser.png", full_page=True)


def test_the_page_refuses_bad_credentials_with_a_message(page, target):
    page.goto(target.gateway_url + "/")
    page.fill("#login-form input[name=email]", "nobody@example.com")
    page.fill("#login-form input[name=password]", "wrong-password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#message")).to_have_attribute("data-kind", "error")
    expect(page.locator("#signed-in")).to_be_hidden()
