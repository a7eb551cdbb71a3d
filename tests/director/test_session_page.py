"""The Live Director of a session: its page, Ghost's supervision actions (accept, veto, mode,
crew moves), what stopping a session does to Ghost, the tally preview, and the pushes."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from devices import services as device_services
from devices.models import Device
from director import ghost, ghost_selectors, services
from director.consumers import CLOSE_LOGIN_REQUIRED, CLOSE_NOT_FOUND
from director.models import GhostProposal, PhotoshootSession
from director.tasks import proposals_sweep_expired
from ledger.models import ProductionEvent
from tests.support.api import register_device
from tests.support.sockets import (
    HOST,
    ORIGIN,
    connect,
    receive_until,
    session_socket_path,
)

State = GhostProposal.State


def _live(operator: Any, *devices: Device, mode: str = "supervised") -> PhotoshootSession:
    session = services.session_create(name="Spring lookbook", operator=operator)
    if mode != "supervised":
        services.session_ghost_mode_set(session_id=session.pk, mode=mode, by="setup")
    return services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])


def _propose(session: PhotoshootSession, target: Device, **overrides: Any) -> GhostProposal:
    fields: dict[str, Any] = {
        "session_id": session.pk,
        "kind": "switch_hero",
        "target_ids": [target.pk],
        "payload": {},
        "rationale": f"{target.name} sees the face; the hero has been on air for 50 s.",
        "confidence": 0.82,
        "policy": "hero-staleness",
    }
    fields.update(overrides)
    return ghost.proposal_create(**fields)


def _toast(response: Any) -> dict[str, str]:
    return json.loads(response["HX-Trigger"])["toast"]


def _types(session: PhotoshootSession) -> list[str]:
    return list(
        ProductionEvent.objects.filter(stream=str(session.pk))
        .order_by("seq")
        .values_list("type", flat=True)
    )


@pytest.fixture
def cams(db: None) -> tuple[Device, Device, Device]:
    return (
        register_device("s-a", name="Cam A").device,
        register_device("s-b", name="Cam B").device,
        register_device("s-c", name="Cam C").device,
    )


@pytest.mark.django_db
def test_the_session_page_shows_the_banner_with_its_countdown_and_keys(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, _ = cams
    session = _live(operator, a, b)
    proposal = _propose(session, b)

    page = operator_client.get(reverse("director:session_live", args=[session.pk]))

    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-proposal-id="{proposal.pk}"' in html
    assert f'data-targets="{b.pk}"' in html
    assert "sees the face" in html and "82 %" in html
    assert "expires in 10 s" in html or "expires in 9 s" in html
    assert "Accept <kbd>A</kbd>" in html and "Veto <kbd>V</kbd>" in html
    for reason in ("Bad framing", "Wrong moment", "Device problem", "Other"):
        assert reason in html
    assert f'ws-connect="/ws/director/sessions/{session.pk}/"' in html
    assert 'data-testid="hero-name">Cam A<' in html
    assert 'data-testid="event-log"' in html and "Ghost proposes" in html


@pytest.mark.django_db
def test_the_hero_player_is_given_the_same_ice_servers_as_the_relay(
    operator_client: Client, operator: Any, cams: tuple[Device, ...], settings: Any
) -> None:
    turn = {"urls": ["turn:turn.example:3478"], "username": "crew", "credential": "s3cret&<"}
    settings.MOTIONMIX_ICE_SERVERS = json.dumps([{"urls": "stun:stun.example:3478"}, turn])
    session = _live(operator, cams[0])

    page = operator_client.get(reverse("director:session_live", args=[session.pk]))

    player = re.search(r'id="hero-player"[^>]*data-ice-servers="([^"]*)"', page.content.decode())
    assert player is not None
    # What hero.js hands to RTCPeerConnection once the browser has unescaped the attribute.
    assert json.loads(html.unescape(player.group(1))) == [
        {"urls": "stun:stun.example:3478"},
        turn,
    ]


@pytest.mark.django_db
def test_the_banner_says_auto_in_autopilot_and_counts_the_waiting_ones(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c, mode="autopilot")
    _propose(session, b)
    _propose(session, c, rationale="Cam C is the other angle.")

    html = operator_client.get(reverse("director:session_banner", args=[session.pk])).content
    assert b"auto in" in html and b"1 more waiting" in html


@pytest.mark.django_db
def test_a_higher_priority_proposal_replaces_the_banner_and_says_so(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c)
    _propose(session, b, rationale="Cam B has been waiting.")
    urgent = _propose(session, c, rationale="Cam A is overheating.", priority=90, policy="health")

    html = operator_client.get(reverse("director:session_banner", args=[session.pk])).content
    assert f'data-proposal-id="{urgent.pk}"'.encode() in html
    assert b"Replaces a less urgent proposal" in html and b"Cam B has been waiting." in html


@pytest.mark.django_db
def test_accepting_from_the_banner_switches_the_hero_and_a_second_accept_is_refused(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, _ = cams
    session = _live(operator, a, b)
    proposal = _propose(session, b)
    url = reverse("director:proposal_accept", args=[session.pk, proposal.pk])

    first = operator_client.post(url, HTTP_HX_REQUEST="true")
    again = operator_client.post(url, HTTP_HX_REQUEST="true")

    assert first.status_code == 200 and "Cam B is on air" in _toast(first)["message"]
    assert b"nothing to propose right now" in first.content
    assert PhotoshootSession.objects.get(pk=session.pk).hero_id == b.pk
    assert again.status_code == 409
    assert _toast(again)["level"] == "error"
    assert "already executed by " + operator.username in _toast(again)["message"]


@pytest.mark.django_db
def test_vetoing_needs_one_of_the_quick_reasons_and_keeps_it(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, _ = cams
    session = _live(operator, a, b)
    proposal = _propose(session, b)
    url = reverse("director:proposal_veto", args=[session.pk, proposal.pk])

    bad = operator_client.post(url, {"reason": "dislike"})
    good = operator_client.post(url, {"reason": "wrong_moment"})

    assert bad.status_code == 400 and "reason" in _toast(bad)["message"]
    assert good.status_code == 200 and _toast(good)["message"] == "Vetoed: wrong moment."
    proposal.refresh_from_db()
    assert (proposal.state, proposal.veto_reason) == (State.VETOED, "wrong_moment")
    assert PhotoshootSession.objects.get(pk=session.pk).hero_id == a.pk


@pytest.mark.django_db
def test_accepting_a_proposal_of_another_session_is_not_found(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, _ = cams
    session = _live(operator, a, b)
    other = services.session_create(name="Other", operator=operator)
    proposal = _propose(session, b)
    response = operator_client.post(
        reverse("director:proposal_accept", args=[other.pk, proposal.pk])
    )
    assert response.status_code == 404
    assert GhostProposal.objects.get(pk=proposal.pk).state == State.PENDING


@pytest.mark.django_db
def test_switching_ghost_off_ends_the_waiting_proposals_on_the_record(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, _ = cams
    session = _live(operator, a, b)
    proposal = _propose(session, b)

    response = operator_client.post(
        reverse("director:session_ghost_mode", args=[session.pk]), {"mode": "off"}
    )
    wrong = operator_client.post(
        reverse("director:session_ghost_mode", args=[session.pk]), {"mode": "wild"}
    )

    assert response.status_code == 200 and b'data-ghost-mode="off"' in response.content
    assert wrong.status_code == 400
    proposal.refresh_from_db()
    assert proposal.state == State.EXPIRED and proposal.result == "Ghost was switched off."
    changed = ProductionEvent.objects.get(type="session.ghost_mode_changed")
    assert changed.payload == {"from": "supervised", "to": "off", "by": operator.username}
    expired = ProductionEvent.objects.get(type="ghost.expired")
    assert expired.payload["reason"] == "ghost_off"
    with pytest.raises(ghost.ProposalRefused, match="Ghost is off"):
        _propose(session, b)


@pytest.mark.django_db
def test_stopping_a_session_expires_its_proposals_and_sums_them_up(
    operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c)
    accepted = _propose(session, b)
    ghost.proposal_accept(proposal_id=accepted.pk, decided_by="op")
    vetoed = _propose(session, c)
    ghost.proposal_veto(proposal_id=vetoed.pk, decided_by="op", reason="bad_framing")
    move = _propose(session, c, kind="reposition", payload={"azimuth_deg": 200})
    ghost.proposal_accept(proposal_id=move.pk, decided_by="op")
    waiting = _propose(session, a)

    services.session_stop(session_id=session.pk)

    assert GhostProposal.objects.get(pk=waiting.pk).state == State.EXPIRED
    assert GhostProposal.objects.get(pk=move.pk).state == State.FAILED
    summary = ProductionEvent.objects.get(type="session.stopped").payload["summary"]
    assert summary["proposed"] == 4
    assert summary["accepted"] == 2 and summary["vetoed"] == 1
    assert summary["accept_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["median_decision_s"] is not None and summary["stills"] == 0
    types = _types(session)
    assert types.index("ghost.expired") < types.index("session.stopped")
    assert types.index("ghost.failed") < types.index("session.stopped")


@pytest.mark.django_db
def test_an_accepted_reposition_waits_for_the_crew_and_completes_when_the_camera_moves(
    operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c)
    move = _propose(
        session, c, kind="reposition", payload={"azimuth_deg": 200}, policy="coverage-gap"
    )
    move = ghost.proposal_accept(proposal_id=move.pk, decided_by="op")
    assert move.state == State.ACCEPTED
    assert [p.pk for p in ghost_selectors.crew_moves(session_id=session.pk)] == [move.pk]
    proposals_sweep_expired()
    assert GhostProposal.objects.get(pk=move.pk).state == State.ACCEPTED

    device_services.device_place(device_id=c.pk, azimuth_deg=198)
    proposals_sweep_expired()

    move.refresh_from_db()
    assert move.state == State.EXECUTED and move.result == "Cam C moved to 198°"
    assert ghost_selectors.crew_moves(session_id=session.pk) == []


@pytest.mark.django_db
def test_the_operator_can_mark_a_crew_move_done(
    operator_client: Client, operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c)
    move = _propose(session, c, kind="reposition", payload={"azimuth_deg": 90})
    ghost.proposal_accept(proposal_id=move.pk, decided_by="op")
    with pytest.raises(ghost.ProposalRefused, match="has not been moved yet"):
        ghost.proposal_execute(proposal_id=move.pk)

    response = operator_client.post(reverse("director:proposal_done", args=[session.pk, move.pk]))
    again = operator_client.post(reverse("director:proposal_done", args=[session.pk, move.pk]))

    assert response.status_code == 200
    assert f"Cam C: move marked done by {operator.username}" in _toast(response)["message"]
    assert again.status_code == 409
    assert GhostProposal.objects.get(pk=move.pk).state == State.EXECUTED


@pytest.mark.django_db
def test_the_proposed_hero_shows_a_preview_tally_until_the_decision(
    operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c)
    first = _propose(session, b)
    assert Device.objects.get(pk=b.pk).tally == Device.Tally.PREVIEW

    ghost.proposal_veto(proposal_id=first.pk, decided_by="op", reason="bad_framing")
    assert Device.objects.get(pk=b.pk).tally == Device.Tally.OFF

    second = _propose(session, c)
    assert Device.objects.get(pk=c.pk).tally == Device.Tally.PREVIEW
    ghost.proposal_accept(proposal_id=second.pk, decided_by="op")
    tallies = dict(Device.objects.values_list("name", "tally"))
    assert tallies == {"Cam A": "off", "Cam B": "off", "Cam C": "live"}


@pytest.mark.django_db
def test_the_metrics_count_operator_decisions_and_their_median_time(
    operator: Any, cams: tuple[Device, ...]
) -> None:
    a, b, c = cams
    session = _live(operator, a, b, c)
    for i, target in enumerate((b, c, b)):
        proposal = _propose(session, target)
        GhostProposal.objects.filter(pk=proposal.pk).update(
            created_at=proposal.created_at.replace(microsecond=0)
        )
        if i < 2:
            ghost.proposal_veto(proposal_id=proposal.pk, decided_by="op", reason="other")
        else:
            ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")

    metrics = ghost_selectors.ghost_metrics(session_id=session.pk)
    assert (metrics.proposed, metrics.accepted, metrics.vetoed) == (3, 1, 2)
    assert metrics.accept_rate == pytest.approx(1 / 3)
    assert metrics.median_decision_s is not None and 0 <= metrics.median_decision_s < 5


# --- The session socket ---------------------------------------------------------------------


def _cookie_of(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _socket_of(user: Any, session: PhotoshootSession) -> WebsocketCommunicator:
    """A socket on the session's page, logged in as `user` (who must be allowed to see it)."""
    cookie = await sync_to_async(_cookie_of)(user)
    return await connect([ORIGIN, HOST, (b"cookie", cookie)], session_socket_path(session.pk))


