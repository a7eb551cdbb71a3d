"""Pairing, registration, heartbeats and presence. Nothing else writes these fields."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

import ledger
from devices import broadcast, clock
from devices.models import ClockSample, Device, PairingCode, PairingFailure
from devices.services.placement import device_place

# No 0/O, 1/I/L, 2/Z, 5/S, 8/B: the code is read off a screen and typed on a phone.
PAIRING_ALPHABET = "34679ACDEFGHJKMNPQRTUVWXY"
PAIRING_CODE_LENGTH = 6
# A beat whose device clock is at most this much behind the last one was overtaken in flight.
REORDER_WINDOW_S = 30.0
TOKEN_PREFIX = "mmd_"  # noqa: S105 - a label on every token, not a secret
# Wrong pairing codes are kept this long (the admin lists them), then pruned.
PAIRING_FAILURES_KEPT = timedelta(days=1)


class PairingRefused(Exception):
    """The pairing code is wrong or expired (403)."""


class TooManyPairingAttempts(Exception):
    """Too many bad pairing codes from one address (429)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"Too many wrong pairing codes from this address; try again in {retry_after_s} s."
        )
        self.retry_after_s = retry_after_s


class HeartbeatRejected(ValueError):
    """The heartbeat contradicts what the device registered (400)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_pairing_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


# --- Pairing --------------------------------------------------------------------------------


@transaction.atomic
def pairing_code_rotate(*, reason: str = "operator") -> PairingCode:
    """Retire the current code and issue a new one; any phone still holding the old code must
    read the new one. Other devices keep their tokens."""
    now = timezone.now()
    PairingCode.objects.select_for_update(no_key=True).filter(retired_at__isnull=True).update(
        retired_at=now
    )
    code = PairingCode.objects.create(
        code="".join(secrets.choice(PAIRING_ALPHABET) for _ in range(PAIRING_CODE_LENGTH)),
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MOTIONMIX_PAIRING_CODE_TTL_S),
    )
    ledger.record(type="pairing.rotated", payload={"reason": reason})
    transaction.on_commit(broadcast.pairing_changed, robust=True)
    return code


def pairing_code_get_or_rotate() -> PairingCode:
    """The valid code; issues a new one when the current one has expired (or none exists)."""
    with transaction.atomic():
        current = (
            PairingCode.objects.select_for_update(no_key=True)
            .filter(retired_at__isnull=True)
            .order_by("-created_at")
            .first()
        )
        if current is not None and current.expires_at > timezone.now():
            return current
        return pairing_code_rotate(reason="expired" if current else "first")


def _pairing_failures_recent(address: str, now: datetime) -> list[datetime]:
    window = timedelta(seconds=settings.MOTIONMIX_PAIRING_FAILURE_WINDOW_S)
    return list(
        PairingFailure.objects.filter(address=address, at__gt=now - window)
        .order_by("at")
        .values_list("at", flat=True)
    )


def _pairing_check(*, code: str, address: str) -> None:
    now = timezone.now()
    failures = _pairing_failures_recent(address, now)
    if len(failures) >= settings.MOTIONMIX_PAIRING_MAX_FAILURES:
        oldest = failures[-settings.MOTIONMIX_PAIRING_MAX_FAILURES]
        window = settings.MOTIONMIX_PAIRING_FAILURE_WINDOW_S
        retry_after = max(1, int((oldest - now).total_seconds() + window) + 1)
        raise TooManyPairingAttempts(retry_after)
    current = pairing_code_get_or_rotate()
    # Bytes, not str: compare_digest raises TypeError on a str that is not ASCII.
    if not hmac.compare_digest(normalize_pairing_code(code).encode(), current.code.encode()):
        # Its own transaction: the failure must count even though the register call fails.
        with transaction.atomic():
            PairingFailure.objects.create(address=address, at=now)
            # Past the window a failure no longer counts; the admin keeps a day of them.
            window = timedelta(seconds=settings.MOTIONMIX_PAIRING_FAILURE_WINDOW_S)
            kept = max(PAIRING_FAILURES_KEPT, window)
            PairingFailure.objects.filter(at__lt=now - kept).delete()
        raise PairingRefused(
            "The pairing code is wrong or has expired. Read the current code off the "
            "Live Director's registry page."
        )


# --- Registration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    device: Device
    token: str
    created: bool


def device_register(
    *,
    pairing_code: str,
    address: str,
    install_id: str,
    name: str,
    kind: str,
    model: str,
    os_version: str,
    app_version: str,
    lenses: list[dict[str, Any]],
) -> Registration:
    """Register a device, or re-register one with the same install id.

    Re-registering keeps the device's id, placement and history and issues a new token; the
    old token stops working at once. The plain token is returned once and never stored.
    """
    _pairing_check(code=pairing_code, address=address)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        device = Device.objects.select_for_update(no_key=True).filter(install_id=install_id).first()
        created = device is None
        if device is None:
            device = Device(install_id=install_id, registered_at=now)
        device.name = name
        device.kind = kind
        device.model = model
        device.os_version = os_version
        device.app_version = app_version
        device.lenses = lenses
        device.token_hash = hash_token(token)
        device.status = Device.Status.ONLINE
        device.last_seen_at = now
        device.save()
        ledger.record(
            type="device.registered",
            device_id=device.pk,
            payload={
                "name": name,
                "kind": kind,
                "model": model,
                "install_id": install_id,
                "re_registered": not created,
            },
        )
        device_id = device.pk
        transaction.on_commit(lambda: broadcast.device_changed(device_id=device_id), robust=True)
    return Registration(device=device, token=token, created=created)


# --- Heartbeats and presence ----------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    """The device's previous heartbeat exchange, for the clock estimate (see devices/clock.py)."""

    sent_at: float
    received_at: float
    server_time: float
    returned_at: float


