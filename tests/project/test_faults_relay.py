"""The hero relay restarted mid-session: the publishers publish again and the viewer reconnects.

The scaled profile (`manage.py run_scaled` on a fresh PostgreSQL database and Redis, so this
runs in the scaled CI pass only), where the relay is a process of its own under the
supervisor. Two virtual iPhones (`manage.py simulate_devices`: the real simulator, with its
WHIP publisher and its republish) publish in a live session, and the operator watches the hero
on the session page in Debian Chromium: static/director/hero.js's reconnect is under test, so
an aiortc viewer would not do. The relay is killed with SIGKILL, as a crash kills it: no peer
is closed, nothing is recorded, nobody is told. The supervisor starts it again on its port; then

- the new relay ends the publishes the database still shows but it does not hold (recorded
  `relay_restarted`) and asks those phones to publish again (`start_publish`); each drops its
  connection, which still looks healthy from the phone (ICE consent would take about 30 s to
  expire, RFC 7675), and publishes anew within seconds of the relay being back; the cards show
  what the new relay measures;
- the page says the hero feed is unavailable and retrying, reconnects, and plays the hero
  again: frame codes read from the page's own video element, drawn by the hero phone after the
  kill;
- nothing else noticed: no 5xx outside the relay's own paths (the proxy answers 502 there
  while the relay is down), no server error logged, the session still live with the same
  hero, and its ledger stream without a gap.

Chromium offers no loopback ICE candidates, so it runs in a network namespace of the test's
own (tests/support/netns.py); the proxy listens on the host end of the veth pair, and the relay
offers that address alone as its candidate (MOTIONMIX_ICE_HOST_ADDRESSES). The phones, in the
root namespace, reach the relay on that address too.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import psycopg
import pytest
from PIL import Image
from playwright.async_api import Browser, ConsoleMessage, Page, Response, async_playwright, expect

from devices.video_code import FrameCode, age_ms, read, stamp_now
from director.scaled.proxy import is_relay_path
from tests.support.browser import CHROMIUM_ARGS
from tests.support.netns import VethNamespace, namespace_wrapper, netns_unavailable, veth_namespace
from tests.support.requirements import missing, require_chromium
from tests.support.scaled import ScaledProfile, running_profile, scaled_services, stop_process
from tests.support.server import ROOT
from tests.support.waiting import until

pytestmark = [pytest.mark.browser, pytest.mark.scaled]

ONLINE_S = 60.0
PLAY_S = 30.0
RELAY_BACK_S = 30.0  # the supervisor's first pause is 1 s; the relay then starts Django
# From the new relay answering: its start-up check, the command's delivery over the phone's
# socket and the publish itself. Well under the 30 s ICE consent would take to expire.
REPUBLISH_S = 20.0
REPLAY_S = 30.0
FRAMES_WINDOW_MS = 3_000
FRAMES_AT_LEAST = 10  # the phones send 10 fps: 30 in 3 s, a third of that on a slow machine
VIDEO_SIZE = "320x240"  # the smallest a frame code fits in; light on two cores
HERO_NAME = "Cam 1"  # the session's first camera by name is its hero
HERO_SOURCE = 1  # its frame code's source: the simulator's phone index
# A 502 from the proxy for the relay's paths after the relay answered again can only be a
# request that left before; the page sends none later than this.
STRAGGLER_S = 5.0
SERVER_ERROR = re.compile(r"Internal Server Error|Traceback \(most recent call last\)")
SIMULATOR_5XX = re.compile(r"answered 5\d\d")

# The frame on screen, as the page decodes it: the video's own pixels at its own size (CSS
# flips do not apply to drawImage), as a PNG.
VIDEO_FRAME_JS = """
() => {
  const video = document.querySelector("#hero-player video");
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return canvas.toDataURL("image/png");
}
"""

# Every change of the player's state, connection count and slate text, from now on.
WATCH_PLAYER_JS = """
() => {
  const el = document.getElementById("hero-player");
  const text = el.querySelector("[data-hero-slate-text]");
  const now = () => [el.dataset.state || "", el.dataset.connects || "0", text.textContent];
  window.heroLog = [now()];
  const note = () => {
    const entry = now();
    const last = window.heroLog[window.heroLog.length - 1];
    if (entry.some((value, i) => value !== last[i])) window.heroLog.push(entry);
  };
  new MutationObserver(note).observe(el, { attributes: true, subtree: true, childList: true,
    characterData: true });
}
"""

PLAYING_AGAIN_JS = """
() => {
  const el = document.getElementById("hero-player");
  return el.dataset.state === "playing" && Number(el.dataset.connects || 0) >= 2;
}
"""


# --- The scaled profile, its proxy on the veth pair ---------------------------------------------


@pytest.fixture
def namespace() -> Iterator[VethNamespace]:
    scaled_services()  # first: the embedded pass skips before making anything
    require_chromium()
    reason = netns_unavailable()
    if reason is not None:
        missing(f"the relay fault runs Chromium in a network namespace: {reason}")
    with veth_namespace() as made:
        yield made


@pytest.fixture
def profile(tmp_path: Path, namespace: VethNamespace) -> Iterator[ScaledProfile]:
    # The proxy on the host end of the veth pair, and that address the relay's only ICE
    # candidate, which Chromium in the namespace and the phones outside it both reach.
    with running_profile(tmp_path / "scaled", host=namespace.host_address) as made:
        yield made


@pytest.fixture
def phones(profile: ScaledProfile) -> Iterator[subprocess.Popen[bytes]]:
    """Two virtual iPhones against the proxy, as the profile's own `--simulate` starts them,
    without pose (not under test here) and with light video."""
    argv = [sys.executable, str(ROOT / "manage.py"), "simulate_devices", "--count", "2"]
    argv += ["--url", profile.url, "--install-prefix", "relay-fault", "--duration", "300"]
    argv += ["--video-size", VIDEO_SIZE, "--video-fps", "10", "--pose-fps", "0"]
    with (profile.workdir / "simulator.log").open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=profile.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        # SIGTERM: the phones unpublish before the profile goes.
        stop_process(proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


# --- What the profile's database holds --------------------------------------------------------


@dataclass
class Ledger:
    """The profile's database, read directly: polling it through `manage.py shell` would
    start Django twice a second on a machine the relay and the phones already keep busy."""

    conn: psycopg.Connection[Any]

    def events(self, session_id: str) -> list[tuple[int, str, str | None, dict[str, Any]]]:
        """(seq, type, device id, payload) of the session's stream, in order."""
        rows = self.conn.execute(
            "SELECT seq, type, device_id::text, payload FROM ledger_productionevent "
            "WHERE stream = %s ORDER BY seq",
            [session_id],
        ).fetchall()
        return [(int(seq), kind, device, dict(payload)) for seq, kind, device, payload in rows]

    def publishes(self, session_id: str) -> dict[str, list[dict[str, Any]]]:
        """Each device's `device.publish_started` payloads in the session, oldest first."""
        found: dict[str, list[dict[str, Any]]] = {}
        for _, kind, device, payload in self.events(session_id):
            if kind == "device.publish_started" and device is not None:
                found.setdefault(device, []).append(payload)
        return found

    def session(self, session_id: str) -> tuple[str, str | None]:
        row = self.conn.execute(
            "SELECT status, hero_id::text FROM director_photoshootsession WHERE id = %s",
            [session_id],
        ).fetchone()
        assert row is not None, f"no session {session_id}"
        return str(row[0]), row[1]

    def device_ids(self, session_id: str) -> dict[str, str]:
        """Name → id of the session's cameras."""
        rows = self.conn.execute(
            "SELECT d.name, d.id::text FROM devices_device d "
            "JOIN director_photoshootsession_devices sd ON sd.device_id = d.id "
            "WHERE sd.photoshootsession_id = %s",
            [session_id],
        ).fetchall()
        return {str(name): str(device) for name, device in rows}


