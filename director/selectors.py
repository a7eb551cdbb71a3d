from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from devices.models import Device
from devices.selectors import device_list
from director.models import PhotoshootSession


def session_list() -> QuerySet[PhotoshootSession]:
    return PhotoshootSession.objects.select_related("operator").order_by("-created_at")


@dataclass(frozen=True)
class RegistrySummary:
    total: int
    online: int
    warnings: int


def registry_summary(devices: list[Device]) -> RegistrySummary:
    return RegistrySummary(
        total=len(devices),
        online=sum(d.is_online for d in devices),
        warnings=sum(d.is_online and (d.battery_low or d.thermal_warning) for d in devices),
    )


def registry_devices() -> list[Device]:
    return list(device_list())
