"""The simulated stand-in operator: its schedule, its robustness, and Ghost decided end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from devices.simulator_operator import (
    DEFAULT_SCHEDULE,
    Credentials,
    ScheduleError,
    SessionRow,
    StandIn,
    Step,
    count_online_cameras,
    load_credentials,
    parse_banner,
    parse_delay,
    parse_schedule,
    parse_session_list,
)
from tests.support.server import ROOT, RunningServer, running_server

SESSION = "5e551011-0000-4000-8000-000000000001"
P1 = "9a000000-0000-4000-8000-000000000001"
P2 = "9a000000-0000-4000-8000-000000000002"


# --- The schedule ---------------------------------------------------------------------------


def test_the_default_schedule_accepts_vetoes_and_lets_one_run_out() -> None:
    assert parse_schedule(DEFAULT_SCHEDULE) == (
        Step("accept"),
        Step("accept"),
        Step("veto", "wrong_moment"),
        Step("accept"),
        Step("veto", "bad_framing"),
        Step("wait"),
    )
    assert parse_schedule(" Accept , VETO:other ") == (Step("accept"), Step("veto", "other"))
    assert str(Step("veto", "device_problem")) == "veto:device_problem"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "Step 1 of the schedule '' is empty"),
        ("accept,,wait", "Step 2 of the schedule 'accept,,wait' is empty"),
        ("accept,veto", "Step 2 ('veto'): a veto needs a reason, one of veto:bad_framing"),
        ("veto:meh", "Step 1 ('veto:meh'): a veto needs a reason"),
        ("accept,approve", "Step 2 ('approve') is not accept, veto:<reason> or wait."),
        ("accept:now", "Step 1 ('accept:now') is not accept, veto:<reason> or wait."),
        ("wait:5", "Step 1 ('wait:5') is not accept"),
    ],
)
def test_a_bad_schedule_is_refused_with_what_is_wrong(schedule: str, message: str) -> None:
    with pytest.raises(ScheduleError) as refused:
        parse_schedule(schedule)
    assert message in str(refused.value)


def test_a_bad_schedule_stops_the_command_before_any_phone_starts(tmp_path: Path) -> None:
    login = tmp_path / "login.json"
    login.write_text(json.dumps({"username": "stand-in", "password": "x"}))
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="a veto needs a reason"):
        call_command(
            "simulate_devices",
            "--stand-in",
            str(login),
            "--stand-in-schedule",
            "accept,veto",
            "--pairing-code",
            "ABC123",
        )


def test_delays_and_logins_are_checked() -> None:
    assert parse_delay("1.5-4") == (1.5, 4.0)
    assert parse_delay("2") == (2.0, 2.0)
    for bad in ("soon", "4-1", "-1", "1-x"):
        with pytest.raises(ValueError, match=r"delay|MIN-MAX"):
            parse_delay(bad)


def test_a_login_file_must_hold_a_username_and_password(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"username": "stand-in", "password": "pw"}))
    assert load_credentials(good).username == "stand-in"
    for name, text in [("list.json", "[]"), ("nouser.json", '{"password": "x"}'), ("j", "{")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=str(path)):
            load_credentials(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_credentials(tmp_path / "missing.json")


# --- Reading the operator's pages -----------------------------------------------------------


def test_the_parsers_read_the_pages_the_server_renders(operator_client: Client) -> None:
    from director import services

    user = get_user_model().objects.get(username="op")
    draft = services.session_create(name="Demo <shoot> & co", operator=user)
    page = operator_client.get("/").content.decode()
    assert parse_session_list(page) == [
        SessionRow(id=str(draft.pk), status="draft", name="Demo <shoot> & co")
    ]
    banner = operator_client.get(f"/sessions/{draft.pk}/ghost/banner").content.decode()
    assert parse_banner(banner) is None
    assert count_online_cameras(operator_client.get("/registry/").content.decode()) == 0


def test_the_banner_parser_reads_a_pending_proposal() -> None:
    fragment = _banner_html(P1, "Cam 2 &amp; friends sees the face.")
    proposal = parse_banner(fragment)
    assert proposal is not None
    assert (proposal.id, proposal.kind, proposal.targets) == (P1, "switch_hero", ("Cam 2",))
    assert proposal.rationale == "Cam 2 & friends sees the face."


@pytest.mark.django_db
def test_the_stand_in_login_is_a_plain_user_with_a_private_password_file(
    settings: Any, tmp_path: Path
) -> None:
    from director.demo import demo_stand_in_ensure, stand_in_login_file

    settings.VAR_DIR = tmp_path
    first = demo_stand_in_ensure()
    again = demo_stand_in_ensure()

    assert first == again and first.username == "stand-in"
    path = stand_in_login_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(path).password == first.password
    user = get_user_model().objects.get(username="stand-in")
    assert not user.is_staff and not user.is_superuser
    assert user.check_password(first.password)


# --- Against a fake server: robustness ------------------------------------------------------


def _banner_html(proposal_id: str | None, rationale: str = "Cam 2 sees the face.") -> str:
    if proposal_id is None:
        return (
            '<section id="ghost-banner" class="ghost-banner" data-testid="ghost-banner"></section>'
        )
    return (
        f'<section id="ghost-banner" class="ghost-banner has-proposal" aria-label="Ghost"\n'
        f'  data-testid="ghost-banner" data-proposal-id="{proposal_id}" data-kind="switch_hero" '
        f'data-targets="x">\n<p class="ghost-kicker">Ghost proposes · Switch hero · '
        f'<strong data-testid="ghost-target">Cam 2</strong></p>\n'
        f'<p class="ghost-rationale" data-testid="ghost-rationale">{rationale}</p></section>'
    )


def _row(session_id: str, status: str, name: str) -> str:
    return (
        f'<tr id="session-{session_id}-row" data-status="{status}">\n  <td><a href="/sessions/'
        f'{session_id}/" data-testid="session-open">{name}</a></td></tr>'
    )


@dataclass
class FakeDirector:
    """Just enough of the operator's pages for the stand-in, with failures on demand."""

    pending: list[str] = field(default_factory=list)
    sessions: list[tuple[str, str, str]] = field(default_factory=list)
    online: int = 2
    unreachable: int = 0  # the next N requests fail to connect
    late: set[str] = field(default_factory=set)  # proposals someone else decided first
    login_cookie: str = "first"  # change it and every login so far is void
    logins: int = 0
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    csrf_seen: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            self.unreachable -= 1
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/accounts/login/":
            if request.method == "GET":
                return httpx.Response(200, headers={"Set-Cookie": "csrftoken=before; Path=/"})
            self.logins += 1
            return httpx.Response(
                302,
                headers=[
                    ("Location", "/"),
                    ("Set-Cookie", "csrftoken=after; Path=/"),
                    ("Set-Cookie", f"sessionid={self.login_cookie}; Path=/"),
                ],
            )
        if f"sessionid={self.login_cookie}" not in request.headers.get("Cookie", ""):
            return httpx.Response(302, headers={"Location": f"/accounts/login/?next={path}"})
        if request.method == "GET":
            return self._get(path)
        self.csrf_seen.append(request.headers.get("X-CSRFToken", ""))
        form = dict(httpx.QueryParams(request.content.decode()))
        self.posts.append((path, form))
        return self._post(path, form)

    def _get(self, path: str) -> httpx.Response:
        if path == "/":
            return httpx.Response(200, text="".join(_row(*s) for s in self.sessions))
        if path == "/registry/":
            cards = '<article class="card" data-kind="iphone" data-status="online">' * self.online
            return httpx.Response(200, text=cards)
        if path.endswith("/ghost/banner"):
            return httpx.Response(200, text=_banner_html(self.pending[0] if self.pending else None))
        return httpx.Response(404)

    def _post(self, path: str, form: dict[str, str]) -> httpx.Response:
        if path == "/sessions/new":
            new_id = f"5e551011-0000-4000-8000-{len(self.sessions) + 1:012d}"
            self.sessions.insert(0, (new_id, "draft", form["name"]))
            return httpx.Response(302, headers={"Location": "/"})
        if path.endswith("/start"):
            self.sessions = [(i, "live" if i in path else s, n) for i, s, n in self.sessions]
            return httpx.Response(200)
        if path.endswith("/ghost/mode"):
            return httpx.Response(200)
        proposal_id = path.split("/")[-2]
        if proposal_id in self.pending:
            self.pending.remove(proposal_id)
        if proposal_id in self.late:
            toast = {"toast": {"level": "error", "message": "already accepted by operator"}}
            return httpx.Response(409, headers={"HX-Trigger": json.dumps(toast)})
        return httpx.Response(200)


