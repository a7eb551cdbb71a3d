"""The coverage map in headless Debian Chromium against a real server: dragging a camera,
nudging it with the keyboard, and the "Show webcams" switch."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.support.api import heartbeat_body, register_body
from tests.support.browser import log_in
from tests.support.server import RunningServer

pytestmark = pytest.mark.browser

WEBCAM_LENSES = [{"id": "wide", "zoom": 1.0, "hfov_deg": 78.0}]
BEAT_EVERY_S = 0.4  # the test server marks a device offline after three missed 1 s beats


class Fleet:
    """Devices registered through the real HTTP API, kept online by a heartbeat thread, as the
    capture app would; every beat makes the server push the cards and the map again."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.code = server.pairing_code()
        self.client = httpx.Client(base_url=server.url, timeout=10)
        self.tokens: dict[str, str] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._beat_forever, daemon=True)

    def register(self, name: str, **overrides: Any) -> str:
        body = register_body(self.code, f"coverage-{name}", name=name, **overrides)
        response = self.client.post("/api/v1/devices/register", json=body)
        assert response.status_code == 201, response.text
        device_id = str(response.json()["device_id"])
        self.tokens[device_id] = response.json()["token"]
        self._beat(device_id)
        return device_id

    def _beat(self, device_id: str) -> None:
        response = self.client.post(
            "/api/v1/devices/heartbeat",
            json=heartbeat_body(),
            headers={"Authorization": f"Bearer {self.tokens[device_id]}"},
        )
        assert response.status_code == 200, response.text

    def _beat_forever(self) -> None:
        while not self.stopping.wait(BEAT_EVERY_S):
            for device_id in list(self.tokens):
                self._beat(device_id)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.client.close()


@pytest.fixture
def fleet(server: RunningServer) -> Iterator[Fleet]:
    fleet = Fleet(server)
    yield fleet
    fleet.stop()


def _marker(page: Page, device_id: str) -> Locator:
    return page.locator(f"#coverage-map .coverage-cam[data-device-id='{device_id}']")


def _place_from_the_list(page: Page, device_id: str) -> None:
    row = page.locator(f"#coverage-map .coverage-unplaced li[data-device-id='{device_id}']")
    row.get_by_role("button").click()
    expect(_marker(page, device_id)).to_be_visible()


def _largest_gap(page: Page) -> int:
    return int(page.locator("#coverage-map [data-gap-deg]").first.get_attribute("data-gap-deg"))


def _box(locator: Locator) -> dict[str, float]:
    """The element's box. Heartbeat pushes replace the map several times a second, and an
    element caught mid-swap has none for a moment: ask again, for up to 5 s."""
    deadline = time.monotonic() + 5
    while True:
        box = locator.bounding_box()
        if box is not None:
            return dict(box)
        assert time.monotonic() < deadline, f"{locator} never had a box"
        time.sleep(0.05)


def _ring_point(page: Page, azimuth_deg: float, fraction: float = 0.6) -> tuple[float, float]:
    """Screen coordinates of a point at this azimuth, `fraction` of the way to the ring."""
    box = _box(page.locator("#coverage-map svg"))
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    radius = box["width"] / 2 * fraction
    a = math.radians(azimuth_deg)
    return cx + radius * math.sin(a), cy - radius * math.cos(a)


def _azimuth(marker: Locator) -> float:
    return float(marker.get_attribute("data-azimuth") or "nan")


def test_dragging_a_camera_around_the_ring_moves_the_gap_and_is_saved(
    browser: Browser, server: RunningServer, fleet: Fleet
) -> None:
    back = fleet.register("Cam Back")
    front = fleet.register("Cam Front")
    fleet.start()
    page = browser.new_page()
    log_in(page, server)
    expect(page.locator("#coverage-map .coverage-unplaced li")).to_have_count(2)

    # Placed from the list, each goes to the middle of the largest gap: 180°, then 0°.
    _place_from_the_list(page, back)
    expect(_marker(page, back)).to_have_attribute("data-azimuth", "180")
    _place_from_the_list(page, front)
    expect(_marker(page, front)).to_have_attribute("data-azimuth", "0")
    expect(page.locator("#coverage-map [data-gap-deg]").first).to_have_attribute(
        "data-gap-deg", "120"
    )

    # Drag the back camera to the subject's right side (90°), through a few pushes.
    marker = _marker(page, back)
    body = _box(marker.locator(".coverage-cam-dot"))
    page.mouse.move(body["x"] + body["width"] / 2, body["y"] + body["height"] / 2)
    page.mouse.down()
    for azimuth in (170, 150, 130, 110, 95):
        page.mouse.move(*_ring_point(page, azimuth), steps=4)
        time.sleep(0.3)  # long enough for heartbeat pushes to arrive mid-drag
        assert abs(_azimuth(marker) - azimuth) <= 2, "a push clobbered the drag"
    page.mouse.move(*_ring_point(page, 90), steps=4)
    page.mouse.up()

    dropped = _azimuth(marker)
    assert abs(dropped - 90) <= 2
    # Front at 0° and side at ~90°: the open arc runs from ~120° round to 330°, ~210°.
    expect(page.locator("#coverage-map")).to_have_attribute(
        "data-largest-gap", str(round(330 - (dropped + 30)))
    )
    assert _largest_gap(page) == round(330 - (dropped + 30))

    page.reload()
    expect(_marker(page, back)).to_have_attribute("data-azimuth", f"{dropped:g}")
    page.close()


