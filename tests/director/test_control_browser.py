"""Regression journeys for device control, in headless Debian Chromium against a real server
with simulated iPhones: 0.5x, flip, capture, capture all."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.support.browser import log_in, simulate
from tests.support.server import RunningServer

pytestmark = pytest.mark.browser

MIRROR_X = "matrix(-1, 0, 0, 1, 0, 0)"


def _cards(page: Page, server: RunningServer, count: int, prefix: str) -> list[Locator]:
    simulate(server, count, prefix)
    cards = [page.locator(".device-card", has_text=f"Cam {i + 1}") for i in range(count)]
    for card in cards:
        expect(card).to_have_attribute("data-status", "online", timeout=15_000)
    return cards


def test_pressing_half_x_shows_the_ultra_wide_once_the_phone_acknowledges(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    (card,) = _cards(page, server, 1, "lens")
    expect(card.locator("[data-testid=lens]")).to_have_text("wide 1x")

    card.locator("[data-testid='zoom-0.5x']").click()

    expect(card.locator("[data-testid=lens]")).to_have_text("ultra-wide 0.5x", timeout=10_000)
    expect(card.locator("[data-testid='zoom-0.5x']")).to_have_attribute("aria-pressed", "true")
    expect(card.locator("[data-testid=last-command]")).to_have_attribute("data-state", "done")
    expect(card.locator("[data-testid=last-command]")).to_contain_text("Lens 0.5x (ultra-wide)")
    page.close()


def test_flip_mirrors_the_preview_after_the_phone_acknowledges(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    (card,) = _cards(page, server, 1, "flip")
    preview = card.locator("[data-testid=preview]")
    # The card re-renders on pushes (heartbeats, the pose rate): ask until it holds, never
    # of one element that a push may just have replaced.
    expect(preview).to_have_css("transform", "none")

    card.locator("[data-testid=flip-horizontal]").click()

    expect(card.locator("[data-testid=flip-horizontal]")).to_have_attribute(
        "aria-pressed", "true", timeout=10_000
    )
    expect(preview).to_have_class(re.compile(r"\bflip-h\b"))
    expect(preview).to_have_css("transform", MIRROR_X)
    page.close()


def test_capture_lands_a_thumbnail_in_the_strip_and_on_the_card(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    (card,) = _cards(page, server, 1, "capture")
    device_id = card.get_attribute("data-device-id")

    card.locator("[data-testid=capture]").click()

    selector = f"#stills-strip [data-device-id='{device_id}'] img"
    expect(page.locator(selector).first).to_be_visible(timeout=15_000)
    # Decoded, asked of whichever thumbnail is in the strip (a push may replace it).
    page.wait_for_function(
        "sel => { const img = document.querySelector(sel);"
        " return img !== null && img.complete && img.naturalWidth > 0; }",
        arg=selector,
        timeout=10_000,
    )
    expect(card.locator("[data-testid=preview] img")).to_be_visible(timeout=10_000)
    expect(card.locator("[data-testid=last-command]")).to_have_attribute("data-state", "done")
    page.close()


def test_capture_all_fires_every_camera_and_shows_the_spread(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    cards = _cards(page, server, 3, "all")

    page.locator("[data-testid=capture-all]").click()

    expect(page.locator(".toast")).to_contain_text("3 cameras fire together")
    group = page.locator("#stills-strip [data-testid=capture-group]").first
    expect(group).to_contain_text("3 cameras", timeout=20_000)
    spread = group.locator("[data-testid=spread]")
    expect(spread).to_have_text(re.compile(r"spread \d+ ms"))
    spread_ms = int(re.search(r"(\d+) ms", spread.inner_text()).group(1))  # type: ignore[union-attr]
    # The simulated phones' clocks are hundreds of ms apart; mapped, they fire together.
    assert spread_ms <= 100, spread_ms
    for card in cards:
        expect(card.locator("[data-testid=last-command]")).to_have_attribute(
            "data-state", "done", timeout=10_000
        )
    page.close()
