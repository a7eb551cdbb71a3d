"""Every change of state of a photoshoot session. Nothing else writes these fields."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

import ledger
from devices import services as device_services
from devices.models import Device, DeviceCommand
from director import ghost_selectors, selectors
from director.hero.broadcast import hero_switch_announce
from director.locking import session_lock
from director.models import PhotoshootSession, Still
from ledger.models import ProductionEvent


class SessionRefused(Exception):
    """The session cannot make that transition; the message says why and what to do (409)."""


def _session_row(session: PhotoshootSession) -> dict[str, Any]:
    """The productionSessions row Convex keeps for this session (numbers as unix seconds)."""
    row: dict[str, Any] = {
        "name": session.name,
        "status": session.status,
        "operator": session.operator.get_username(),
        "updatedAt": timezone.now().timestamp(),
    }
    if session.started_at:
        row["startedAt"] = session.started_at.timestamp()
    if session.ended_at:
        row["endedAt"] = session.ended_at.timestamp()
    return row


@transaction.atomic
def session_create(*, name: str, operator: AbstractBaseUser, notes: str = "") -> PhotoshootSession:
    name = name.strip()
    if not name:
        raise SessionRefused("Give the session a name.")
    session = PhotoshootSession.objects.create(name=name, notes=notes, operator=operator)
    ledger.record(
        type="session.created",
        session_id=session.pk,
        payload={"name": name, "operator": operator.get_username()},
    )
    return session


@transaction.atomic
def session_start(*, session_id: UUID, device_ids: list[UUID] | None = None) -> PhotoshootSession:
    """Take a draft session live with the given devices (default: every online camera that is
    not a webcam). A device takes part in at most one live session: the rows of the devices
    are locked, so two sessions starting at once cannot both take the same camera."""
    session = PhotoshootSession.objects.select_for_update(no_key=True).get(pk=session_id)
    if session.status != PhotoshootSession.Status.DRAFT:
        raise SessionRefused(
            f"“{session.name}” is {session.get_status_display().lower()}; only a draft "
            "session can start. Create a new session for another take."
        )
    devices = Device.objects.select_for_update(no_key=True).order_by("name", "pk")
    if device_ids is None:
        devices = devices.filter(status=Device.Status.ONLINE).exclude(kind=Device.Kind.WEBCAM)
    else:
        devices = devices.filter(pk__in=device_ids)
    chosen = list(devices)
    busy = list(
        Device.objects.filter(
            pk__in=[d.pk for d in chosen],
            photoshoot_sessions__status=PhotoshootSession.Status.LIVE,
        ).values_list("name", flat=True)
    )
    if busy:
        raise SessionRefused(
            f"{', '.join(sorted(busy))} already take part in another live session; stop that "
            "session first or leave them out."
        )
    session.status = PhotoshootSession.Status.LIVE
    session.started_at = timezone.now()
    session.hero = chosen[0] if chosen else None
    session.save(update_fields=["status", "started_at", "hero"])
    session.devices.set(chosen)
    started = ledger.record(
        type="session.started",
        session_id=session.pk,
        occurred_at=session.started_at,
        payload={
            "session": _session_row(session),
            "devices": [str(d.pk) for d in chosen],
            "hero": str(session.hero_id) if session.hero_id else None,
        },
    )
    _tally(session, "live")
    # Every camera of the session publishes video, so the hero can switch to any of them
    # at once and every card shows its picture.
    _publish(session, [d.pk for d in chosen], "start_publish")
    _announce_hero(session, cause=started.event_id)
    return session


@transaction.atomic
def session_stop(*, session_id: UUID) -> PhotoshootSession:
    """End a live session and record its summary. Stopping an ended session is refused."""
    session = session_lock(session_id)
    if session.status != PhotoshootSession.Status.LIVE:
        raise SessionRefused(
            f"“{session.name}” is not live ({session.get_status_display().lower()}); "
            "there is nothing to stop."
        )
    session.status = PhotoshootSession.Status.ENDED
    session.ended_at = timezone.now()
    session.save(update_fields=["status", "ended_at"])
    # Nothing asked for in this session is carried out after it (the tally off below is new),
    # and Ghost's open proposals end with it.
    device_services.commands_expire_for_session(session_id=session.pk)
    from director import ghost

    ghost.proposals_end_for_session(session_id=session.pk, reason="session_stopped")
    summary = {
        "duration_s": round(session.duration_s or 0.0, 3),
        "devices": session.devices.count(),
        "stills": Still.objects.filter(session=session).count(),
        # Events recorded in this session before the stop, the stop itself excluded.
        "events": ProductionEvent.objects.filter(stream=str(session.pk)).count(),
        **ghost_selectors.ghost_metrics(session_id=session.pk).as_summary(),
    }
    ledger.record(
        type="session.stopped",
        session_id=session.pk,
        occurred_at=session.ended_at,
        payload={"session": {**_session_row(session), "summary": summary}, "summary": summary},
    )
    _tally(session, "off")
    _publish(session, list(session.devices.values_list("pk", flat=True)), "stop_publish")
    session_id = session.pk
    transaction.on_commit(
        lambda: hero_switch_announce(session_id=session_id, device_id=None, cause="stopped"),
        robust=True,
    )
    return session


@transaction.atomic
def session_ghost_mode_set(*, session_id: UUID, mode: str, by: str) -> PhotoshootSession:
    """Switch Ghost off, to supervised or to autopilot. Switching it off ends the proposals
    still waiting; the change itself is on the record. Setting the current mode changes
    nothing."""
    session = session_lock(session_id)
    if mode not in PhotoshootSession.GhostMode.values:
        raise SessionRefused(
            f"Ghost mode is one of {', '.join(PhotoshootSession.GhostMode.values)}, not {mode!r}."
        )
    if session.status == PhotoshootSession.Status.ENDED:
        raise SessionRefused(f"“{session.name}” has ended; its Ghost mode is kept as it was.")
    if session.ghost_mode == mode:
        return session
    previous = session.ghost_mode
    session.ghost_mode = mode
    session.save(update_fields=["ghost_mode"])
    ledger.record(
        type="session.ghost_mode_changed",
        session_id=session.pk,
        payload={"from": previous, "to": mode, "by": by},
    )
    if mode == PhotoshootSession.GhostMode.OFF:
        from director import ghost

        ghost.proposals_end_for_session(session_id=session.pk, reason="ghost_off")
    return session


@transaction.atomic
def session_hero_switch(
    *, session_id: UUID, device_id: UUID, switched_by: str
) -> PhotoshootSession:
    """Put another camera of a live session on air: the new hero's tally goes live, the old
    one's off. Idempotent: switching to the current hero changes nothing."""
    session = session_lock(session_id)
    if session.status != PhotoshootSession.Status.LIVE:
        raise SessionRefused(
            f"“{session.name}” is not live; start it before choosing what goes on air."
        )
    device = session.devices.filter(pk=device_id).first()
    if device is None:
        raise SessionRefused(
            f"That camera does not take part in “{session.name}”; only its cameras can go on air."
        )
    if session.hero_id == device.pk:
        return session
    if not device.is_online:
        raise SessionRefused(f"{device.name} is offline; bring it back before putting it on air.")
    previous = session.hero_id
    session.hero = device
    session.save(update_fields=["hero"])
    switched = ledger.record(
        type="hero.switched",
        session_id=session.pk,
        device_id=device.pk,
        payload={
            "from": str(previous) if previous else None,
            "to": str(device.pk),
            "by": switched_by,
        },
    )
    if previous is not None:
        device_services.command_issue(
            device_id=previous,
            type="tally",
            args={"state": "off"},
            session_id=session.pk,
            issued_by=switched_by,
        )
    _tally(session, "live")
    _announce_hero(session, cause=switched.event_id)
    return session


