"""Each device's clock against the server's, fitted over its recent round trips.

Heartbeats keep the best recent sample as the live offset (devices/clock.py). Every few
seconds this service fits offset and drift over the last FIT_WINDOW_S of samples, low-delay
exchanges weighted most, and keeps the fit on the device: the card shows it with its
uncertainty, commands carry the offset it gives for now, and the export maps device times with
the same model.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from devices import clock
from devices.models import ClockSample, Device

# The most samples a fit reads: half an hour of 2 s heartbeats.
FIT_MAX_SAMPLES = 900


def device_clock_fit(*, device_id: object, now: datetime | None = None) -> clock.Fit | None:
    """Fit one device's clock from its samples of the last FIT_WINDOW_S and keep the fit."""
    now = now or timezone.now()
    since = now - timedelta(seconds=clock.FIT_WINDOW_S)
    rows = (
        ClockSample.objects.filter(device_id=device_id, at__gte=since)
        .order_by("-at")
        .values_list("sent_at", "received_at", "server_time", "returned_at")[:FIT_MAX_SAMPLES]
    )
    fitted = clock.fit([clock.Sample(*row) for row in rows])
    if fitted is None:
        return None
    with transaction.atomic():
        Device.objects.filter(pk=device_id).update(
            clock_fit_offset_s=fitted.offset_s,
            clock_drift_ppm=round(fitted.drift_ppm, 3),
            clock_uncertainty_s=fitted.uncertainty_s,
            clock_fit_at=datetime.fromtimestamp(fitted.at, tz=UTC),
        )
    return fitted


def device_clocks_fit() -> int:
    """Fit every online device's clock; returns how many had enough samples."""
    device_ids = list(
        Device.objects.filter(status=Device.Status.ONLINE).values_list("pk", flat=True)
    )
    return sum(device_clock_fit(device_id=pk) is not None for pk in device_ids)
