"""The registry in headless Debian Chromium against a real server with simulated devices."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import log_in, simulate
from tests.support.server import RunningServer

pytestmark = pytest.mark.browser


def test_a_device_appears_live_then_goes_offline_without_a_reload(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    expect(page.locator(".empty-when-cards")).to_be_visible()
    page.evaluate("window.__noReload = true")

    simulator = simulate(server, 1, "browser")
    card = page.locator(".device-card", has_text="Cam 1")
    expect(card).to_be_visible(timeout=10_000)
    expect(card).to_have_attribute("data-status", "online")
    expect(card.locator("[data-testid=lens]")).to_have_text("wide 1x")
    expect(page.locator("[data-testid=online-count]")).to_have_text("1")
    expect(page.locator(".empty-when-cards")).to_be_hidden()

    # The phone disappears: three missed 1 s beats, then the sweep marks it offline.
    simulator.terminate()
    simulator.wait(timeout=10)
    expect(card).to_have_attribute("data-status", "offline", timeout=15_000)
    expect(card.locator("[data-testid=status]")).to_have_text("Offline")
    expect(page.locator("[data-testid=online-count]")).to_have_text("0")
    assert page.evaluate("window.__noReload") is True
    page.close()


def test_the_page_shows_reconnecting_and_resyncs_after_the_server_restarts(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    page.evaluate("window.__noReload = true")

    server.stop_server()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#live-status")).to_have_text("Reconnecting…")

    # While the page is cut off, a phone registers; it must appear once the socket is back.
    server.start_server()
    simulator = simulate(server, 1, "resync")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(page.locator(".device-card", has_text="Cam 1")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__noReload") is True
    simulator.terminate()
    page.close()


def test_the_pairing_code_can_be_regenerated_from_the_page(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    old = page.locator("[data-testid=pairing-code]").inner_text()
    assert old.replace("-", "") == server.pairing_code()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="New code").click()
    expect(page.locator("[data-testid=pairing-code]")).not_to_have_text(old)
    expect(page.locator(".toast")).to_contain_text("New pairing code issued")
    assert page.locator("[data-testid=pairing-code]").inner_text().replace("-", "") == (
        server.pairing_code()
    )
    page.close()
