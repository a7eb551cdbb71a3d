from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from devices.models import Device, DeviceCommand
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


def command_pending_count(*, device_id: UUID) -> int:
    return DeviceCommand.objects.filter(
        device_id=device_id,
        state=DeviceCommand.State.QUEUED,
        expires_at__gt=timezone.now(),
    ).count()
