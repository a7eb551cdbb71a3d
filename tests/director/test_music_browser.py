"""The music journey in headless Debian Chromium against a real server: upload a track on the
Live Director, wait for its beat grid, play, pause and seek, and find each cue in the ledger
in order with the positions the player had."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Browser, expect

from devices.simulator_operator import click_track
from tests.support.browser import log_in
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    # The analysis child reuses this checkout's compiled librosa (numba) cache rather than
    # compiling it afresh in the server's empty var/: seconds, not half a minute.
    cache = Path(settings.VAR_DIR) / "numba-cache"
    with running_server(tmp_path, extra_env={"NUMBA_CACHE_DIR": str(cache)}) as running:
        yield running


def _cues(server: RunningServer, session_id: str) -> list[dict[str, Any]]:
    script = (
        "import json; from ledger.models import ProductionEvent as E; "
        f"print(json.dumps([e.payload for e in E.objects.filter(stream='{session_id}', "
        "type='music.cue').order_by('seq')]))"
    )
    return json.loads(server.manage("shell", "-c", script).stdout.strip().splitlines()[-1])


def test_the_operator_plays_pauses_and_seeks_and_each_cue_is_recorded_in_order(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page()
    log_in(page, server)
    page.goto(server.url + "/")
    page.fill("#id_name", "Music journey")
    page.click("form.new-session button[type=submit]")
    page.locator("tr", has_text="Music journey").locator("[data-testid=session-open]").click()
    expect(page.locator("[data-testid=music-empty]")).to_be_visible()
    session_id = page.locator("[data-testid=session-page]").get_attribute("data-session-id")
    assert session_id

    page.set_input_files(
        "[data-testid=music-file]",
        files=[{"name": "click.wav", "mimeType": "audio/wav", "buffer": click_track()}],
    )
    page.locator("[data-testid=music-upload] button[type=submit]").click()
    expect(page.locator("[data-testid=music-name]")).to_have_text("click.wav")
    # The grid is found in the background and pushed to the page.
    expect(page.locator("[data-testid=music-bpm]")).to_have_text("120.0 BPM", timeout=60_000)

    audio = "document.querySelector('[data-testid=music-audio]')"
    page.wait_for_function(f"{audio}.readyState >= 1")
    page.locator("[data-testid=music-toggle]").click()
    page.wait_for_function(f"{audio}.currentTime > 1.0", timeout=10_000)
    page.locator("[data-testid=music-toggle]").click()
    expect(page.locator("[data-testid=music-toggle]")).to_have_text("Play")
    paused_at = page.evaluate(f"{audio}.currentTime")
    page.locator("[data-testid=music-seek]").evaluate(
        "el => { el.value = '12'; el.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    expect(page.locator("[data-testid=music-state]")).to_contain_text(
        "Paused at 12.0", timeout=10_000
    )

    cues = _cues(server, session_id)
    assert [c["action"] for c in cues] == ["play", "pause", "seek"]
    assert cues[0]["position_s"] == pytest.approx(0.0, abs=0.05)
    assert cues[1]["position_s"] == pytest.approx(paused_at, abs=0.05)
    assert cues[1]["position_s"] > 1.0
    assert cues[2]["position_s"] == pytest.approx(12.0, abs=0.05)
    times = [c["server_time"] for c in cues]
    assert times == sorted(times)
    # The cues' server times are as far apart as the playing was (within request latency).
    assert times[1] - times[0] == pytest.approx(cues[1]["position_s"], abs=0.5)
    page.close()
