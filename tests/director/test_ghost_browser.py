"""The Ghost supervision journey in headless Debian Chromium against a real server, with
simulated iPhones and the shipped policies running on the server's own schedule: start a
session, accept a proposal with `A`, veto the next with `V` and a reason, find both in the
history and every step in the ledger, then switch to autopilot."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import log_in, simulate
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.browser

# The hero goes stale after 4 s, so proposals come quickly; the other policies stay quiet
# (no cadence or coverage proposals) so that the journey sees hero switches.
POLICY_ENV = {
    "MOTIONMIX_GHOST_POLICY_INTERVAL_S": "1",
    "MOTIONMIX_GHOST_HERO_STALE_S": "4",
    "MOTIONMIX_GHOST_CADENCE_S": "100000",
    "MOTIONMIX_GHOST_GAP_DEG": "361",
    "MOTIONMIX_GHOST_COOLDOWN_S": "1",
    "MOTIONMIX_GHOST_TTL_S": "30",
}


@pytest.fixture
def ghost_server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path, extra_env=POLICY_ENV) as server:
        yield server


def _pending(page: Page, not_id: str | None = None) -> str:
    banner = page.locator("#ghost-banner[data-proposal-id]")
    expect(banner).to_be_visible(timeout=25_000)
    if not_id is not None:
        expect(banner).not_to_have_attribute("data-proposal-id", not_id, timeout=25_000)
    proposal_id = banner.get_attribute("data-proposal-id")
    assert proposal_id
    return proposal_id


def _ledger(server: RunningServer, session_id: str) -> list[dict[str, object]]:
    script = (
        "import json; from ledger.models import ProductionEvent as E; "
        f"print(json.dumps([{{'type': e.type, 'payload': e.payload}} for e in "
        f"E.objects.filter(stream='{session_id}').order_by('seq')]))"
    )
    # The shell may print a banner line first; the JSON is the last line.
    return json.loads(server.manage("shell", "-c", script).stdout.strip().splitlines()[-1])


def test_the_operator_accepts_with_a_and_vetoes_with_v_and_a_reason(
    browser: Browser, ghost_server: RunningServer
) -> None:
    server = ghost_server
    simulate(server, 3, "ghost")
    page = browser.new_page()
    log_in(page, server)
    expect(page.locator("[data-testid=online-count]")).to_have_text("3", timeout=20_000)

    # 1. Start a session and open its Live Director.
    page.goto(server.url + "/")
    page.fill("#id_name", "Ghost journey")
    page.click("form.new-session button[type=submit]")
    row = page.locator("tr", has_text="Ghost journey")
    row.get_by_role("button", name="Start").click()
    expect(row.locator("[data-testid=session-status]")).to_have_text("Live")
    row.locator("[data-testid=session-direct]").click()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    session_id = page.locator("[data-testid=session-page]").get_attribute("data-session-id")
    assert session_id
    expect(page.locator("[data-testid=ghost-mode]")).to_have_text("Supervised")
    first_hero = page.locator("[data-testid=hero-name]").text_content()

    # 2. A proposal appears with its countdown and its target highlighted.
    first = _pending(page)
    banner = page.locator("#ghost-banner")
    expect(banner).to_have_attribute("data-kind", "switch_hero")
    expect(banner.locator("[data-testid=ghost-countdown]")).to_have_text(
        re.compile(r"expires in \d+ s")
    )
    target = (banner.locator("[data-testid=ghost-target]").text_content() or "").strip()
    assert target != first_hero
    target_card = page.locator(".device-card", has_text=target)
    expect(target_card).to_have_class(re.compile(r"\bghost-target\b"))

    # 3. `A` accepts: the hero switches and the card says so.
    page.keyboard.press("a")
    expect(page.locator("[data-testid=hero-name]")).to_have_text(target, timeout=10_000)
    expect(target_card.locator("[data-testid=on-air]")).to_be_visible(timeout=10_000)
    expect(target_card.locator("[data-testid=tally]")).to_have_text("Live", timeout=10_000)

    # 4. The next proposal: `V`, then pick a reason.
    second = _pending(page, not_id=first)
    page.keyboard.press("v")
    expect(page.locator("[data-ghost-reasons]")).to_be_visible()
    page.keyboard.press("2")  # wrong moment
    expect(page.locator("#ghost-banner")).not_to_have_attribute(
        "data-proposal-id", second, timeout=10_000
    )
    expect(page.locator("[data-testid=hero-name]")).to_have_text(target)

    # 5. The history shows both fates; the metrics count them.
    history = page.locator("[data-testid=ghost-history]")
    expect(history.locator(f'li[data-proposal-id="{first}"]')).to_have_attribute(
        "data-state", "executed"
    )
    expect(history.locator(f'li[data-proposal-id="{second}"]')).to_have_attribute(
        "data-state", "vetoed"
    )
    expect(history.locator(f'li[data-proposal-id="{second}"]')).to_contain_text("wrong moment")
    expect(page.locator("[data-testid=metric-accept-rate]")).to_have_text("50 %")

    # ...and the ledger has every step.
    events = _ledger(server, session_id)
    by_type: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_type.setdefault(str(event["type"]), []).append(event["payload"])  # type: ignore[arg-type]
    proposed = {p["proposal_id"] for p in by_type["ghost.proposed"]}
    assert {first, second} <= proposed
    assert [p["proposal_id"] for p in by_type["ghost.accepted"]] == [first]
    assert by_type["ghost.accepted"][0]["by"] == server.username
    assert [p["proposal_id"] for p in by_type["ghost.executed"]] == [first]
    vetoed = by_type["ghost.vetoed"]
    assert [(p["proposal_id"], p["reason"]) for p in vetoed] == [(second, "wrong_moment")]
    assert str(by_type["hero.switched"][-1]["by"]).startswith("ghost:")

    # 6. Autopilot: the mode is on the page, and the countdown now ends in execution.
    page.locator("label.seg", has_text="Autopilot").click()
    expect(page.locator("[data-testid=ghost-mode]")).to_have_text("Autopilot")
    _pending(page, not_id=second)
    expect(page.locator("#ghost-banner [data-testid=ghost-countdown]")).to_have_text(
        re.compile(r"auto in \d+ s")
    )
    page.close()