@transaction.atomic
def hero_on_air_record(
    *,
    session_id: UUID,
    device_id: UUID,
    cause: str,
    first_frame_at: float,
    after_ms: float,
    relay_ms: float,
) -> None:
    """The relay sent the first frame of a new hero: put the time on the record, next to the
    switch (or start) that chose it. Nothing is recorded for a session that has ended."""
    session = PhotoshootSession.objects.get(pk=session_id)
    if session.status != PhotoshootSession.Status.LIVE:
        return
    ledger.record(
        type="hero.on_air",
        session_id=session.pk,
        device_id=device_id,
        payload={
            "to": str(device_id),
            "cause": cause,
            "first_frame_at": first_frame_at,
            "after_ms": round(after_ms, 1),
            "relay_ms": round(relay_ms, 1),
        },
    )


# A camera that was asked to publish and is still not publishing is asked again after this.
PUBLISH_RETRY_S = 30.0


def sessions_publish_reconcile(*, now_for: Collection[UUID] = ()) -> int:
    """Ask every online camera of a live session that is not publishing to publish, unless it
    was asked within PUBLISH_RETRY_S (a camera that cannot is not nagged); the cameras in
    `now_for` are asked at once all the same. After a server restart, a capture app restart or
    a dropped connection the feeds come back by themselves. Returns how many were asked."""
    cutoff = timezone.now() - timedelta(seconds=PUBLISH_RETRY_S)
    idle = Device.objects.filter(
        photoshoot_sessions__status=PhotoshootSession.Status.LIVE,
        status=Device.Status.ONLINE,
        publishing_since__isnull=True,
    ).values_list("pk", "photoshoot_sessions__pk")
    asked = 0
    for device_id, session_id in list(idle):
        with transaction.atomic():
            recently = DeviceCommand.objects.filter(
                device_id=device_id, type="start_publish", issued_at__gte=cutoff
            ).exists()
            if recently and device_id not in now_for:
                continue
            device_services.command_issue(
                device_id=device_id,
                type="start_publish",
                args={},
                session_id=session_id,
                issued_by="director",
            )
            asked += 1
    return asked