# --- The operator's page -------------------------------------------------------------------------


@dataclass
class Seen:
    """What the operator's page received: every answer, when it came (monotonic)."""

    responses: list[tuple[float, int, str, str]] = field(default_factory=list)

    def note(self, response: Response) -> None:
        path = httpx.URL(response.url).raw_path.decode()
        self.responses.append((time.monotonic(), response.status, response.request.method, path))

    def server_errors(self) -> list[tuple[float, int, str, str]]:
        return [r for r in self.responses if r[1] >= 500]


@contextlib.asynccontextmanager
async def namespaced_chromium(namespace: VethNamespace, directory: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium inside the namespace, driven over the pipe it inherits (see
    tests/director/test_hero_browser.py)."""
    wrapper = namespace_wrapper(namespace.name, require_chromium(), directory)
    # Host candidates as real addresses, not mDNS names nobody here could resolve.
    args = [*CHROMIUM_ARGS, "--disable-features=WebRtcHideLocalIpsWithMdns"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(wrapper), headless=True, args=args)
        try:
            yield browser
        finally:
            await browser.close()


def _echo_console(page: Page) -> None:
    # Shown with the test's output when it fails.
    def echo(message: ConsoleMessage) -> None:
        print(f"[operator console {message.type}] {message.text}")

    page.on("console", echo)
    page.on("pageerror", lambda error: print(f"[operator page error] {error}"))


async def _log_in(page: Page, profile: ScaledProfile) -> None:
    username, password = profile.login()
    await page.goto(profile.url + "/registry/")
    await expect(page).to_have_url(f"{profile.url}/accounts/login/?next=/registry/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(profile.url + "/registry/")
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


async def _start_session(page: Page, profile: ScaledProfile, name: str) -> str:
    """A new session taken live from the sessions page; every online camera joins it."""
    await page.goto(profile.url + "/")
    await page.fill("#id_name", name)
    await page.click("form.new-session button[type=submit]")
    row = page.locator("tr", has_text=name)
    await row.get_by_role("button", name="Start").click()
    await expect(row.locator("[data-testid=session-status]")).to_have_text("Live", timeout=10_000)
    href = await row.locator("[data-testid=session-direct]").get_attribute("href")
    assert href, "a live session's row links to its Live Director"
    await page.goto(profile.url + href)
    session_id = await page.locator("[data-testid=session-page]").get_attribute("data-session-id")
    assert session_id
    return session_id


async def _frame_code(page: Page) -> FrameCode | None:
    """The code of the frame the page's hero video shows now."""
    data_url = await page.evaluate(VIDEO_FRAME_JS)
    if not data_url:
        return None
    png = base64.b64decode(str(data_url).partition(",")[2])
    with Image.open(io.BytesIO(png)) as image:
        return read(av.VideoFrame.from_image(image.convert("RGB")))


async def _hero_frame_after(page: Page, stamp: int, *, within: float) -> FrameCode:
    """A frame on the page from the hero phone, made after `stamp` (the machine's monotonic
    clock, as the simulator stamps its frames)."""
    deadline = time.monotonic() + within
    last: FrameCode | None = None
    while time.monotonic() < deadline:
        last = await _frame_code(page)
        if last is not None and last.source == HERO_SOURCE and age_ms(last.stamp_ms, stamp) < 0:
            return last
        await page.wait_for_timeout(200)
    raise AssertionError(f"after {within:g} s the page shows {last}, no hero frame made later")


async def _frames(page: Page) -> int:
    return int(await page.locator("#hero-player").get_attribute("data-frames") or "0")


async def _frames_keep_coming(page: Page) -> int:
    before = await _frames(page)
    await page.wait_for_timeout(FRAMES_WINDOW_MS)
    decoded = await _frames(page) - before
    assert decoded >= FRAMES_AT_LEAST, f"only {decoded} frames decoded in {FRAMES_WINDOW_MS} ms"
    return decoded


def _publishing_pill(device_id: str) -> str:
    return f"#device-{device_id}-card [data-testid=publishing]"


def _relay_back(profile: ScaledProfile, killed_pid: int) -> bool:
    """The supervisor started another relay process, and it serves."""
    status = profile.status()
    if status["children"].get("relay") in (None, killed_pid):
        return False
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{status['relay']}/_ping", timeout=1.0).status_code == 200
    return False


def _republished(ledger: Ledger, session_id: str, before: dict[str, str]) -> bool:
    """Every camera has published anew since the kill (its old publish was ended first)."""
    now = ledger.publishes(session_id)

    def published_after(device: str, old: str) -> bool:
        ids = [p["publish_id"] for p in now.get(device, [])]
        return old in ids and ids.index(old) < len(ids) - 1

    return all(published_after(device, old) for device, old in before.items())


def _assert_nothing_lost(
    ledger: Ledger, session_id: str, hero_id: str | None, before: dict[str, str], seq_at_kill: int
) -> None:
    """The session is live with the same hero, its stream has no gap, nothing switched or
    ended it since the kill, and each publish the crash left was closed once, as lost with the
    relay, before the phone's new one began (never two publishes of a camera at once)."""
    assert ledger.session(session_id) == ("live", hero_id)
    events = ledger.events(session_id)
    assert [seq for seq, _, _, _ in events] == list(range(1, len(events) + 1))
    since = [(kind, who, payload) for seq, kind, who, payload in events if seq > seq_at_kill]
    kinds = [kind for kind, _, _ in since]
    assert "hero.switched" not in kinds and "session.ended" not in kinds, since
    for device, old in before.items():
        stops = [p for kind, who, p in since if kind == "device.publish_stopped" and who == device]
        starts = [p for kind, who, p in since if kind == "device.publish_started" and who == device]
        assert [(s["publish_id"], s["reason"]) for s in stops] == [(old, "relay_restarted")], since
        assert [s["replaced"] for s in starts] == [None], since


# --- The journey ---------------------------------------------------------------------------------


async def test_a_relay_restarted_mid_session_is_republished_and_watched_again(
    profile: ScaledProfile,
    phones: subprocess.Popen[bytes],
    namespace: VethNamespace,
    tmp_path: Path,
) -> None:
    seen = Seen()
    with psycopg.connect(profile.database_url, autocommit=True) as conn:
        ledger = Ledger(conn)
        async with namespaced_chromium(namespace, tmp_path) as browser:
            page = await browser.new_page()
            _echo_console(page)
            page.on("response", seen.note)
            await _log_in(page, profile)
            await expect(page.locator(".device-card[data-status=online]")).to_have_count(
                2, timeout=ONLINE_S * 1000
            )
            session_id = await _start_session(page, profile, "Relay crash")
            cameras = ledger.device_ids(session_id)
            assert sorted(cameras) == ["Cam 1", "Cam 2"], cameras
            status, hero_id = ledger.session(session_id)
            assert (status, hero_id) == ("live", cameras[HERO_NAME])

            # Both phones publish, and the page plays the hero's own frames.
            await until(
                lambda: set(ledger.publishes(session_id)) == set(cameras.values()),
                within=PLAY_S,
                what="both phones publish",
            )
            player = page.locator("#hero-player")
            await expect(player).to_have_attribute("data-state", "playing", timeout=PLAY_S * 1000)
            await _hero_frame_after(page, stamp_now() - 60_000, within=PLAY_S)
            await expect(player).to_have_attribute("data-connects", "1")
            before = {
                device: p[-1]["publish_id"] for device, p in ledger.publishes(session_id).items()
            }
            seq_at_kill = len(ledger.events(session_id))
            # Each card's publish, as it says when it began ("… since 14:02:11").
            published = {
                device: await page.locator(_publishing_pill(device)).get_attribute("title")
                for device in cameras.values()
            }
            children = profile.status()["children"]
            await page.evaluate(WATCH_PLAYER_JS)

            # The crash.
            relay_pid = int(children["relay"])
            killed_stamp = stamp_now()
            os.kill(relay_pid, signal.SIGKILL)
            killed_at = time.monotonic()

            await until(
                lambda: _relay_back(profile, relay_pid), within=RELAY_BACK_S, what="a new relay"
            )
            relay_back_at = time.monotonic()
            await until(
                lambda: _republished(ledger, session_id, before),
                within=REPUBLISH_S,
                what="each phone asked by the new relay publishes again at once",
            )
            republished_at = time.monotonic()
            await page.wait_for_function(PLAYING_AGAIN_JS, timeout=REPLAY_S * 1000)
            code = await _hero_frame_after(page, killed_stamp, within=REPLAY_S)
            decoded = await _frames_keep_coming(page)
            replayed_at = time.monotonic()
            print(
                f"relay back after {relay_back_at - killed_at:.1f} s, phones republished after "
                f"{republished_at - killed_at:.1f} s, the page played {code} after "
                f"{replayed_at - killed_at:.1f} s ({decoded} frames in {FRAMES_WINDOW_MS} ms)"
            )

            # The page said so in between: unavailable and retrying, then a new connection.
            log: list[list[str]] = await page.evaluate("() => window.heroLog")
            print("the player after the kill:", log)
            states = [state for state, _, _ in log]
            assert any(s == "error" and "Retrying in" in t for s, _, t in log), log
            assert "connecting" in states[states.index("error") :], log
            assert log[-1][0] == "playing" and int(log[-1][1]) >= 2, log
            # Each card shows the new publish, as the new relay measures it.
            for device, since in published.items():
                await expect(page.locator(_publishing_pill(device))).not_to_have_attribute(
                    "title", since or "", timeout=10_000
                )
                video = page.locator(f"#device-{device}-card [data-testid=video]")
                await expect(video).to_contain_text(VIDEO_SIZE.replace("x", "×"), timeout=10_000)
            await expect(page.locator("#hero-meta")).to_have_attribute("data-hero-name", HERO_NAME)
            await page.close()

        _assert_nothing_lost(ledger, session_id, hero_id, before, seq_at_kill)

    # Only the relay was restarted, once; the rest kept running.
    after = profile.status()["children"]
    assert after["relay"] != relay_pid
    assert {k: v for k, v in after.items() if k != "relay"} == {
        k: v for k, v in children.items() if k != "relay"
    }
    assert (profile.workdir / "supervisor.log").read_text().count(" exited (") == 1
    # No 5xx but the proxy's for the relay's own paths while it was down.
    errors = seen.server_errors()
    assert all(is_relay_path(path) for _, _, _, path in errors), errors
    assert all(at < relay_back_at + STRAGGLER_S for at, _, _, _ in errors), errors
    simulator_log = (profile.workdir / "simulator.log").read_text(errors="replace")
    assert not SIMULATOR_5XX.findall(simulator_log), simulator_log[-3000:]
    for path in profile.log_files():
        assert not SERVER_ERROR.search(path.read_text(errors="replace")), profile.logs()
    assert phones.poll() is None, "the simulator kept running"
