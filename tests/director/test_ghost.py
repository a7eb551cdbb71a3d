"""Ghost proposals: every transition, the races, autopilot, and execution through the
operator's own services."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from devices import services as device_services
from devices.models import Device, DeviceCommand
from director import ghost, services
from director.models import GhostProposal, PhotoshootSession
from director.tasks import proposals_sweep_expired
from ledger.models import ProductionEvent
from tests.support.api import register_device

State = GhostProposal.State


def _session(operator: Any, *devices: Device, mode: str = "supervised") -> PhotoshootSession:
    session = services.session_create(name="Ghost take", operator=operator)
    PhotoshootSession.objects.filter(pk=session.pk).update(ghost_mode=mode)
    return services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])


def _propose(session: PhotoshootSession, target: Device, **overrides: Any) -> GhostProposal:
    fields: dict[str, Any] = {
        "session_id": session.pk,
        "kind": "switch_hero",
        "target_ids": [target.pk],
        "payload": {},
        "rationale": "Cam B sees the face; Cam A has been on air for 40 s.",
        "confidence": 0.8,
        "policy": "hero-staleness",
    }
    fields.update(overrides)
    return ghost.proposal_create(**fields)


def _events(kind: str) -> list[dict[str, Any]]:
    return list(ProductionEvent.objects.filter(type=kind).values_list("payload", flat=True))


@pytest.fixture
def cams(db: None) -> tuple[Device, Device]:
    return (
        register_device("iphone-a", name="Cam A").device,
        register_device("iphone-b", name="Cam B").device,
    )


@pytest.mark.django_db
def test_accepting_switches_the_hero_through_the_operators_own_service(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b)
    proposal = _propose(session, b)

    proposal = ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")

    assert proposal.state == State.EXECUTED
    assert proposal.result == "Cam B is on air"
    assert PhotoshootSession.objects.get(pk=session.pk).hero_id == b.pk
    assert _events("hero.switched")[0]["by"] == "ghost:hero-staleness"
    assert [e["proposal_id"] for e in _events("ghost.accepted")] == [str(proposal.pk)]
    assert _events("ghost.executed")[0]["result"] == "Cam B is on air"


@pytest.mark.django_db
def test_a_vetoed_proposal_keeps_its_reason_and_cannot_be_accepted(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    proposal = _propose(_session(operator, a, b), b)
    ghost.proposal_veto(proposal_id=proposal.pk, decided_by="op", reason="bad_framing", note="x")
    with pytest.raises(ghost.ProposalRefused, match="already vetoed by op"):
        ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op2")
    vetoed = _events("ghost.vetoed")[0]
    assert (vetoed["reason"], vetoed["note"]) == ("bad_framing", "x")
    assert not _events("ghost.accepted")


@pytest.mark.django_db
def test_a_veto_after_an_accept_is_refused(operator: Any, cams: tuple[Device, Device]) -> None:
    a, b = cams
    proposal = _propose(_session(operator, a, b), b)
    ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")
    with pytest.raises(ghost.ProposalRefused, match="already executed"):
        ghost.proposal_veto(proposal_id=proposal.pk, decided_by="op2", reason="other")


@pytest.mark.django_db
def test_a_veto_needs_a_known_reason(operator: Any, cams: tuple[Device, Device]) -> None:
    a, b = cams
    proposal = _propose(_session(operator, a, b), b)
    with pytest.raises(ghost.ProposalRefused, match="veto reason"):
        ghost.proposal_veto(proposal_id=proposal.pk, decided_by="op", reason="meh")


@pytest.mark.django_db
def test_accepting_after_the_countdown_is_refused_and_the_sweep_expires_it(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b)
    proposal = _propose(session, b)
    GhostProposal.objects.filter(pk=proposal.pk).update(expires_at=timezone.now())
    with pytest.raises(ghost.ProposalRefused, match="countdown ran out"):
        ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")
    assert ghost.proposals_expire_due() == 1
    proposal.refresh_from_db()
    assert proposal.state == State.EXPIRED
    assert PhotoshootSession.objects.get(pk=session.pk).hero_id == a.pk


@pytest.mark.django_db
def test_in_autopilot_a_countdown_that_ends_carries_the_proposal_out(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b, mode="autopilot")
    proposal = _propose(session, b)
    GhostProposal.objects.filter(pk=proposal.pk).update(expires_at=timezone.now())
    assert proposals_sweep_expired() == 1
    proposal.refresh_from_db()
    assert (proposal.state, proposal.decided_by) == (State.EXECUTED, "autopilot")
    assert PhotoshootSession.objects.get(pk=session.pk).hero_id == b.pk


@pytest.mark.django_db
def test_a_higher_priority_proposal_supersedes_the_banner_and_a_lower_one_waits(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b)
    first = _propose(session, b, priority=1)
    waiting = _propose(session, b, kind="capture_all", target_ids=[], priority=0)
    urgent = _propose(session, a, kind="set_lens", payload={"zoom": 0.5}, priority=5)
    first.refresh_from_db()
    waiting.refresh_from_db()
    assert first.state == State.SUPERSEDED and first.superseded_by_id == urgent.pk
    assert waiting.state == State.PENDING
    assert _events("ghost.superseded") == [
        {"proposal_id": str(first.pk), "by_proposal_id": str(urgent.pk)}
    ]


@pytest.mark.django_db
def test_a_refusal_downstream_ends_the_proposal_failed_with_the_reason(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b)
    proposal = _propose(session, b)
    device_services.device_mark_offline(device_id=b.pk, reason="test")
    proposal = ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")
    assert proposal.state == State.FAILED
    assert "Cam B is offline" in proposal.result
    assert _events("ghost.failed")[0]["result"] == proposal.result
    assert PhotoshootSession.objects.get(pk=session.pk).hero_id == a.pk


@pytest.mark.django_db
def test_an_accepted_lens_proposal_sends_the_command(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b)
    proposal = _propose(session, b, kind="set_lens", payload={"zoom": 0.5})
    ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")
    command = DeviceCommand.objects.get(device=b, type="set_lens")
    assert command.args["lens"] == "ultra_wide"
    assert command.session_id == session.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "teleport"}, "not something Ghost can propose"),
        ({"confidence": 1.5}, "Confidence"),
        ({"rationale": "  "}, "rationale"),
        ({"target_ids": []}, "exactly one camera"),
    ],
)
def test_malformed_proposals_are_refused(
    operator: Any, cams: tuple[Device, Device], overrides: dict[str, Any], message: str
) -> None:
    a, b = cams
    session = _session(operator, a, b)
    with pytest.raises(ghost.ProposalRefused, match=message):
        _propose(session, b, **overrides)
    assert not GhostProposal.objects.exists()


@pytest.mark.django_db
def test_ghost_off_or_a_session_not_live_takes_no_proposals(
    operator: Any, cams: tuple[Device, Device]
) -> None:
    a, b = cams
    session = _session(operator, a, b, mode="off")
    with pytest.raises(ghost.ProposalRefused, match="Ghost is off"):
        _propose(session, b)
    PhotoshootSession.objects.filter(pk=session.pk).update(ghost_mode="supervised")
    services.session_stop(session_id=session.pk)
    with pytest.raises(ghost.ProposalRefused, match="not live"):
        _propose(session, b)


@pytest.mark.django_db(transaction=True)
def test_two_operators_accepting_at_once_make_exactly_one_decision(operator: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite takes one lock for the whole database, so the two "
            "accepts never interleave; runs in the scaled pass"
        )
    a = register_device("iphone-a", name="Cam A").device
    b = register_device("iphone-b", name="Cam B").device
    proposal = _propose(_session(operator, a, b), b)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def accept(who: str) -> None:
        try:
            barrier.wait(timeout=5)
            ghost.proposal_accept(proposal_id=proposal.pk, decided_by=who)
            outcomes.append("accepted")
        except ghost.ProposalRefused as exc:
            outcomes.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=accept, args=(f"op{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert outcomes.count("accepted") == 1, outcomes
    [refusal] = [o for o in outcomes if o != "accepted"]
    assert "already executed" in refusal
    assert len(_events("ghost.accepted")) == 1
    assert len(_events("hero.switched")) == 1