async def _until(
    check: Callable[[], bool], *, within: float, running: asyncio.Task[None], what: str
) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert not running.done(), "the stand-in stopped by itself"
        assert time.monotonic() < deadline, f"after {within} s still not: {what}"
        await asyncio.sleep(0.02)


def _stand_in(fake: FakeDirector, **overrides: Any) -> StandIn:
    options: dict[str, Any] = {
        "url": "http://director.test",
        "credentials": Credentials(username="stand-in", password="pw"),
        "schedule": parse_schedule("accept"),
        "delay_s": (0.0, 0.01),
        "seed": 1,
        "poll_s": 0.01,
        "list_every_s": 0.05,
        "transport": httpx.MockTransport(fake.handle),
    }
    options.update(overrides)
    return StandIn(**options)


async def test_a_409_is_logged_and_the_stand_in_goes_on_to_the_next_proposal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDirector(pending=[P1, P2], sessions=[(SESSION, "live", "Shoot")], late={P1})
    fake.unreachable = 2  # the server is still starting: two refused connections first
    stand_in = _stand_in(fake)
    caplog.set_level("INFO", logger="motionmix.simulator.stand_in")

    running = asyncio.create_task(stand_in.run(duration_s=15))
    await _until(lambda: stand_in.accepted == 1, within=10, running=running, what="accepted")
    stand_in.stop()
    await asyncio.wait_for(running, timeout=5)

    assert [(d.proposal_id, d.outcome) for d in stand_in.decisions] == [
        (P1, "late"),
        (P2, "accepted"),
    ]
    assert stand_in.late == 1 and stand_in.errors == 2
    assert "would accept switch_hero Cam 2, too late: already accepted by operator" in caplog.text
    # Django rotates the CSRF token at login: the stand-in sends the new one.
    assert set(fake.csrf_seen) == {"after"}