def _staff(username: str) -> Any:
    return get_user_model().objects.create_user(username=username, is_staff=True)


@pytest.mark.django_db(transaction=True)
async def test_the_session_socket_pushes_the_banner_on_proposal_and_decision(
    operator: Any,
) -> None:
    a = await sync_to_async(register_device)("p-a", name="Cam A")
    b = await sync_to_async(register_device)("p-b", name="Cam B")
    session = await sync_to_async(_live)(operator, a.device, b.device)
    socket = await _socket_of(operator, session)
    try:
        first = await receive_until(socket, 'id="ghost-banner"')
        assert "nothing to propose right now" in first and 'id="session-head"' in first
        # The head carries the ledger chip: events wait in the outbox here, nothing failed.
        assert 'class="ledger-chip ledger-offline"' in first and "Ledger failing" not in first
        started = time.perf_counter()
        proposal = await sync_to_async(_propose)(session, b.device)
        pushed = await receive_until(socket, f'data-proposal-id="{proposal.pk}"')
        assert time.perf_counter() - started < 1.0
        # The banner goes out first, on its own; the panel follows.
        assert 'hx-swap-oob="true"' in pushed and 'id="ghost-panel"' not in pushed
        await receive_until(socket, 'id="ghost-panel"')

        await sync_to_async(ghost.proposal_veto)(
            proposal_id=proposal.pk, decided_by="op", reason="wrong_moment"
        )
        await receive_until(socket, "nothing to propose right now")
        await receive_until(socket, 'data-state="vetoed"')
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_session_socket_pushes_the_hero_and_the_event_log(operator: Any) -> None:
    a = await sync_to_async(register_device)("h-a", name="Cam A")
    b = await sync_to_async(register_device)("h-b", name="Cam B")
    session = await sync_to_async(_live)(operator, a.device, b.device)
    socket = await _socket_of(operator, session)
    try:
        await receive_until(socket, 'id="event-log"')
        await sync_to_async(services.session_hero_switch)(
            session_id=session.pk, device_id=b.device.pk, switched_by="op"
        )
        hero = await receive_until(socket, 'data-testid="hero-name">Cam B<')
        assert 'id="hero-area"' in hero
        log = await receive_until(socket, "Cam B on air (op)")
        assert 'id="event-log"' in log
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_for_an_unknown_session_is_closed_with_not_found() -> None:
    from tests.support.sockets import session_cookie

    cookie = await sync_to_async(session_cookie)()
    socket = await connect(
        [ORIGIN, HOST, (b"cookie", cookie)],
        session_socket_path("00000000-0000-0000-0000-000000000000"),
    )
    output = await socket.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_session_socket_is_asked_to_log_in(operator: Any) -> None:
    session = await sync_to_async(services.session_create)(name="Anon", operator=operator)
    socket = await connect([ORIGIN, HOST], session_socket_path(session.pk))
    output = await socket.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": CLOSE_LOGIN_REQUIRED}
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_every_operator_of_the_session_sees_the_decision(operator: Any) -> None:
    a = await sync_to_async(register_device)("m-a", name="Cam A")
    b = await sync_to_async(register_device)("m-b", name="Cam B")
    session = await sync_to_async(_live)(operator, a.device, b.device)
    # The session's operator, and two staff members (who see every session).
    sockets = [await _socket_of(operator, session)]
    for name in ("producer", "supervisor"):
        sockets.append(await _socket_of(await sync_to_async(_staff)(name), session))
    try:
        for socket in sockets:
            await receive_until(socket, 'id="ghost-banner"')
        proposal = await sync_to_async(_propose)(session, b.device)
        for socket in sockets:
            await receive_until(socket, f'data-proposal-id="{proposal.pk}"')
        await sync_to_async(ghost.proposal_accept)(proposal_id=proposal.pk, decided_by="op")
        for socket in sockets:
            pushed = await receive_until(socket, 'data-state="executed"')
            assert "Cam B is on air" in pushed
    finally:
        for socket in sockets:
            await socket.disconnect()