def hero_relay_started(*, lost: Collection[tuple[UUID, str]]) -> list[UUID]:
    """The hero relay (re)started, and the publishes `lost` ((device id, publish id) pairs the
    database showed running that the new relay does not hold) died with the relay before it:
    a relay that was killed, not stopped, recorded no stop, and the cameras would only notice
    when ICE consent runs out (about 30 s). Each is ended (`relay_restarted`) and its camera,
    if a live session has it, asked to publish again at once. A publish that replaced a lost
    one meanwhile is never ended: the stop names the lost publish's id. Returns the devices
    whose publish was ended."""
    ended: list[UUID] = []
    for device_id, publish_id in lost:
        session = selectors.live_session_for_device(device_id)
        stopped = device_services.device_publish_stop(
            device_id=device_id,
            publish_id=publish_id,
            reason="relay_restarted",
            session_id=session.pk if session is not None else None,
        )
        if stopped is not None:
            ended.append(device_id)
    if ended:
        sessions_publish_reconcile(now_for=set(ended))
    return ended


def _announce_hero(session: PhotoshootSession, *, cause: UUID) -> None:
    """After commit, the relay repoints the session's output at its hero."""
    if session.hero_id is None:
        return
    session_id, hero_id = session.pk, session.hero_id
    transaction.on_commit(
        lambda: hero_switch_announce(session_id=session_id, device_id=hero_id, cause=cause),
        robust=True,
    )


def _publish(session: PhotoshootSession, device_ids: list[UUID], command: str) -> None:
    for device_id in device_ids:
        device_services.command_issue(
            device_id=device_id,
            type=command,
            args={},
            session_id=session.pk,
            issued_by="director",
        )


def _tally(session: PhotoshootSession, state: str) -> None:
    """The hero's tally light: red while its session is live, so talent and crew know which
    camera is live; off when the session ends."""
    if session.hero_id is not None:
        device_services.command_issue(
            device_id=session.hero_id,
            type="tally",
            args={"state": state},
            session_id=session.pk,
            issued_by="director",
        )