def test_arrow_keys_move_a_focused_camera_and_the_move_is_saved(
    browser: Browser, server: RunningServer, fleet: Fleet
) -> None:
    cam = fleet.register("Cam Keys")
    fleet.start()
    page = browser.new_page()
    log_in(page, server)
    _place_from_the_list(page, cam)
    marker = _marker(page, cam)
    expect(marker).to_have_attribute("data-azimuth", "180")

    marker.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowLeft")
    expect(marker).to_have_attribute("data-azimuth", "189")
    # The server's answer and later pushes keep the camera there, and keep focus on it.
    time.sleep(1.5)
    expect(marker).to_have_attribute("data-azimuth", "189")
    expect(marker).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(marker).to_have_attribute("data-azimuth", "184")

    time.sleep(1.0)
    page.reload()
    expect(_marker(page, cam)).to_have_attribute("data-azimuth", "184")
    expect(_marker(page, cam)).to_have_attribute("aria-valuenow", "184")
    page.close()


def test_webcams_are_hidden_until_the_operator_asks_for_them(
    browser: Browser, server: RunningServer, fleet: Fleet
) -> None:
    phone = fleet.register("Cam Phone")
    webcam = fleet.register("Desk Webcam", kind="webcam", model="USB", lenses=WEBCAM_LENSES)
    fleet.start()
    page = browser.new_page()
    log_in(page, server)
    toggle = page.get_by_test_id("toggle-webcams")
    webcam_card = page.locator(f".device-card[data-device-id='{webcam}']")
    phone_card = page.locator(f".device-card[data-device-id='{phone}']")

    expect(phone_card).to_be_visible()
    expect(webcam_card).to_be_attached()
    expect(webcam_card).to_be_hidden()
    expect(toggle).not_to_be_checked()
    expect(page.locator("[data-webcam-count]")).to_have_text("(1 hidden)")

    toggle.check()
    expect(webcam_card).to_be_visible()
    _place_from_the_list(page, webcam)
    expect(_marker(page, webcam)).to_be_visible()
    # A webcam never counts toward coverage: with only a webcam placed, nothing is covered.
    expect(page.locator("#coverage-map [data-gap-deg]").first).to_have_attribute(
        "data-gap-deg", "360"
    )

    toggle.uncheck()
    expect(webcam_card).to_be_hidden()
    expect(_marker(page, webcam)).to_be_hidden()
    expect(phone_card).to_be_visible()
    # Pushes replace cards and the map; the switch holds across them and across a reload.
    time.sleep(1.2)
    expect(webcam_card).to_be_hidden()
    toggle.check()
    page.reload()
    expect(page.get_by_test_id("toggle-webcams")).to_be_checked()
    expect(_marker(page, webcam)).to_be_visible()
    expect(page.locator(f".device-card[data-device-id='{webcam}']")).to_be_visible()
    page.close()


def test_a_distance_being_typed_survives_pushes_and_sets_the_shot_size(
    browser: Browser, server: RunningServer, fleet: Fleet
) -> None:
    cam = fleet.register("Cam Far")
    fleet.start()
    page = browser.new_page()
    log_in(page, server)
    _place_from_the_list(page, cam)
    expect(_marker(page, cam).locator(".coverage-cam-detail")).to_have_text("no distance · 1x")

    page.locator("#coverage-map .coverage-edit summary").click()
    distance = page.locator(f"#coverage-{cam}-camera-distance")
    distance.fill("1.5")
    time.sleep(1.5)  # heartbeat pushes arrive; the typed value must not be wiped
    expect(distance).to_have_value("1.5")
    expect(distance).to_be_focused()
    distance.press("Enter")

    expect(_marker(page, cam).locator(".coverage-cam-detail")).to_have_text("medium · 1x")
    # The panel stays open across the re-render, and later pushes show the saved value.
    time.sleep(1.2)
    expect(page.locator("#coverage-map .coverage-edit")).to_have_attribute("open", "")
    expect(page.locator(f"#coverage-{cam}-camera-distance")).to_have_value("1.5")
    page.close()
