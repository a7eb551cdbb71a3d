"""Ghost proposals: every change of state of a proposal, one service each.

A proposal is `pending`, then `accepted`, `vetoed`, `expired` or `superseded`; an accepted one
is carried out through the same services as the operator's own buttons and ends `executed` or
`failed`. Each service locks the proposal row, so two operators deciding at once produce
exactly one decision: the second is refused with what happened first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

import ledger
from devices import services as device_services
from devices.models import Device
from director import services as session_services
from director.ghost_payloads import PayloadInvalid, validate_payload
from director.locking import proposal_session_lock, session_lock
from director.models import GhostProposal, PhotoshootSession

logger = logging.getLogger(__name__)

Kind = GhostProposal.Kind
State = GhostProposal.State
SINGLE_TARGET = {Kind.SWITCH_HERO, Kind.SET_LENS, Kind.SET_FLIP, Kind.REPOSITION}
# Why a pending proposal ended undecided; the history shows the text.
EXPIRY_REASONS = {
    "countdown": "Nobody decided before the countdown ran out.",
    "ghost_off": "Ghost was switched off.",
    "session_stopped": "The session stopped.",
}


class ProposalRefused(Exception):
    """The proposal cannot make that transition; the message says why (409 / a toast)."""


def _decision_s(proposal: GhostProposal) -> float:
    return round((timezone.now() - proposal.created_at).total_seconds(), 3)


def _current(session_id: UUID) -> GhostProposal | None:
    """The proposal on the banner: the highest priority pending one, oldest first."""
    return (
        GhostProposal.objects.select_for_update(no_key=True)
        .filter(session_id=session_id, state=State.PENDING)
        .order_by("-priority", "created_at")
        .first()
    )


@transaction.atomic
def proposal_create(
    *,
    session_id: UUID,
    kind: str,
    target_ids: Sequence[UUID],
    payload: dict[str, Any],
    rationale: str,
    confidence: float,
    policy: str,
    priority: int = 0,
    ttl_s: float | None = None,
) -> GhostProposal:
    """Queue a proposal for a live session whose Ghost is not off. A higher priority than the
    proposal on the banner supersedes it; otherwise the new one waits its turn."""
    session = session_lock(session_id)
    if session.status != PhotoshootSession.Status.LIVE:
        raise ProposalRefused(f"“{session.name}” is not live; Ghost proposes only during a take.")
    if session.ghost_mode == PhotoshootSession.GhostMode.OFF:
        raise ProposalRefused(f"Ghost is off for “{session.name}”.")
    if kind not in Kind.values:
        raise ProposalRefused(f"{kind!r} is not something Ghost can propose.")
    try:
        # The one schema for an action, shared with the external API.
        payload = validate_payload(kind, payload)
    except PayloadInvalid as exc:
        raise ProposalRefused(str(exc)) from None
    targets = list(session.devices.filter(pk__in=target_ids))
    if len(targets) != len(set(target_ids)):
        raise ProposalRefused("Every target must be a camera of this session.")
    if kind in SINGLE_TARGET and len(targets) != 1:
        raise ProposalRefused(f"A {kind} proposal names exactly one camera.")
    if not rationale.strip():
        raise ProposalRefused("A proposal needs a rationale the operator can read.")
    if not math.isfinite(confidence) or not 0 <= confidence <= 1:
        raise ProposalRefused("Confidence is a number from 0 to 1.")
    now = timezone.now()
    ttl = ttl_s if ttl_s is not None else settings.MOTIONMIX_GHOST_TTL_S
    banner = _current(session.pk)
    proposal = GhostProposal.objects.create(
        session=session,
        kind=kind,
        payload=payload,
        rationale=rationale.strip()[:200],
        confidence=confidence,
        policy=policy[:64],
        priority=priority,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    proposal.targets.set(targets)
    ledger.record(
        type="ghost.proposed",
        session_id=session.pk,
        occurred_at=now,
        payload={
            "proposal_id": str(proposal.pk),
            "kind": kind,
            "targets": [str(t.pk) for t in targets],
            "payload": payload,
            "rationale": proposal.rationale,
            "confidence": confidence,
            "policy": proposal.policy,
            "priority": priority,
            "expires_at": proposal.expires_at.timestamp(),
        },
    )
    if banner is not None and priority > banner.priority:
        proposal_supersede(proposal_id=banner.pk, by_proposal_id=proposal.pk)
    _sync_preview(session.pk)
    return proposal


@transaction.atomic
def proposal_supersede(*, proposal_id: UUID, by_proposal_id: UUID) -> GhostProposal:
    proposal = GhostProposal.objects.select_for_update(no_key=True).get(pk=proposal_id)
    if proposal.state != State.PENDING:
        return proposal
    proposal.state = State.SUPERSEDED
    proposal.superseded_by_id = by_proposal_id
    proposal.decided_at = timezone.now()
    proposal.save(update_fields=["state", "superseded_by", "decided_at"])
    ledger.record(
        type="ghost.superseded",
        session_id=proposal.session_id,
        payload={"proposal_id": str(proposal.pk), "by_proposal_id": str(by_proposal_id)},
    )
    return proposal


def _locked_pending(proposal_id: UUID, verb: str) -> GhostProposal:
    proposal_session_lock(proposal_id)  # carrying it out commands cameras (director/locking.py)
    proposal = GhostProposal.objects.select_for_update(no_key=True).get(pk=proposal_id)
    if proposal.state == State.PENDING and proposal.expires_at <= timezone.now():
        # The sweep records the expiry (or, in autopilot, carries it out); a late click
        # changes nothing.
        raise ProposalRefused(
            f"This proposal's countdown ran out at {proposal.expires_at:%H:%M:%S}; "
            f"it can no longer be {verb}."
        )
    if proposal.state != State.PENDING:
        who = f" by {proposal.decided_by}" if proposal.decided_by else ""
        raise ProposalRefused(
            f"This proposal is already {proposal.get_state_display().lower()}{who}; "
            f"it can no longer be {verb}."
        )
    return proposal


@transaction.atomic
def proposal_accept(*, proposal_id: UUID, decided_by: str) -> GhostProposal:
    """Accept and carry out a pending proposal. Refused once it is decided or expired."""
    proposal = _locked_pending(proposal_id, "accepted")
    return _accept(proposal, decided_by)


def _accept(proposal: GhostProposal, decided_by: str) -> GhostProposal:
    proposal.state = State.ACCEPTED
    proposal.decided_by = decided_by[:150]
    proposal.decided_at = timezone.now()
    proposal.save(update_fields=["state", "decided_by", "decided_at"])
    ledger.record(
        type="ghost.accepted",
        session_id=proposal.session_id,
        payload={
            "proposal_id": str(proposal.pk),
            "by": decided_by,
            "decision_s": _decision_s(proposal),
        },
    )
    if proposal.kind == Kind.REPOSITION:
        # An instruction for the crew: it is carried out when the camera's placement
        # changes, or when the operator marks it done.
        _sync_preview(proposal.session_id)
        return proposal
    return proposal_execute(proposal_id=proposal.pk)


@transaction.atomic
def proposal_veto(
    *, proposal_id: UUID, decided_by: str, reason: str, note: str = ""
) -> GhostProposal:
    if reason not in GhostProposal.VetoReason.values:
        raise ProposalRefused(
            f"Pick a veto reason: {', '.join(GhostProposal.VetoReason.labels).lower()}."
        )
    proposal = _locked_pending(proposal_id, "vetoed")
    proposal.state = State.VETOED
    proposal.decided_by = decided_by[:150]
    proposal.decided_at = timezone.now()
    proposal.veto_reason = reason
    proposal.veto_note = note[:200]
    proposal.save(update_fields=["state", "decided_by", "decided_at", "veto_reason", "veto_note"])
    ledger.record(
        type="ghost.vetoed",
        session_id=proposal.session_id,
        payload={
            "proposal_id": str(proposal.pk),
            "by": decided_by,
            "reason": reason,
            "note": proposal.veto_note,
            "decision_s": _decision_s(proposal),
        },
    )
    _sync_preview(proposal.session_id)
    return proposal


def _expire(proposal: GhostProposal, reason: str) -> None:
    proposal.state = State.EXPIRED
    proposal.decided_at = timezone.now()
    proposal.result = EXPIRY_REASONS[reason]
    proposal.save(update_fields=["state", "decided_at", "result"])
    ledger.record(
        type="ghost.expired",
        session_id=proposal.session_id,
        payload={"proposal_id": str(proposal.pk), "reason": reason},
    )


def _finish(proposal: GhostProposal, state: str, result: str) -> None:
    """An accepted proposal ends `executed` or `failed`, with what happened."""
    proposal.state = state
    proposal.result = result
    proposal.save(update_fields=["state", "result"])
    ledger.record(
        type=f"ghost.{state}",
        session_id=proposal.session_id,
        payload={"proposal_id": str(proposal.pk), "result": result},
    )


@transaction.atomic
def proposal_expire(*, proposal_id: UUID) -> GhostProposal:
    """The countdown ended. Supervised: the proposal expires. Autopilot: it is carried out,
    since the operator did not veto it. Idempotent; a decided proposal is left alone."""
    proposal_session_lock(proposal_id)
    proposal = (
        GhostProposal.objects.select_for_update(no_key=True)
        .select_related("session")
        .get(pk=proposal_id)
    )
    if proposal.state != State.PENDING or proposal.expires_at > timezone.now():
        return proposal
    if proposal.session.ghost_mode == PhotoshootSession.GhostMode.AUTOPILOT:
        return _accept(proposal, "autopilot")
    _expire(proposal, "countdown")
    _sync_preview(proposal.session_id)
    return proposal


@transaction.atomic
def proposals_end_for_session(*, session_id: UUID, reason: str) -> int:
    """Ghost was switched off, or the session stopped: its pending proposals expire, and on a
    stop the repositions still waiting for the crew fail. Returns how many ended."""
    if reason not in EXPIRY_REASONS or reason == "countdown":
        raise ValueError(f"not a reason to end a session's proposals: {reason!r}")
    ended = 0
    for proposal in GhostProposal.objects.select_for_update(no_key=True).filter(
        session_id=session_id, state=State.PENDING
    ):
        _expire(proposal, reason)
        ended += 1
    if reason == "session_stopped":
        for proposal in GhostProposal.objects.select_for_update(no_key=True).filter(
            session_id=session_id, state=State.ACCEPTED
        ):
            _finish(proposal, State.FAILED, "The session ended before the camera was moved.")
            ended += 1
    _sync_preview(session_id)
    return ended


def repositions_complete_due() -> int:
    """Carry out every accepted reposition whose camera has been placed since the decision."""
    due = list(
        GhostProposal.objects.filter(
            state=State.ACCEPTED,
            kind=Kind.REPOSITION,
            targets__placed_at__gt=F("decided_at"),
        )
        .values_list("pk", flat=True)
        .distinct()[:200]
    )
    for proposal_id in due:
        proposal_execute(proposal_id=proposal_id)
    return len(due)


def proposals_expire_due() -> int:
    """End every countdown that has run out; returns how many it handled."""
    due = list(
        GhostProposal.objects.filter(
            state=State.PENDING, expires_at__lte=timezone.now()
        ).values_list("pk", flat=True)[:200]
    )
    for proposal_id in due:
        proposal_expire(proposal_id=proposal_id)
    return len(due)


@transaction.atomic
def proposal_execute(*, proposal_id: UUID, marked_done_by: str = "") -> GhostProposal:
    """Carry out an accepted proposal through the operator's own services. A refusal there
    (an offline camera, a lens it lacks) ends the proposal `failed` with the reason.

    A reposition is done by the crew: it completes once its camera's placement changed after
    the decision, or when an operator marks it done (`marked_done_by`)."""
    proposal_session_lock(proposal_id)
    proposal = GhostProposal.objects.select_for_update(no_key=True).get(pk=proposal_id)
    if proposal.state != State.ACCEPTED:
        raise ProposalRefused(
            f"Only an accepted proposal is carried out; this one is "
            f"{proposal.get_state_display().lower()}."
        )
    targets = list(proposal.targets.order_by("name"))
    if proposal.kind == Kind.REPOSITION:
        result = _reposition_result(proposal, targets[0], marked_done_by)
    else:
        try:
            with transaction.atomic():
                result = _run(proposal, targets)
        except (session_services.SessionRefused, device_services.CommandRefused) as exc:
            _finish(proposal, State.FAILED, str(exc))
            _sync_preview(proposal.session_id)
            return proposal
    _finish(proposal, State.EXECUTED, result)
    _sync_preview(proposal.session_id)
    return proposal


def _reposition_result(proposal: GhostProposal, camera: Device, marked_done_by: str) -> str:
    if marked_done_by:
        return f"{camera.name}: move marked done by {marked_done_by}"
    camera.refresh_from_db(fields=["placed_at", "azimuth_deg"])
    decided = proposal.decided_at
    if camera.placed_at is None or decided is None or camera.placed_at <= decided:
        raise ProposalRefused(
            f"{camera.name} has not been moved yet; mark the move done once the crew has moved it."
        )
    where = f"{camera.azimuth_deg:.0f}°" if camera.azimuth_deg is not None else "a new place"
    return f"{camera.name} moved to {where}"


def _sync_preview(session_id: UUID) -> None:
    """The tally shows `preview` on the camera the banner proposes to put on air, so the
    crew sees it coming; every other preview goes back off. Best effort: a tally that cannot
    be sent never blocks a decision."""
    session = PhotoshootSession.objects.get(pk=session_id)
    wanted: UUID | None = None
    if session.status == PhotoshootSession.Status.LIVE:
        banner = (
            GhostProposal.objects.filter(session_id=session_id, state=State.PENDING)
            .order_by("-priority", "created_at")
            .first()
        )
        if banner is not None and banner.kind == Kind.SWITCH_HERO:
            target = banner.targets.values_list("pk", flat=True).first()
            if target is not None and target != session.hero_id:
                wanted = target
    changes = [
        (device_id, "off")
        for device_id in session.devices.filter(tally=Device.Tally.PREVIEW)
        .exclude(pk=wanted)
        .values_list("pk", flat=True)
    ]
    if (
        wanted is not None
        and not session.devices.filter(pk=wanted, tally=Device.Tally.PREVIEW).exists()
    ):
        changes.append((wanted, "preview"))
    for device_id, state in changes:
        try:
            with transaction.atomic():
                device_services.command_issue(
                    device_id=device_id,
                    type="tally",
                    args={"state": state},
                    session_id=session_id,
                    issued_by="ghost",
                )
        except device_services.CommandRefused:
            logger.warning("tally %s for %s refused", state, device_id, exc_info=True)


def _run(proposal: GhostProposal, targets: list[Device]) -> str:
    by = f"ghost:{proposal.policy}"
    session_id = proposal.session_id
    if proposal.kind == Kind.SWITCH_HERO:
        session_services.session_hero_switch(
            session_id=session_id, device_id=targets[0].pk, switched_by=by
        )
        return f"{targets[0].name} is on air"
    if proposal.kind in (Kind.CAPTURE_STILL, Kind.CAPTURE_ALL):
        if proposal.kind == Kind.CAPTURE_ALL or not targets:
            targets = list(
                proposal.session.devices.filter(status=Device.Status.ONLINE).order_by("name")
            )
        commands = device_services.commands_issue_capture(
            device_ids=[t.pk for t in targets],
            issued_by=by,
            session_id=session_id,
            synchronized=proposal.kind == Kind.CAPTURE_ALL,
        )
        return f"capture sent to {len(commands)} camera(s)"
    # set_lens or set_flip (a reposition is carried out by the crew, never here).
    command = device_services.command_issue(
        device_id=targets[0].pk,
        type=proposal.kind,
        args=proposal.payload,
        issued_by=by,
        session_id=session_id,
    )
    return f"{command.type} sent to {targets[0].name}"
