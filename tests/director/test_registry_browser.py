"""The registry in headless Debian Chromium against a real server with simulated devices."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.requirements import require_chromium
from tests.support.server import ROOT, RunningServer

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _log_in(page: Page, server: RunningServer, path: str = "/registry/") -> None:
    page.goto(server.url + path)
    expect(page).to_have_url(f"{server.url}/accounts/login/?next={path}")
    page.fill("#id_username", server.username)
    page.fill("#id_password", server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + path)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


def _simulate(server: RunningServer, count: int, prefix: str) -> subprocess.Popen[bytes]:
    return server.spawn(
        sys.executable,
        str(ROOT / "manage.py"),
        "simulate_devices",
        "--count",
        str(count),
        "--url",
        server.url,
        "--install-prefix",
        prefix,
        "--duration",
        "120",
        log_name=f"simulator-{prefix}",
    )


def test_a_device_appears_live_then_goes_offline_without_a_reload(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    _log_in(page, server)
    expect(page.locator(".empty-when-cards")).to_be_visible()
    page.evaluate("window.__noReload = true")

    simulator = _simulate(server, 1, "browser")
    card = page.locator(".device-card", has_text="Cam 1")
    expect(card).to_be_visible(timeout=10_000)
    expect(card).to_have_attribute("data-status", "online")
    expect(card.locator("[data-testid=lens]")).to_have_text("wide · 1x")
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
    _log_in(page, server)
    page.evaluate("window.__noReload = true")

    server.stop_server()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#live-status")).to_have_text("Reconnecting…")

    # While the page is cut off, a phone registers; it must appear once the socket is back.
    server.start_server()
    simulator = _simulate(server, 1, "resync")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(page.locator(".device-card", has_text="Cam 1")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__noReload") is True
    simulator.terminate()
    page.close()


def test_the_pairing_code_can_be_regenerated_from_the_page(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    _log_in(page, server)
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
