"""Commands to devices: issue, deliver once, acknowledge, expire. Nothing else writes
`DeviceCommand.state`.

Delivery is a claim: the queued rows are locked, checked against their expiry and marked
delivered in one transaction, so a socket and a long poll of the same device (or two
server processes) never both hand out the same command, and nothing is handed out after
its `expires_at`. A command delivered but never acknowledged expires like a queued one.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

import ledger
from devices import broadcast
from devices.lenses import LensRefused, lens_plan
from devices.models import Device, DeviceCommand

State = DeviceCommand.State
Type = DeviceCommand.Type

# Recent deliveries looked at when choosing how far ahead a capture-all fires.
LEAD_HISTORY = 10
LEAD_SAFETY = 2.0
LEAD_MARGIN_S = 0.1
# After its fire time a capture still has this long to be acknowledged.
CAPTURE_ACK_WINDOW_S = 10.0
TALLY_STATES = frozenset(Device.Tally.values)
ACK_STATES = frozenset({State.DONE, State.FAILED, State.REJECTED})


class CommandRefused(Exception):
    """The command cannot be sent; the message tells the operator why (409 / a toast)."""


class CommandNotFound(Exception):
    """No such command for this device (404)."""


class CommandConflict(Exception):
    """The acknowledgement contradicts the command's state (409)."""


