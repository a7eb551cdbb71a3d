"""Headless Debian Chromium driven by Playwright, for journeys against a real server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.requirements import require_chromium
from tests.support.server import ROOT, RunningServer

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    executable = require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Page, server: RunningServer, path: str = "/registry/") -> None:
    page.goto(server.url + path)
    expect(page).to_have_url(f"{server.url}/accounts/login/?next={path}")
    page.fill("#id_username", server.username)
    page.fill("#id_password", server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + path)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


def simulate(
    server: RunningServer, count: int, prefix: str, *extra: str, duration_s: int = 120
) -> subprocess.Popen[bytes]:
    """Virtual iPhones against the server, through the public device API."""
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
        str(duration_s),
        # Their cameras publish when a session starts; these journeys watch the page, not the
        # picture, so the video is kept light (the hero feed's own tests use full size).
        "--video-size",
        "320x240",
        "--video-fps",
        "10",
        *extra,
        log_name=f"simulator-{prefix}",
    )
