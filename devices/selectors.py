from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from typing import NamedTuple
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from devices.models import Device, DeviceCommand, PoseBatch
from devices.services import hash_token, offline_cutoff


def device_list(*, include_webcams: bool = True) -> QuerySet[Device]:
    devices = Device.objects.all()
    if not include_webcams:
        devices = devices.exclude(kind=Device.Kind.WEBCAM)
    return devices.order_by("name", "registered_at")


def device_get_by_token(*, token: str) -> Device | None:
    if not token:
        return None
    return Device.objects.filter(token_hash=hash_token(token)).first()


def device_ids_stale() -> list[UUID]:
    """Online devices that have missed enough heartbeats to be marked offline."""
    return list(
        Device.objects.filter(
            status=Device.Status.ONLINE, last_seen_at__lt=offline_cutoff()
        ).values_list("pk", flat=True)
    )


def publishes_open() -> list[tuple[UUID, str]]:
    """(device id, publish id) of every publish the database shows as running."""
    return list(Device.objects.exclude(publish_id="").values_list("pk", "publish_id"))


def command_pending_count(*, device_id: UUID) -> int:
    return DeviceCommand.objects.filter(
        device_id=device_id,
        state=DeviceCommand.State.QUEUED,
        expires_at__gt=timezone.now(),
    ).count()


Keypoint = tuple[float, float, float]


class PoseSample(NamedTuple):
    """One pose frame as stored: `t` on the device's clock, keypoints in `format`'s order."""

    t: float
    format: str
    keypoints: list[Keypoint]


def pose_latest(
    *, device_ids: Iterable[UUID], since_s: float, limit: int | None = None
) -> dict[UUID, list[PoseSample]]:
    """The pose frames of the batches each device sent in the last `since_s` seconds of server
    time (by when they were received), sorted by t on the device's clock; with `limit`, only
    each device's newest `limit` frames. Every device asked for has an entry; an empty list:
    no recent pose."""
    wanted = list(device_ids)
    latest: dict[UUID, list[PoseSample]] = {pk: [] for pk in wanted}
    cutoff = timezone.now() - timedelta(seconds=since_s)
    rows = PoseBatch.objects.filter(device_id__in=wanted, received_at__gte=cutoff).values_list(
        "device_id", "format", "frames"
    )
    for device_id, format, frames in rows:
        for t, values in json.loads(frames):
            keypoints = list(zip(values[0::3], values[1::3], values[2::3], strict=True))
            latest[device_id].append(PoseSample(t, format, keypoints))
    for pk, frames_of_device in latest.items():
        frames_of_device.sort(key=lambda frame: frame.t)
        if limit is not None and len(frames_of_device) > limit:
            latest[pk] = frames_of_device[-limit:]
    return latest
