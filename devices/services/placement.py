"""Where a camera stands around the subject. The operator drags it on the coverage map, or the
device reports it; either way it comes through `device_place`."""

from __future__ import annotations

import math
from uuid import UUID

from django.db import transaction
from django.utils import timezone

import ledger
from devices import broadcast
from devices.models import Device

MAX_DISTANCE_M = 50.0
MIN_HEIGHT_M = -5.0
MAX_HEIGHT_M = 20.0


class PlacementRefused(ValueError):
    """The placement is not possible; the message says which value and why (400)."""


def _check(name: str, value: float | None, low: float, high: float, unit: str) -> None:
    if value is None:
        return
    if not math.isfinite(value) or not low <= value <= high:
        raise PlacementRefused(f"{name} must be between {low:g} and {high:g} {unit}, not {value}.")


@transaction.atomic
def device_place(
    *,
    device_id: UUID,
    azimuth_deg: float | None = None,
    distance_m: float | None = None,
    height_m: float | None = None,
    source: str = Device.PlacementSource.OPERATOR,
) -> Device:
    """Set any of azimuth, distance and height (None keeps the stored value).

    Azimuths are normalized into [0, 360). Setting the same placement again changes nothing
    and records nothing, so a drag that ends where it started is free.
    """
    if azimuth_deg is not None and not math.isfinite(azimuth_deg):
        raise PlacementRefused(f"azimuth must be a number of degrees, not {azimuth_deg}.")
    _check("distance", distance_m, 0.1, MAX_DISTANCE_M, "m")
    _check("height", height_m, MIN_HEIGHT_M, MAX_HEIGHT_M, "m")
    if source not in Device.PlacementSource.values:
        raise PlacementRefused(f"unknown placement source {source!r}.")
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    wanted = {
        "azimuth_deg": None if azimuth_deg is None else round(azimuth_deg % 360.0, 2) % 360.0,
        "distance_m": None if distance_m is None else round(distance_m, 3),
        "height_m": None if height_m is None else round(height_m, 3),
    }
    changed = {
        name: value
        for name, value in wanted.items()
        if value is not None and getattr(device, name) != value
    }
    if not changed:
        return device
    for name, value in changed.items():
        setattr(device, name, value)
    device.placement_source = source
    device.placed_at = timezone.now()
    device.save(update_fields=[*changed, "placement_source", "placed_at"])
    ledger.record(
        type="device.placed",
        device_id=device.pk,
        payload={
            "azimuth_deg": device.azimuth_deg,
            "distance_m": device.distance_m,
            "height_m": device.height_m,
            "source": source,
        },
    )
    transaction.on_commit(lambda: broadcast.device_changed(device_id=device_id), robust=True)
    return device