@dataclass(frozen=True)
class ReportedPlacement:
    azimuth_deg: float | None = None
    distance_m: float | None = None
    height_m: float | None = None


@dataclass(frozen=True)
class Heartbeat:
    sent_at: float
    battery: float
    charging: bool
    thermal: str
    lens: str
    zoom: float
    orientation: str
    flip_horizontal: bool
    flip_vertical: bool
    storage_free_mb: int
    fps: float
    round_trip: RoundTrip | None = None
    placement: ReportedPlacement | None = None


@dataclass(frozen=True)
class BeatIn:
    device_id: UUID
    beat: Heartbeat
    received_at: datetime


# What a heartbeat writes: presence, and the state the device reports.
PRESENCE_FIELDS = ("last_seen_at", "status")
STATE_FIELDS = (
    "last_sent_at",
    "battery",
    "charging",
    "thermal",
    "lens",
    "zoom",
    "orientation",
    "flip_horizontal",
    "flip_vertical",
    "storage_free_mb",
    "fps",
    "clock_offset_s",
    "clock_delay_s",
    "clock_sampled_at",
)


def device_heartbeat(*, device_id: UUID, beat: Heartbeat, received_at: datetime) -> Device:
    """One heartbeat: `device_heartbeats_record` with a batch of one."""
    outcome = device_heartbeats_record(
        beats=[BeatIn(device_id=device_id, beat=beat, received_at=received_at)]
    )[0]
    if isinstance(outcome, str):
        raise HeartbeatRejected(outcome)
    return outcome


@transaction.atomic
def device_heartbeats_record(*, beats: list[BeatIn]) -> list[Device | str]:
    """Store what devices report, in arrival order, and bring offline devices back online.

    Returns, per beat, the device as stored or the reason the beat was refused; a refused
    beat changes nothing and does not stop the others. All rows are locked at once and written
    with one statement, so a batch of a few hundred beats costs about what one did.

    Every accepted beat refreshes presence. A beat overtaken by a newer one (its device clock a
    little behind the last stored) does not roll the reported state back; a device clock that
    stepped back further than the reorder window is a clock reset, and is taken.
    """
    devices = {
        d.pk: d
        # By name, as every lock of several cameras is taken (director/locking.py).
        for d in Device.objects.select_for_update(no_key=True)
        .filter(pk__in={b.device_id for b in beats})
        .order_by("name", "pk")
    }
    outcomes: list[Device | str] = []
    came_online: dict[UUID, float | None] = {}
    touched: dict[UUID, Device] = {}
    samples: list[ClockSample] = []
    placed: list[tuple[UUID, ReportedPlacement]] = []
    for item in beats:
        device = devices.get(item.device_id)
        if device is None:
            outcomes.append("this device is no longer registered; register again.")
            continue
        beat = item.beat
        if device.lenses and beat.lens not in device.lens_ids:
            outcomes.append(
                f"lens {beat.lens!r} is not one of this device's lenses "
                f"({', '.join(device.lens_ids)}); re-register if the hardware changed."
            )
            continue
        if device.status == Device.Status.OFFLINE and device.pk not in came_online:
            previous = device.last_seen_at
            came_online[device.pk] = (
                (item.received_at - previous).total_seconds() if previous else None
            )
        device.last_seen_at = item.received_at
        device.status = Device.Status.ONLINE
        behind = (device.last_sent_at or 0.0) - beat.sent_at
        if not 0 < behind <= REORDER_WINDOW_S:
            _apply_beat(device, beat)
        if beat.placement is not None and _placement_differs(device, beat.placement):
            placed.append((device.pk, beat.placement))
        sample = _clock_update(device, item)
        if sample is not None:
            samples.append(sample)
        touched[device.pk] = device
        outcomes.append(device)
    _write_heartbeat_fields(list(touched.values()))
    if samples:
        ClockSample.objects.bulk_create(samples)
    for device_id, placement in placed:
        # Rare (a device that moved): through the one placement service, in this transaction.
        device_place(
            device_id=device_id,
            azimuth_deg=placement.azimuth_deg,
            distance_m=placement.distance_m,
            height_m=placement.height_m,
            source=Device.PlacementSource.DEVICE,
        )
    for device_id, offline_for in came_online.items():
        ledger.record(
            type="device.online", device_id=device_id, payload={"offline_for_s": offline_for}
        )
    if touched:
        transaction.on_commit(
            functools.partial(broadcast.devices_changed, device_ids=list(touched)), robust=True
        )
    return outcomes