def unix(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _validated_args(device: Device, type: str, args: dict[str, Any]) -> dict[str, Any]:
    if type == Type.SET_LENS:
        zoom = args.get("zoom")
        if isinstance(zoom, bool) or not isinstance(zoom, int | float):
            raise CommandRefused("set_lens needs a zoom, such as 0.5, 1 or 3.")
        try:
            plan = lens_plan(device.lenses, float(zoom), device_name=device.name)
        except LensRefused as exc:
            raise CommandRefused(str(exc)) from None
        return {"zoom": float(zoom), "lens": plan.lens, "digital_zoom": plan.digital_zoom}
    if type == Type.SET_FLIP:
        horizontal, vertical = args.get("horizontal"), args.get("vertical")
        if not isinstance(horizontal, bool) or not isinstance(vertical, bool):
            raise CommandRefused("set_flip needs horizontal and vertical, each true or false.")
        return {"horizontal": horizontal, "vertical": vertical}
    if type == Type.TALLY:
        state = args.get("state")
        if state not in TALLY_STATES:
            raise CommandRefused(f"tally needs a state: {', '.join(sorted(TALLY_STATES))}.")
        return {"state": state}
    if type in (Type.CAPTURE_STILL, Type.START_PUBLISH, Type.STOP_PUBLISH):
        return {}
    raise CommandRefused(f"{type!r} is not a command devices understand.")


def _create(
    *,
    device: Device,
    type: str,
    args: dict[str, Any],
    now: datetime,
    fire_at: datetime | None,
    expires_at: datetime,
    batch: UUID | None,
    session_id: UUID | None,
    issued_by: str,
) -> DeviceCommand:
    command = DeviceCommand.objects.create(
        device=device,
        type=type,
        args=args,
        issued_at=now,
        fire_at=fire_at,
        expires_at=expires_at,
        batch=batch,
        session_id=session_id,
        issued_by=issued_by[:150],
    )
    ledger.record(
        type="command.sent",
        device_id=device.pk,
        session_id=session_id,
        occurred_at=now,
        payload={
            "command_id": str(command.pk),
            "command": type,
            "args": args,
            "fire_at": unix(fire_at),
            "expires_at": unix(expires_at),
            "batch": str(batch) if batch else None,
            "issued_by": issued_by,
        },
    )
    if type == Type.TALLY:
        device.tally = args["state"]
        device.save(update_fields=["tally"])
    device_id = device.pk
    transaction.on_commit(
        functools.partial(broadcast.commands_ready, device_id=device_id), robust=True
    )
    transaction.on_commit(
        functools.partial(broadcast.device_changed, device_id=device_id), robust=True
    )
    return command


@transaction.atomic
def command_issue(
    *,
    device_id: UUID,
    type: str,
    args: dict[str, Any] | None = None,
    issued_by: str = "",
    session_id: UUID | None = None,
    ttl_s: float | None = None,
) -> DeviceCommand:
    """Queue one command for one device and wake whoever delivers to it.

    The arguments are checked against the device first: a `set_lens` is turned into the lens
    plan (0.5x picks the ultra-wide; a device without one is refused, never given 1x). A device
    that is offline gets the command when it comes back, unless it has expired by then.
    """
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    checked = _validated_args(device, type, args or {})
    now = timezone.now()
    ttl = settings.MOTIONMIX_COMMAND_TTL_S if ttl_s is None else ttl_s
    if not math.isfinite(ttl) or ttl <= 0:
        raise CommandRefused("A command must live for a positive number of seconds.")
    return _create(
        device=device,
        type=type,
        args=checked,
        now=now,
        fire_at=None,
        expires_at=now + timedelta(seconds=ttl),
        batch=None,
        session_id=session_id,
        issued_by=issued_by,
    )


def capture_lead_s(devices: Sequence[Device]) -> float:
    """How far ahead a capture-all must fire for every camera to have the command in time:
    twice the slowest recent delivery (or clock round trip) among them, plus a margin,
    within the configured bounds."""
    slowest = 0.0
    for device in devices:
        recent = DeviceCommand.objects.filter(device=device, delivered_at__isnull=False).order_by(
            "-issued_at"
        )[:LEAD_HISTORY]
        for issued_at, delivered_at in recent.values_list("issued_at", "delivered_at"):
            slowest = max(slowest, (delivered_at - issued_at).total_seconds())
        if device.clock_delay_s is not None:
            slowest = max(slowest, device.clock_delay_s)
    lead = LEAD_SAFETY * slowest + LEAD_MARGIN_S
    return min(
        settings.MOTIONMIX_CAPTURE_MAX_LEAD_S, max(settings.MOTIONMIX_CAPTURE_MIN_LEAD_S, lead)
    )


@transaction.atomic
def commands_issue_capture(
    *,
    device_ids: Sequence[UUID],
    issued_by: str = "",
    session_id: UUID | None = None,
    synchronized: bool = True,
) -> list[DeviceCommand]:
    """`capture_still` for several cameras, as one batch.

    Synchronized (capture all), every command carries the same `fire_at` on the server's
    clock, far enough ahead for the slowest camera (`capture_lead_s`); each device fires at
    `fire_at` mapped onto its own clock with the offset it is sent. Offline cameras are
    refused by name rather than left to expire.
    """
    if not device_ids:
        raise CommandRefused("No cameras to capture from: pair a camera or bring one online.")
    devices = list(
        Device.objects.select_for_update(no_key=True)
        .filter(pk__in=device_ids)
        .order_by("name", "pk")
    )
    offline = [d.name for d in devices if not d.is_online]
    if offline:
        raise CommandRefused(
            f"{', '.join(offline)} {'is' if len(offline) == 1 else 'are'} offline; "
            "bring them back or capture from the others."
        )
    now = timezone.now()
    batch = uuid.uuid4() if len(devices) > 1 or synchronized else None
    fire_at = now + timedelta(seconds=capture_lead_s(devices)) if synchronized else None
    expires_at = (fire_at or now) + timedelta(seconds=CAPTURE_ACK_WINDOW_S)
    return [
        _create(
            device=device,
            type=Type.CAPTURE_STILL,
            args={"fire_at": unix(fire_at)} if fire_at else {},
            now=now,
            fire_at=fire_at,
            expires_at=expires_at,
            batch=batch,
            session_id=session_id,
            issued_by=issued_by,
        )
        for device in devices
    ]


@transaction.atomic
def command_claim(*, device_id: UUID, via: str, limit: int = 20) -> list[DeviceCommand]:
    """Hand the device its queued, unexpired commands, oldest first, marking them delivered.

    Exactly once: the rows are locked and skipped by a concurrent claim. A command whose
    `expires_at` has passed is never handed out, even if the expiry sweep has not reached it.
    """
    now = timezone.now()
    claimed = list(
        DeviceCommand.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(device_id=device_id, state=State.QUEUED, expires_at__gt=now)
        .order_by("issued_at")[:limit]
    )
    if not claimed:
        return []
    for command in claimed:
        command.state = State.DELIVERED
        command.delivered_at = now
        command.delivered_via = via
        ledger.record(
            type="command.delivered",
            device_id=device_id,
            session_id=command.session_id,
            occurred_at=now,
            payload={
                "command_id": str(command.pk),
                "command": command.type,
                "via": via,
                "latency_s": round((now - command.issued_at).total_seconds(), 4),
            },
        )
    DeviceCommand.objects.bulk_update(claimed, ["state", "delivered_at", "delivered_via"])
    transaction.on_commit(
        functools.partial(broadcast.device_changed, device_id=device_id), robust=True
    )
    return claimed


@transaction.atomic
def command_ack(
    *,
    device_id: UUID,
    command_id: UUID,
    status: str,
    detail: str = "",
    done_at: float | None = None,
) -> tuple[DeviceCommand, bool]:
    """Record the device's answer. Returns the command and whether anything changed.

    Idempotent: the same answer again changes nothing. A different answer to a finished
    command, or any answer to an expired one, is a conflict: the operator already saw the
    outcome, and the device must not act on an expired command.
    """
    if status not in ACK_STATES:
        raise CommandConflict(f"status must be done, failed or rejected, not {status!r}.")
    command = (
        DeviceCommand.objects.select_for_update(no_key=True)
        .filter(pk=command_id, device_id=device_id)
        .first()
    )
    if command is None:
        raise CommandNotFound(f"This device has no command {command_id}.")
    if command.state == status:
        return command, False
    if command.state == State.EXPIRED:
        raise CommandConflict(
            f"Command {command_id} expired at {command.expires_at:%H:%M:%S.%f}"[:-3]
            + "; it was not to be carried out after that."
        )
    if not command.is_open:
        raise CommandConflict(
            f"Command {command_id} is already {command.state}; it cannot become {status}."
        )
    now = timezone.now()
    command.state = status
    command.finished_at = now
    command.done_at = done_at
    command.detail = detail[:2000]
    if command.delivered_at is None:
        # Acknowledged before our claim committed (a delivery that raced): it was delivered.
        command.delivered_at = now
    command.save(update_fields=["state", "finished_at", "done_at", "detail", "delivered_at"])
    event: dict[str, Any] = {
        "command_id": str(command.pk),
        "command": command.type,
        "detail": command.detail,
        "done_at": done_at,
    }
    if status == State.DONE:
        ledger.record(
            type="command.acked", device_id=device_id, session_id=command.session_id, payload=event
        )
    else:
        ledger.record(
            type="command.failed",
            device_id=device_id,
            session_id=command.session_id,
            payload={**event, "status": status},
        )
    transaction.on_commit(
        functools.partial(broadcast.device_changed, device_id=device_id), robust=True
    )
    return command, True


def _mark_expired(command: DeviceCommand, *, reason: str | None = None) -> None:
    """The one way a command becomes expired: state, ledger event, card push."""
    payload: dict[str, Any] = {
        "command_id": str(command.pk),
        "command": command.type,
        "was": command.state,
    }
    if reason is not None:
        payload["reason"] = reason
    command.state = State.EXPIRED
    command.finished_at = timezone.now()
    command.save(update_fields=["state", "finished_at"])
    ledger.record(
        type="command.expired",
        device_id=command.device_id,
        session_id=command.session_id,
        payload=payload,
    )
    transaction.on_commit(
        functools.partial(broadcast.device_changed, device_id=command.device_id), robust=True
    )


@transaction.atomic
def command_expire(*, command_id: UUID) -> DeviceCommand:
    """Expire a command whose time ran out. Idempotent; a finished command is left alone."""
    command = DeviceCommand.objects.select_for_update(no_key=True).get(pk=command_id)
    if command.is_open and command.expires_at <= timezone.now():
        _mark_expired(command)
    return command


@transaction.atomic
def commands_expire_for_session(*, session_id: UUID) -> int:
    """A stopped session's open commands end here: none is delivered or acted on after the
    session. Returns how many it ended."""
    open_commands = list(
        DeviceCommand.objects.select_for_update(no_key=True).filter(
            session_id=session_id, state__in=DeviceCommand.OPEN_STATES
        )
    )
    for command in open_commands:
        _mark_expired(command, reason="session_stopped")
    return len(open_commands)


def commands_expire_due() -> int:
    """Expire every open command past its time (the sweep); returns how many it expired."""
    due = list(
        DeviceCommand.objects.filter(
            state__in=DeviceCommand.OPEN_STATES, expires_at__lte=timezone.now()
        )
        .order_by(F("expires_at").asc())
        .values_list("pk", flat=True)[:500]
    )
    expired = 0
    for command_id in due:
        expired += command_expire(command_id=command_id).state == State.EXPIRED
    return expired
