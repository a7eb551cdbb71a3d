"""A camera's video publish to the hero relay (WHIP): started, measured, stopped.

The relay owns the peer connections; these services own what the rest of the system knows of
them (the card's "publishing 1280 by 720 at 30 fps", the ledger). Every publish has an id, so a
late report about a publish that was already replaced changes nothing.
"""

from __future__ import annotations

from uuid import UUID

from django.db import transaction
from django.utils import timezone

import ledger
from devices import broadcast
from devices.models import Device

# A measured frame rate is written when it moves by at least this much (frames per second).
FPS_STEP = 1.0

STOP_REASONS = frozenset(
    {
        "unpublished",
        "replaced",
        "ice_failed",
        "no_media",
        "refused",
        "shutdown",
        "offline",
        "relay_restarted",
    }
)


def _push(device_id: UUID) -> None:
    transaction.on_commit(lambda: broadcast.device_changed(device_id=device_id), robust=True)


@transaction.atomic
def device_publish_start(
    *, device_id: UUID, publish_id: str, codec: str, session_id: UUID | None = None
) -> Device:
    """The relay accepted a publish from the device. A publish that was still running is
    replaced: it is recorded as stopped first, so the ledger never shows two at once."""
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    replaced = device.publish_id or None
    if replaced == publish_id:
        return device
    now = timezone.now()
    if replaced is not None:
        _record_stop(device, reason="replaced", frames=None, session_id=session_id)
    device.publish_id = publish_id
    device.publishing_since = now
    device.publish_codec = codec
    device.publish_width = device.publish_height = device.publish_fps = None
    device.save(update_fields=[*_PUBLISH_FIELDS])
    ledger.record(
        type="device.publish_started",
        session_id=session_id,
        device_id=device.pk,
        occurred_at=now,
        payload={"publish_id": publish_id, "codec": codec, "replaced": replaced},
    )
    _push(device.pk)
    return device


@transaction.atomic
def device_publish_measure(
    *, device_id: UUID, publish_id: str, width: int, height: int, fps: float
) -> bool:
    """What the relay receives: frame size and rate. Written only when the size changes or the
    rate moves by FPS_STEP, so a steady feed costs nothing; no ledger event. Returns whether
    anything was written."""
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    if device.publish_id != publish_id:
        return False
    fps = round(fps, 1)
    same_size = (device.publish_width, device.publish_height) == (width, height)
    same_rate = device.publish_fps is not None and abs(device.publish_fps - fps) < FPS_STEP
    if same_size and same_rate:
        return False
    device.publish_width, device.publish_height, device.publish_fps = width, height, fps
    device.save(update_fields=["publish_width", "publish_height", "publish_fps"])
    _push(device.pk)
    return True


@transaction.atomic
def device_publish_stop(
    *,
    device_id: UUID,
    publish_id: str,
    reason: str,
    frames: int | None = None,
    session_id: UUID | None = None,
) -> Device | None:
    """The publish ended: the device unpublished, its connection failed, no media came, or the
    server is stopping. A stop for a publish that is no longer the device's current one (it
    was replaced meanwhile) changes nothing and returns None."""
    if reason not in STOP_REASONS:
        raise ValueError(f"unknown publish stop reason {reason!r}")
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    if device.publish_id != publish_id:
        return None
    _record_stop(device, reason=reason, frames=frames, session_id=session_id)
    device.publish_id = ""
    device.publishing_since = None
    device.publish_codec = ""
    device.publish_width = device.publish_height = device.publish_fps = None
    device.save(update_fields=[*_PUBLISH_FIELDS])
    _push(device.pk)
    return device


_PUBLISH_FIELDS = (
    "publish_id",
    "publishing_since",
    "publish_codec",
    "publish_width",
    "publish_height",
    "publish_fps",
)


def _record_stop(
    device: Device, *, reason: str, frames: int | None, session_id: UUID | None
) -> None:
    started = device.publishing_since
    ledger.record(
        type="device.publish_stopped",
        session_id=session_id,
        device_id=device.pk,
        payload={
            "publish_id": device.publish_id,
            "reason": reason,
            "duration_s": round((timezone.now() - started).total_seconds(), 3) if started else None,
            "frames": frames,
        },
    )
