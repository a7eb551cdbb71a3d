"""The hero feed end to end in headless Debian Chromium: two cameras (Chromium pages with the
fake camera) publish with WHIP to a real server, the operator's Live Director plays the hero
through WHEP, and "Make hero" switches cameras inside the one connection.

Chromium offers no loopback ICE candidates, so it runs inside a network namespace of the
test's own (tests/support/netns.py) and the server listens on the host end of the veth pair,
offering only that address as its ICE candidate."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.support.api import heartbeat_body, register_body
from tests.support.browser import CHROMIUM_ARGS, log_in
from tests.support.netns import (
    VethNamespace,
    namespace_wrapper,
    netns_unavailable,
    veth_namespace,
)
from tests.support.requirements import missing, require_chromium
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.browser

BEAT_EVERY_S = 0.4  # the test server marks a device offline after three missed 1 s beats
BEATS_AT_MOST = 300  # the heartbeat thread stops by itself after two minutes at the latest
CONNECT_MS = 15_000
ON_AIR_S = 10
FRAMES_WINDOW_MS = 3_000
FRAMES_AT_LEAST = 20  # Chromium's fake camera sends 20 fps: 60 in 3 s, a third on a slow machine

# A camera's side of WHIP, in the page: the fake camera's track, sendonly, every candidate
# gathered before the offer goes out (the relay does no trickle ICE). Every wait is bounded.
PUBLISH_JS = """
async ({ token, timeoutMs }) => {
  const within = (promise, what) => Promise.race([
    promise,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: no answer in ${timeoutMs} ms`)), timeoutMs)),
  ]);
  const stream = await within(
    navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } }), "camera");
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await within(new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  }), "ICE gathering");
  const response = await fetch("/api/v1/whip", {
    method: "POST",
    headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + token },
    body: pc.localDescription.sdp,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const body = await response.text();
  if (response.status !== 201) throw new Error(`WHIP answered ${response.status}: ${body}`);
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  // Kept on the window so that the peer and its camera live as long as the page.
  window.publisher = { pc, stream, token, location: response.headers.get("Location") };
  return window.publisher.location;
}
"""

# The addresses of the candidate pair the camera's peer sends on: (its own, the relay's).
SELECTED_PAIR_JS = """
async () => {
  const stats = await window.publisher.pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      const pair = stats.get(report.selectedCandidatePairId);
      return [stats.get(pair.localCandidateId).address, stats.get(pair.remoteCandidateId).address];
    }
  }
  return null;
}
"""

UNPUBLISH_JS = """
async ({ timeoutMs }) => {
  const { pc, stream, token, location } = window.publisher;
  const response = await fetch(location, {
    method: "DELETE",
    headers: { "Authorization": "Bearer " + token },
    signal: AbortSignal.timeout(timeoutMs),
  });
  pc.close();
  stream.getTracks().forEach((track) => track.stop());
  return response.status;
}
"""


@dataclass
class Camera:
    device_id: str
    name: str
    token: str

    @property
    def card(self) -> str:
        return f"#device-{self.device_id}-card"


class Cameras:
    """Devices registered through the real device API and kept online by heartbeats from this
    process, as the capture app would; their video comes from Chromium pages."""

    def __init__(self, server: RunningServer) -> None:
        self.code = server.pairing_code()
        self.client = httpx.Client(base_url=server.url, timeout=10)
        self.all: list[Camera] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._beat_for_a_while, daemon=True)

    def register(self, name: str) -> Camera:
        body = register_body(self.code, f"hero-{name}", name=name)
        response = self.client.post("/api/v1/devices/register", json=body)
        assert response.status_code == 201, response.text
        payload = response.json()
        camera = Camera(device_id=str(payload["device_id"]), name=name, token=payload["token"])
        self._beat(camera)
        self.all.append(camera)
        return camera

    def _beat(self, camera: Camera) -> None:
        response = self.client.post(
            "/api/v1/devices/heartbeat",
            json=heartbeat_body(),
            headers={"Authorization": f"Bearer {camera.token}"},
        )
        assert response.status_code == 200, response.text

    def _beat_for_a_while(self) -> None:
        for _ in range(BEATS_AT_MOST):
            if self.stopping.wait(BEAT_EVERY_S):
                return
            for camera in list(self.all):
                self._beat(camera)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.client.close()


@pytest.fixture
def namespace() -> Iterator[VethNamespace]:
    reason = netns_unavailable()
    if reason is not None:
        missing(f"the WebRTC journey runs Chromium in a network namespace: {reason}")
    with veth_namespace() as made:
        yield made


@pytest.fixture
def hero_server(tmp_path: Path, namespace: VethNamespace) -> Iterator[RunningServer]:
    host_address = namespace.host_address
    # In the root namespace, so that it still reaches PostgreSQL and Redis on 127.0.0.1; it
    # listens and offers its ICE candidate on the host end of the pair only, and answers to
    # that address as a host name (Django's default allows only loopback names).
    env = {"MOTIONMIX_ICE_HOST_ADDRESSES": host_address, "DJANGO_ALLOWED_HOSTS": host_address}
    with running_server(tmp_path / "server", host=host_address, extra_env=env) as server:
        yield server


@pytest.fixture
def namespaced_browser(
    tmp_path: Path, namespace: VethNamespace, hero_server: RunningServer
) -> Iterator[Browser]:
    """Debian's Chromium inside the namespace. Playwright launches a wrapper that execs
    `ip netns exec <ns> /usr/bin/chromium`: Playwright drives Chromium over a pipe it inherits,
    which works across namespaces, so the driver stays in this process and only the browser's
    network is the namespace's."""
    wrapper = namespace_wrapper(namespace.name, require_chromium(), tmp_path)
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        # Host candidates as real addresses, not mDNS names nobody here could resolve.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        # getUserMedia needs a secure context; the camera pages are plain http on the server.
        f"--unsafely-treat-insecure-origin-as-secure={hero_server.url}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(wrapper), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def cameras(hero_server: RunningServer) -> Iterator[Cameras]:
    made = Cameras(hero_server)
    try:
        yield made
    finally:
        made.stop()


def _echo_console(page: Page, label: str) -> None:
    # Shown with the test's output when it fails.
    def echo(message: ConsoleMessage) -> None:
        print(f"[{label} console {message.type}] {message.text}")

    page.on("console", echo)
    page.on("pageerror", lambda error: print(f"[{label} page error] {error}"))


def _start_session(browser: Browser, server: RunningServer, name: str) -> tuple[Page, str]:
    """Log in as the operator and take a new session live; every online camera joins it."""
    page = browser.new_context().new_page()
    _echo_console(page, "operator")
    log_in(page, server)
    page.goto(server.url + "/")
    page.fill("#id_name", name)
    page.click("form.new-session button[type=submit]")
    row = page.locator("tr", has_text=name)
    row.get_by_role("button", name="Start").click()
    expect(row.locator("[data-testid=session-status]")).to_have_text("Live", timeout=10_000)
    href = row.locator("[data-testid=session-direct]").get_attribute("href")
    assert href, "a live session's row links to its Live Director"
    return page, href


def _publish(
    browser: Browser, server: RunningServer, camera: Camera, namespace: VethNamespace
) -> Page:
    """A camera page on the server's origin publishes the fake camera with WHIP, over the veth
    pair: from the namespace's address to the relay's only candidate."""
    page = browser.new_context().new_page()
    _echo_console(page, camera.name)
    page.goto(server.url + "/accounts/login/")
    location = page.evaluate(PUBLISH_JS, {"token": camera.token, "timeoutMs": CONNECT_MS})
    assert str(location).startswith("/api/v1/whip/"), location
    page.wait_for_function(
        "() => window.publisher.pc.connectionState === 'connected'", timeout=CONNECT_MS
    )
    assert page.evaluate(SELECTED_PAIR_JS) == [namespace.namespace_address, namespace.host_address]
    return page


def _frames(page: Page) -> int:
    return int(page.locator("#hero-player").get_attribute("data-frames") or "0")


def _assert_frames_keep_coming(page: Page) -> None:
    before = _frames(page)
    page.wait_for_timeout(FRAMES_WINDOW_MS)
    decoded = _frames(page) - before
    print(f"hero: {decoded} frames decoded in {FRAMES_WINDOW_MS} ms")
    assert decoded >= FRAMES_AT_LEAST, f"only {decoded} frames decoded in {FRAMES_WINDOW_MS} ms"


def _on_air_devices(server: RunningServer, session_id: str) -> list[str]:
    """The cameras the relay has put on air in this session, oldest first, from the ledger:
    it records `hero.on_air` when the first frame of a new hero leaves the output."""
    script = (
        "import json; from ledger.models import ProductionEvent as E; print(json.dumps([e.payload"
        f"['to'] for e in E.objects.filter(stream='{session_id}', type='hero.on_air')"
        ".order_by('seq')]))"
    )
    # The shell may print a banner line first; the JSON is the last line.
    return json.loads(server.manage("shell", "-c", script).stdout.strip().splitlines()[-1])


def _wait_on_air(server: RunningServer, session_id: str, camera: Camera) -> None:
    deadline = time.monotonic() + ON_AIR_S
    while (on_air := _on_air_devices(server, session_id))[-1:] != [camera.device_id]:
        assert time.monotonic() < deadline, f"{camera.name} not on air after {ON_AIR_S} s: {on_air}"
        time.sleep(0.5)


@dataclass
class Journey:
    operator: Page
    session_id: str
    first: Camera
    second: Camera
    publishers: list[Page]


def _live_director(
    browser: Browser, server: RunningServer, cameras: Cameras, namespace: VethNamespace
) -> Journey:
    """Two publishing cameras in a live session, and the operator on its Live Director."""
    first, second = cameras.register("Cam A"), cameras.register("Cam B")
    cameras.start()
    operator, session_path = _start_session(browser, server, "Hero journey")
    publishers = [_publish(browser, server, camera, namespace) for camera in (first, second)]
    operator.goto(server.url + session_path)
    expect(operator.locator("#live-status")).to_have_attribute("data-state", "live")
    session_id = operator.locator("[data-testid=session-page]").get_attribute("data-session-id")
    assert session_id
    # The session's first camera by name is its hero.
    expect(operator.locator("#hero-meta")).to_have_attribute("data-hero-name", first.name)
    return Journey(operator, session_id, first, second, publishers)


def test_the_operator_sees_the_hero_play_and_switch_cameras_without_reconnecting(
    namespaced_browser: Browser,
    hero_server: RunningServer,
    cameras: Cameras,
    namespace: VethNamespace,
) -> None:
    journey = _live_director(namespaced_browser, hero_server, cameras, namespace)
    page, second = journey.operator, journey.second
    player = page.locator("#hero-player")

    expect(player).to_have_attribute("data-state", "playing", timeout=CONNECT_MS)
    _assert_frames_keep_coming(page)

    page.locator(f"{second.card} [data-testid=make-hero]").click()

    expect(page.locator("#hero-meta")).to_have_attribute(
        "data-hero-name", second.name, timeout=10_000
    )
    # The relay itself switched: the second camera's frames left the output.
    _wait_on_air(hero_server, journey.session_id, second)
    _assert_frames_keep_coming(page)
    expect(player).to_have_attribute("data-state", "playing")
    expect(player).to_have_attribute("data-connects", "1")


def test_a_camera_that_ends_its_publish_stops_showing_publishing_on_its_card(
    namespaced_browser: Browser,
    hero_server: RunningServer,
    cameras: Cameras,
    namespace: VethNamespace,
) -> None:
    journey = _live_director(namespaced_browser, hero_server, cameras, namespace)
    page, first, second = journey.operator, journey.first, journey.second
    for camera in (first, second):
        expect(page.locator(f"{camera.card} [data-testid=publishing]")).to_be_visible(
            timeout=10_000
        )

    status = journey.publishers[1].evaluate(UNPUBLISH_JS, {"timeoutMs": CONNECT_MS})

    assert status == 200
    expect(page.locator(f"{second.card} [data-testid=publishing]")).to_have_count(0, timeout=10_000)
    expect(page.locator(f"{first.card} [data-testid=publishing]")).to_be_visible()