async def test_a_lost_login_is_renewed_and_each_proposal_is_decided_once() -> None:
    fake = FakeDirector(pending=[P1], sessions=[(SESSION, "live", "Shoot")])
    stand_in = _stand_in(fake, schedule=parse_schedule("veto:bad_framing,wait,accept"))

    running = asyncio.create_task(stand_in.run(duration_s=15))
    await _until(lambda: stand_in.vetoed == 1, within=5, running=running, what="vetoed")
    await asyncio.sleep(0.1)  # P1 is gone from the banner; nothing else happens
    fake.login_cookie = "second"  # as after a server restart on a new database
    fake.pending = [P2]
    await _until(lambda: stand_in.waited == 1, within=5, running=running, what="waited")
    await asyncio.sleep(0.1)  # P2 stays on the banner, and is not decided again
    stand_in.stop()
    await asyncio.wait_for(running, timeout=5)

    assert fake.logins == 2
    assert fake.posts == [(f"/sessions/{SESSION}/ghost/{P1}/veto", {"reason": "bad_framing"})]
    assert [(d.proposal_id, d.outcome) for d in stand_in.decisions] == [
        (P1, "vetoed"),
        (P2, "waited"),
    ]


async def test_it_starts_one_demo_session_and_another_only_after_the_restart_delay() -> None:
    fake = FakeDirector(online=1)
    stand_in = _stand_in(
        fake, start_session=True, expected_cameras=2, settle_s=0.3, restart_after_s=1.5
    )

    began = time.monotonic()
    running = asyncio.create_task(stand_in.run(duration_s=15))
    await _until(lambda: stand_in.sessions_started == 1, within=5, running=running, what="start")
    # One camera of the two online: it gave the other the settle time to come.
    assert time.monotonic() - began >= 0.3
    [(first, status, name)] = fake.sessions
    assert (status, name) == ("live", "Demo shoot")
    assert fake.posts == [
        ("/sessions/new", {"name": "Demo shoot", "notes": "Started by the simulated stand-in."}),
        (f"/sessions/{first}/start", {}),
        (f"/sessions/{first}/ghost/mode", {"mode": "supervised"}),
    ]

    # The operator ends it: no new one at once, one after the restart delay.
    ended_at = time.monotonic()
    fake.sessions = [(first, "ended", "Demo shoot")]
    await asyncio.sleep(0.5)
    assert stand_in.sessions_started == 1 and len(fake.posts) == 3
    await _until(lambda: stand_in.sessions_started == 2, within=5, running=running, what="again")
    stand_in.stop()
    await asyncio.wait_for(running, timeout=5)

    assert time.monotonic() - ended_at >= 1.0
    assert [s[1:] for s in fake.sessions] == [("live", "Demo shoot"), ("ended", "Demo shoot")]


# --- Against a real server ------------------------------------------------------------------


def _shell(server: RunningServer, code: str) -> Any:
    """Run Python in the server's Django (its own database); the last line printed is JSON."""
    done = server.manage("shell", "-c", code)
    return json.loads(done.stdout.strip().splitlines()[-1])


