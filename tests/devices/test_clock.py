"""Device clocks: the round-trip arithmetic, the estimate kept per device, and placement that a
device reports in its heartbeat."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from devices import clock, services
from devices.longpoll import commands_endpoint
from devices.models import ClockSample, Device, DeviceCommand
from ledger.models import ProductionEvent
from tests.support.api import record_beat, register_device


def _trip(offset: float, out_s: float, back_s: float, now: float) -> dict[str, float]:
    """A round trip against a device clock `offset` ahead, with the given one-way delays."""
    t0_server = now - out_s - back_s - 0.001
    t1 = t0_server + out_s
    t2 = t1 + 0.001
    t3_server = t2 + back_s
    return {
        "sent_at": t0_server + offset,
        "received_at": t1,
        "server_time": t2,
        "returned_at": t3_server + offset,
    }


def test_a_symmetric_round_trip_recovers_the_offset_exactly() -> None:
    sample = clock.Sample(**_trip(0.3, 0.02, 0.02, time.time()))
    assert sample.offset_s == pytest.approx(0.3, abs=1e-6)
    assert sample.delay_s == pytest.approx(0.04, abs=1e-6)


def test_an_asymmetric_round_trip_errs_by_at_most_half_the_delay() -> None:
    sample = clock.Sample(**_trip(-0.2, 0.05, 0.001, time.time()))
    assert abs(sample.offset_s - -0.2) <= sample.delay_s / 2


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"server_time": -0.5}, "server_time is before"),
        ({"returned_at": -10.0}, "returned_at is before"),
        ({"returned_at": 30.0}, "round trip took"),
    ],
)
def test_implausible_round_trips_are_named(change: dict[str, float], problem: str) -> None:
    now = time.time()
    trip = _trip(0.0, 0.01, 0.01, now)
    for key, delta in change.items():
        trip[key] = trip["received_at"] + delta if key == "server_time" else trip[key] + delta
    message = clock.sample_problem(clock.Sample(**trip), now=now)
    assert message is not None and problem in message


def test_the_estimate_keeps_the_fastest_recent_exchange_and_follows_drift() -> None:
    at = timezone.now()
    best = clock.Estimate(0.30, 0.004, at)
    slow = clock.Estimate(0.36, 0.120, at + timedelta(seconds=5))
    assert not clock.better(best, slow)
    assert clock.better(best, clock.Estimate(0.31, 0.005, at + timedelta(seconds=5)))
    assert clock.better(best, clock.Estimate(0.32, 0.120, at + timedelta(seconds=31)))
    assert clock.better(None, slow)


@pytest.mark.django_db
def test_heartbeats_store_round_trip_samples_and_the_best_offset() -> None:
    device = register_device("iphone-1").device
    now = time.time()
    record_beat(device.pk, clock=_trip(0.25, 0.060, 0.060, now))
    record_beat(device.pk, clock=_trip(0.21, 0.002, 0.002, now))
    record_beat(device.pk, clock=_trip(0.40, 0.200, 0.200, now))
    samples = list(ClockSample.objects.filter(device=device).order_by("at"))
    assert len(samples) == 3
    assert [round(s.offset_s, 3) for s in samples] == [0.25, 0.21, 0.4]
    device.refresh_from_db()
    assert device.clock_offset_s == pytest.approx(0.21, abs=1e-6)
    assert device.clock_delay_s == pytest.approx(0.004, abs=1e-6)


@pytest.mark.django_db
def test_a_device_without_round_trips_gets_a_one_way_estimate() -> None:
    device = register_device("iphone-1").device
    record_beat(device.pk, sent_at=time.time() + 0.5)
    device.refresh_from_db()
    assert device.clock_offset_s == pytest.approx(0.5, abs=0.05)
    assert device.clock_delay_s is None
    assert not ClockSample.objects.exists()


@pytest.mark.django_db
def test_an_implausible_round_trip_is_ignored_but_the_beat_is_kept() -> None:
    device = register_device("iphone-1").device
    trip = _trip(0.1, 0.01, 0.01, time.time())
    trip["returned_at"] = trip["sent_at"] - 1
    stored = record_beat(device.pk, clock=trip, battery=0.42)
    assert stored.battery == 0.42
    assert not ClockSample.objects.exists()


@pytest.mark.django_db
def test_a_device_that_reports_its_placement_is_placed_once_per_change() -> None:
    device = register_device("iphone-1").device
    placement = {"azimuth_deg": 370.0, "distance_m": 3.0}
    record_beat(device.pk, placement=placement)
    record_beat(device.pk, placement=placement)
    device.refresh_from_db()
    assert (device.azimuth_deg, device.distance_m, device.height_m) == (10.0, 3.0, None)
    assert device.placement_source == Device.PlacementSource.DEVICE
    assert ProductionEvent.objects.filter(type="device.placed").count() == 1


@pytest.mark.django_db(transaction=True)
async def test_a_long_poll_that_hangs_up_claims_nothing() -> None:
    registration = await sync_to_async(register_device)("iphone-1")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.3)  # the poll is waiting by now
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/devices/commands",
        "query_string": b"wait=5",
        "headers": [
            (b"host", b"localhost"),
            (b"authorization", f"Bearer {registration.token}".encode()),
        ],
    }
    endpoint = asyncio.create_task(commands_endpoint(scope, receive, send))
    await asyncio.sleep(0.5)
    # Queued after the hang-up, while the poll may still be winding down: it must stay queued.
    command = await sync_to_async(services.command_issue)(
        device_id=registration.device.pk, type="capture_still"
    )
    await asyncio.wait_for(endpoint, timeout=10)
    assert sent == []
    state = await sync_to_async(lambda: DeviceCommand.objects.get(pk=command.pk).state)()
    assert state == DeviceCommand.State.QUEUED


def _round_trips(
    *, offset_s: float, drift_ppm: float, count: int, every_s: float, seed: int
) -> list[clock.Sample]:
    """Heartbeat exchanges of a device whose clock runs `drift_ppm` fast from `offset_s`
    ahead, over a network with jitter and the odd congested exchange."""
    rng = random.Random(seed)
    start = 1_800_000_000.0

    def device_time(server: float) -> float:
        return server + offset_s + drift_ppm * 1e-6 * (server - start)

    samples = []
    for i in range(count):
        sent = start + i * every_s
        forward = 0.002 + rng.expovariate(1 / 0.003)
        back = 0.002 + rng.expovariate(1 / 0.003)
        if rng.random() < 0.1:  # congestion on one leg
            if rng.random() < 0.5:
                forward += rng.uniform(0.05, 0.3)
            else:
                back += rng.uniform(0.05, 0.3)
        received = sent + forward
        answered = received + rng.uniform(0.0002, 0.002)
        returned = answered + back
        samples.append(
            clock.Sample(
                sent_at=device_time(sent),
                received_at=received,
                server_time=answered,
                returned_at=device_time(returned),
            )
        )
    return samples


@pytest.mark.parametrize("drift_ppm", [-40.0, 0.0, 25.0, 80.0])
def test_a_fit_recovers_offset_and_drift_from_noisy_round_trips(drift_ppm: float) -> None:
    offset = 0.3125
    samples = _round_trips(
        offset_s=offset, drift_ppm=drift_ppm, count=600, every_s=2.0, seed=int(drift_ppm)
    )
    fitted = clock.fit(samples)
    assert fitted is not None
    start = 1_800_000_000.0
    truth_at_ref = offset + drift_ppm * 1e-6 * (fitted.at - start)
    assert abs(fitted.offset_s - truth_at_ref) < 0.002
    assert abs(fitted.drift_ppm - drift_ppm) < 10
    assert fitted.uncertainty_s < 0.005
    # Mapping any moment of the window back: within 2 ms too.
    for moment in (start, start + 600, fitted.at):
        true_offset = offset + drift_ppm * 1e-6 * (moment - start)
        assert abs(fitted.offset_at(moment) - true_offset) < 0.002


def test_a_fit_needs_enough_samples_over_some_time() -> None:
    samples = _round_trips(offset_s=0.1, drift_ppm=0, count=20, every_s=2.0, seed=1)
    assert clock.fit(samples[:5]) is None
    assert clock.fit([samples[0]] * 10) is None  # no span
    assert clock.fit(samples) is not None


def _store(device: Any, samples: list[clock.Sample], *, now: Any) -> None:
    ClockSample.objects.bulk_create(
        ClockSample(
            device=device,
            at=now - timedelta(seconds=(len(samples) - i) * 2),
            sent_at=s.sent_at,
            received_at=s.received_at,
            server_time=s.server_time,
            returned_at=s.returned_at,
            offset_s=s.offset_s,
            delay_s=s.delay_s,
        )
        for i, s in enumerate(samples)
    )


@pytest.mark.django_db
def test_the_fitted_clock_is_kept_shown_and_maps_command_times() -> None:
    from devices import delivery

    device = register_device("fit-1", name="Cam Fit").device
    now = timezone.now()
    samples = _round_trips(offset_s=0.25, drift_ppm=30.0, count=300, every_s=2.0, seed=7)
    _store(device, samples, now=now)
    assert services.device_clocks_fit() == 1  # every online device with enough samples
    fitted = services.device_clock_fit(device_id=device.pk, now=now)
    assert fitted is not None
    device.refresh_from_db()
    assert device.clock_drift_ppm == pytest.approx(30.0, abs=10)
    assert device.clock_label.endswith("ppm") and "\u00b1" in device.clock_label
    # Commands carry the fitted offset, carried forward by the drift, while the fit is fresh.
    at = device.clock_fit_at + timedelta(seconds=20)
    assert device.clock_offset_now(at) == pytest.approx(
        fitted.offset_s + 30e-6 * 20, abs=1e-3 * 0.5
    )
    # What the long poll and the socket send with commands (the function under its wrapper).
    sent = delivery.clock_offset.func(device_id=device.pk)  # type: ignore[attr-defined]
    assert sent == pytest.approx(device.clock_offset_now(), abs=1e-6)
    assert sent != device.clock_offset_s
    stale = device.clock_fit_at + timedelta(minutes=5)
    assert device.clock_offset_now(stale) == device.clock_offset_s