def _placement_differs(device: Device, placement: ReportedPlacement) -> bool:
    reported = {
        "azimuth_deg": None if placement.azimuth_deg is None else placement.azimuth_deg % 360,
        "distance_m": placement.distance_m,
        "height_m": placement.height_m,
    }
    return any(
        value is not None
        and (getattr(device, name) is None or abs(getattr(device, name) - value) > 0.01)
        for name, value in reported.items()
    )


def _clock_update(device: Device, item: BeatIn) -> ClockSample | None:
    """Fold this beat into the device's clock estimate; the round-trip sample to keep, if any.

    An implausible round trip (times out of order, too slow, not a recent answer) is ignored:
    the beat itself is good, only its clock report is not.
    """
    current = None
    if device.clock_offset_s is not None and device.clock_sampled_at is not None:
        current = clock.Estimate(
            device.clock_offset_s, device.clock_delay_s, device.clock_sampled_at
        )
    trip = item.beat.round_trip
    kept = None
    if trip is not None:
        sample = clock.Sample(trip.sent_at, trip.received_at, trip.server_time, trip.returned_at)
        if clock.sample_problem(sample, now=item.received_at.timestamp()) is None:
            candidate = clock.Estimate(sample.offset_s, sample.delay_s, item.received_at)
            kept = ClockSample(
                device_id=device.pk,
                at=item.received_at,
                sent_at=sample.sent_at,
                received_at=sample.received_at,
                server_time=sample.server_time,
                returned_at=sample.returned_at,
                offset_s=sample.offset_s,
                delay_s=sample.delay_s,
            )
        else:
            candidate = None
    else:
        one_way = item.beat.sent_at - item.received_at.timestamp()
        candidate = clock.Estimate(one_way, None, item.received_at)
    if candidate is not None and clock.better(current, candidate):
        device.clock_offset_s = candidate.offset_s
        device.clock_delay_s = candidate.delay_s
        device.clock_sampled_at = candidate.sampled_at
    return kept


def _apply_beat(device: Device, beat: Heartbeat) -> None:
    device.last_sent_at = beat.sent_at
    device.battery = beat.battery
    device.charging = beat.charging
    device.thermal = beat.thermal
    device.lens = beat.lens
    device.zoom = beat.zoom
    device.orientation = beat.orientation
    device.flip_horizontal = beat.flip_horizontal
    device.flip_vertical = beat.flip_vertical
    device.storage_free_mb = beat.storage_free_mb
    device.fps = beat.fps


def _write_heartbeat_fields(devices: list[Device]) -> None:
    """One UPDATE statement run for every device (executemany): the ORM's per-row save costs
    a millisecond of Python each, which a fleet beating every second cannot afford."""
    if not devices:
        return
    fields = [Device._meta.get_field(name) for name in (*PRESENCE_FIELDS, *STATE_FIELDS)]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    pk = Device._meta.pk
    assert pk is not None
    # Only quoted names from the model go into the text; every value is a parameter.
    sql = f"UPDATE {quote(Device._meta.db_table)} SET {assignments} WHERE {quote(pk.column)} = %s"  # noqa: S608
    rows = [
        [f.get_db_prep_save(getattr(d, f.attname), connection) for f in fields]
        + [pk.get_db_prep_value(d.pk, connection)]
        for d in devices
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def offline_cutoff(now: datetime | None = None) -> datetime:
    silence = settings.MOTIONMIX_HEARTBEAT_INTERVAL_S * settings.MOTIONMIX_OFFLINE_AFTER_BEATS
    return (now or timezone.now()) - timedelta(seconds=silence)


@transaction.atomic
def device_mark_offline(*, device_id: UUID, reason: str) -> Device:
    """Mark a device offline. Idempotent: a second sweep changes nothing, and a device that
    beat again between the sweep's read and this lock stays online."""
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    if device.status == Device.Status.OFFLINE:
        return device
    if (
        reason == "missed_heartbeats"
        and device.last_seen_at
        and (device.last_seen_at > offline_cutoff())
    ):
        return device
    device.status = Device.Status.OFFLINE
    device.save(update_fields=["status"])
    ledger.record(
        type="device.offline",
        device_id=device.pk,
        payload={"reason": reason, "last_seen_at": device.last_seen_at},
    )
    transaction.on_commit(lambda: broadcast.device_changed(device_id=device_id), robust=True)
    return device