PROPOSE = """
import json
from director import ghost
from director.models import PhotoshootSession
session = PhotoshootSession.objects.get(status="live")
cams = list(session.devices.order_by("name"))
other = next(d for d in cams if d.pk != session.hero_id)
def propose(target, rationale, ttl_s):
    return str(ghost.proposal_create(
        session_id=session.pk, kind="switch_hero", target_ids=[target.pk], payload={},
        rationale=rationale, confidence=0.8, policy="test", ttl_s=ttl_s,
    ).pk)
print(json.dumps([
    propose(other, "First: the other camera sees the face.", 12),
    propose(session.hero, "Second: back to the first camera.", 12),
    propose(other, "Third: nobody decides this one.", 4),
]))
"""

STATES = """
import json
from director.models import GhostProposal, PhotoshootSession
from ledger.models import ProductionEvent
session = PhotoshootSession.objects.get(status="live")
print(json.dumps({
    "session": [session.name, session.operator.get_username(), session.devices.count()],
    "proposals": {
        str(p.pk): [p.state, p.decided_by, p.veto_reason]
        for p in GhostProposal.objects.filter(session=session)
    },
    "by": sorted(
        e.payload["by"] for e in ProductionEvent.objects.filter(
            type__in=["ghost.accepted", "ghost.vetoed"]
        )
    ),
}))
"""


def test_the_stand_in_starts_a_demo_shoot_and_decides_ghost_on_its_schedule(
    tmp_path: Path,
) -> None:
    # Ghost's own policies stay quiet, so the only proposals are the three this test makes.
    extra_env = {"MOTIONMIX_GHOST_POLICY_INTERVAL_S": "3600"}
    with running_server(tmp_path, extra_env=extra_env) as server:
        login = _shell(
            server,
            "import json; from director.demo import demo_stand_in_ensure, stand_in_login_file; "
            "demo_stand_in_ensure(); print(json.dumps(str(stand_in_login_file())))",
        )
        server.spawn(
            sys.executable,
            str(ROOT / "manage.py"),
            "simulate_devices",
            "--count",
            "2",
            "--url",
            server.url,
            "--install-prefix",
            "standin",
            "--duration",
            "40",
            "--seed",
            "3",
            "--still-size",
            "640x480",
            "--stand-in",
            login,
            "--stand-in-start-session",
            "--stand-in-schedule",
            "accept,veto:bad_framing,wait",
            "--stand-in-delay",
            "0.2-0.5",
            log_name="simulator",
        )
        with contextlib.closing(_operator(server)) as operator:
            session_id = _wait_for_live_session(operator, server, within=20)
            first, second, third = _shell(server, PROPOSE)
            # The human's view: the banner, until the three proposals have left it.
            deadline = time.monotonic() + 20
            while parse_banner(operator.get(f"/sessions/{session_id}/ghost/banner").text):
                assert time.monotonic() < deadline, server.log("simulator")
                time.sleep(0.2)
        # The banner hides a proposal once its time is up; the sweep (every second, in the
        # ticker or in Celery beat behind a busy worker) then marks it expired.
        deadline = time.monotonic() + 15
        while (state := _shell(server, STATES))["proposals"][third][0] == "pending":
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        log = server.log("simulator")

    assert state["session"] == ["Demo shoot", "stand-in", 2]
    assert state["proposals"][first] == ["executed", "stand-in", ""], log
    assert state["proposals"][second] == ["vetoed", "stand-in", "bad_framing"], log
    assert state["proposals"][third] == ["expired", "", ""], log
    assert state["by"] == ["stand-in", "stand-in"]
    assert "stand-in: started “Demo shoot”" in log
    assert "stand-in: accepted switch_hero Cam 2" in log
    assert "stand-in: vetoed switch_hero Cam 1 (bad_framing) after" in log
    assert "stand-in: lets switch_hero Cam 2 run out" in log


def _operator(server: RunningServer) -> httpx.Client:
    """The human operator's browser, logged in."""
    client = httpx.Client(base_url=server.url, timeout=5.0)
    client.get("/accounts/login/")
    response = client.post(
        "/accounts/login/",
        data={
            "username": server.username,
            "password": server.password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, response.text
    return client


def _wait_for_live_session(client: httpx.Client, server: RunningServer, *, within: float) -> str:
    """The session list, as the human operator sees it, until a session is live."""
    deadline = time.monotonic() + within
    while True:
        live = [row for row in parse_session_list(client.get("/").text) if row.status == "live"]
        if live:
            return live[0].id
        assert time.monotonic() < deadline, server.log("simulator")
        time.sleep(0.2)
