from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from django.conf import settings
from django.utils import timezone

from devices import selectors, services, tasks
from devices.models import Device
from ledger.models import ProductionEvent
from tests.devices.support import FleetListener, events

pytestmark = pytest.mark.django_db

INTERVAL_S = settings.MOTIONMIX_HEARTBEAT_INTERVAL_S
MISSED = settings.MOTIONMIX_OFFLINE_AFTER_BEATS


def _silent_for(device_id: str, seconds: float) -> datetime:
    last_seen = timezone.now() - timedelta(seconds=seconds)
    Device.objects.filter(pk=device_id).update(last_seen_at=last_seen)
    return last_seen


def _status(device_id: str) -> str:
    return str(Device.objects.get(pk=device_id).status)


def test_the_sweep_marks_a_device_offline_after_three_missed_intervals(
    registered: dict[str, Any],
) -> None:
    device_id = registered["device_id"]
    last_seen = _silent_for(device_id, INTERVAL_S * MISSED + 1)

    marked = tasks.devices_sweep_offline()

    assert marked == 1
    assert _status(device_id) == Device.Status.OFFLINE
    (offline,) = events("device.offline")
    assert offline.device_id == UUID(device_id)
    assert offline.stream == "fleet"
    assert offline.payload["reason"] == "missed_heartbeats"
    # DjangoJSONEncoder keeps milliseconds.
    recorded_last_seen = datetime.fromisoformat(offline.payload["last_seen_at"])
    assert abs(recorded_last_seen - last_seen) < timedelta(milliseconds=1)


def test_the_sweep_leaves_a_device_that_missed_fewer_than_three_intervals_online(
    registered: dict[str, Any],
) -> None:
    _silent_for(registered["device_id"], INTERVAL_S * (MISSED - 1))

    assert tasks.devices_sweep_offline() == 0
    assert _status(registered["device_id"]) == Device.Status.ONLINE
    assert events("device.offline") == []


def test_a_second_sweep_changes_nothing(registered: dict[str, Any]) -> None:
    _silent_for(registered["device_id"], INTERVAL_S * MISSED + 1)
    assert tasks.devices_sweep_offline() == 1
    count = ProductionEvent.objects.count()

    assert tasks.devices_sweep_offline() == 0

    assert _status(registered["device_id"]) == Device.Status.OFFLINE
    assert ProductionEvent.objects.count() == count
    assert len(events("device.offline")) == 1


def test_marking_an_offline_device_offline_again_records_nothing(
    registered: dict[str, Any],
) -> None:
    device_id = UUID(registered["device_id"])
    services.device_mark_offline(device_id=device_id, reason="operator")
    count = ProductionEvent.objects.count()

    device = services.device_mark_offline(device_id=device_id, reason="operator")

    assert device.status == Device.Status.OFFLINE
    assert ProductionEvent.objects.count() == count


def test_the_sweep_leaves_a_freshly_beating_device_online(device_api: Any) -> None:
    silent = device_api.register("install-silent")
    beating = device_api.register("install-beating")
    _silent_for(silent["device_id"], INTERVAL_S * MISSED + 5)
    _silent_for(beating["device_id"], INTERVAL_S * MISSED + 5)
    assert device_api.heartbeat(beating["token"]).status_code == 200

    assert tasks.devices_sweep_offline() == 1

    assert _status(silent["device_id"]) == Device.Status.OFFLINE
    assert _status(beating["device_id"]) == Device.Status.ONLINE
    assert [str(e.device_id) for e in events("device.offline")] == [silent["device_id"]]


def test_a_device_that_beats_after_the_sweeps_read_stays_online(
    device_api: Any, registered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _silent_for(registered["device_id"], INTERVAL_S * MISSED + 5)
    read_stale = selectors.device_ids_stale

    def stale_then_a_beat() -> list[UUID]:
        stale = read_stale()
        # The device beats between the sweep's read and its lock on the row.
        assert device_api.heartbeat(registered["token"]).status_code == 200
        return stale

    monkeypatch.setattr(tasks.selectors, "device_ids_stale", stale_then_a_beat)

    marked = tasks.devices_sweep_offline()

    assert marked == 0
    assert _status(registered["device_id"]) == Device.Status.ONLINE
    assert events("device.offline") == []


def test_mark_offline_rechecks_the_last_beat_under_the_lock(registered: dict[str, Any]) -> None:
    device_id = UUID(registered["device_id"])
    _silent_for(registered["device_id"], INTERVAL_S)  # recent: not stale

    device = services.device_mark_offline(device_id=device_id, reason="missed_heartbeats")

    assert device.status == Device.Status.ONLINE
    assert _status(registered["device_id"]) == Device.Status.ONLINE
    assert events("device.offline") == []


def test_an_operator_reason_marks_a_recently_seen_device_offline(
    registered: dict[str, Any],
) -> None:
    device = services.device_mark_offline(
        device_id=UUID(registered["device_id"]), reason="operator"
    )

    assert device.status == Device.Status.OFFLINE
    assert [e.payload["reason"] for e in events("device.offline")] == ["operator"]


def test_going_offline_tells_the_fleet_group_after_commit(
    registered: dict[str, Any],
    fleet: FleetListener,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    _silent_for(registered["device_id"], INTERVAL_S * MISSED + 1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tasks.devices_sweep_offline()
    assert fleet.drain() == []  # nothing is pushed before the commit

    for callback in callbacks:
        callback()
    assert fleet.changed_devices() == [registered["device_id"]]


def test_a_second_sweep_pushes_nothing(
    registered: dict[str, Any],
    fleet: FleetListener,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    _silent_for(registered["device_id"], INTERVAL_S * MISSED + 1)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.devices_sweep_offline()
    assert len(fleet.drain()) == 1

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        tasks.devices_sweep_offline()

    assert callbacks == []
    assert fleet.drain() == []


def test_coming_back_online_tells_the_fleet_group(
    device_api: Any,
    registered: dict[str, Any],
    fleet: FleetListener,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    _silent_for(registered["device_id"], INTERVAL_S * MISSED + 1)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.devices_sweep_offline()
    fleet.drain()

    with django_capture_on_commit_callbacks(execute=True):
        assert device_api.heartbeat(registered["token"]).status_code == 200

    assert fleet.changed_devices() == [registered["device_id"]]
    assert _status(registered["device_id"]) == Device.Status.ONLINE
    assert len(events("device.online")) == 1
