from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from devices import services
from devices.models import Device, DeviceCommand
from ledger.models import ProductionEvent
from tests.devices.factories import DeviceCommandFactory
from tests.devices.support import FleetListener, assert_error, events
from tests.support.api import heartbeat_body

pytestmark = pytest.mark.django_db

HEARTBEAT = "devices/heartbeat"


def _device(registered: dict[str, Any]) -> Device:
    return Device.objects.get(pk=registered["device_id"])


def _snapshot(registered: dict[str, Any]) -> dict[str, Any]:
    return model_to_dict(_device(registered)) | {"last_seen_at": _device(registered).last_seen_at}


def _command(device: Device, state: str = DeviceCommand.State.QUEUED) -> DeviceCommand:
    return DeviceCommandFactory.create(device=device, state=state)


def _take_offline(registered: dict[str, Any], silent_for_s: float = 30.0) -> None:
    Device.objects.filter(pk=registered["device_id"]).update(
        last_seen_at=timezone.now() - timedelta(seconds=silent_for_s)
    )
    services.device_mark_offline(
        device_id=UUID(registered["device_id"]), reason="missed_heartbeats"
    )
    assert _device(registered).status == Device.Status.OFFLINE


# --- The answer -----------------------------------------------------------------------------


def test_a_heartbeat_answers_200_with_the_server_clock_and_when_it_was_received(
    device_api: Any, registered: dict[str, Any]
) -> None:
    before = time.time()
    response = device_api.heartbeat(registered["token"])
    after = time.time()

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"server_time", "received_at", "pending_commands", "clock_offset_s"}
    assert before <= body["received_at"] <= body["server_time"] <= after
    assert body["pending_commands"] == 0
    device = _device(registered)
    assert device.last_seen_at is not None
    assert body["received_at"] == pytest.approx(device.last_seen_at.timestamp(), abs=1e-6)


def test_pending_commands_counts_only_this_devices_queued_commands(
    device_api: Any, registered: dict[str, Any]
) -> None:
    device = _device(registered)
    other = Device.objects.get(pk=device_api.register("install-2")["device_id"])
    _command(device)
    _command(device)
    _command(device)
    _command(device, DeviceCommand.State.DELIVERED)
    _command(device, DeviceCommand.State.DONE)
    _command(device, DeviceCommand.State.EXPIRED)
    _command(other)

    response = device_api.heartbeat(registered["token"])

    assert response.status_code == 200, response.content
    assert response.json()["pending_commands"] == 3


def test_pending_commands_falls_when_a_command_leaves_the_queue(
    device_api: Any, registered: dict[str, Any]
) -> None:
    device = _device(registered)
    first = _command(device)
    _command(device)
    assert device_api.heartbeat(registered["token"]).json()["pending_commands"] == 2

    DeviceCommand.objects.filter(pk=first.pk).update(state=DeviceCommand.State.DELIVERED)

    assert device_api.heartbeat(registered["token"]).json()["pending_commands"] == 1


def test_a_heartbeat_stores_the_reported_state(device_api: Any, registered: dict[str, Any]) -> None:
    response = device_api.heartbeat(
        registered["token"],
        sent_at=1_900_000_000.25,
        battery=0.42,
        charging=True,
        thermal="serious",
        lens="tele",
        zoom=3.0,
        orientation="portrait",
        flip={"horizontal": True, "vertical": False},
        storage_free_mb=1234,
        fps=24.0,
    )

    assert response.status_code == 200, response.content
    device = _device(registered)
    assert device.last_sent_at == 1_900_000_000.25
    assert device.battery == 0.42
    assert device.charging is True
    assert device.thermal == Device.Thermal.SERIOUS
    assert device.lens == "tele"
    assert device.zoom == 3.0
    assert device.orientation == Device.Orientation.PORTRAIT
    assert device.flip_horizontal is True
    assert device.flip_vertical is False
    assert device.storage_free_mb == 1234
    assert device.fps == 24.0
    assert device.status == Device.Status.ONLINE
    assert device.last_seen_at is not None
    assert device.last_seen_at.timestamp() == pytest.approx(response.json()["received_at"])


def test_the_largest_storage_the_column_holds_is_accepted(
    device_api: Any, registered: dict[str, Any]
) -> None:
    response = device_api.heartbeat(registered["token"], storage_free_mb=2**31 - 1)

    assert response.status_code == 200, response.content
    assert _device(registered).storage_free_mb == 2**31 - 1


def test_a_newer_heartbeat_replaces_the_state(device_api: Any, registered: dict[str, Any]) -> None:
    device_api.heartbeat(registered["token"], sent_at=1_800_000_000.0, battery=0.9, lens="wide")
    device_api.heartbeat(
        registered["token"], sent_at=1_800_000_002.0, battery=0.8, lens="ultra_wide"
    )

    device = _device(registered)
    assert (device.last_sent_at, device.battery, device.lens) == (
        1_800_000_002.0,
        0.8,
        "ultra_wide",
    )


def test_a_heartbeat_sent_before_the_stored_one_is_ignored(
    device_api: Any, registered: dict[str, Any]
) -> None:
    token = registered["token"]
    device_api.heartbeat(token, sent_at=1_800_000_100.0, battery=0.8, thermal="fair", lens="tele")

    late = device_api.heartbeat(
        token, sent_at=1_800_000_099.0, battery=0.3, thermal="critical", lens="wide"
    )

    assert late.status_code == 200, late.content
    device = _device(registered)
    assert device.last_sent_at == 1_800_000_100.0
    assert device.battery == 0.8
    assert device.thermal == "fair"
    assert device.lens == "tele"


def test_a_late_heartbeat_still_refreshes_presence_and_brings_the_device_online(
    device_api: Any, registered: dict[str, Any]
) -> None:
    token = registered["token"]
    device_api.heartbeat(token, sent_at=1_800_000_100.0, battery=0.8)
    Device.objects.filter(pk=registered["device_id"]).update(
        status=Device.Status.OFFLINE, last_seen_at=timezone.now() - timedelta(minutes=5)
    )

    late = device_api.heartbeat(token, sent_at=1_800_000_095.0, battery=0.3)

    assert late.status_code == 200, late.content
    device = _device(registered)
    assert device.status == Device.Status.ONLINE
    assert device.last_seen_at > timezone.now() - timedelta(seconds=5)
    assert device.battery == 0.8


def test_a_device_clock_that_steps_back_far_is_taken_as_a_reset(
    device_api: Any, registered: dict[str, Any]
) -> None:
    token = registered["token"]
    device_api.heartbeat(token, sent_at=1_800_003_600.0, battery=0.8)

    stepped = device_api.heartbeat(token, sent_at=1_800_000_000.0, battery=0.7)

    assert stepped.status_code == 200, stepped.content
    device = _device(registered)
    assert (device.last_sent_at, device.battery) == (1_800_000_000.0, 0.7)


def test_a_wrong_method_gets_405_in_the_contract_body(device_api: Any) -> None:
    response = device_api.client.get("/api/v1/devices/heartbeat")

    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "method_not_allowed"
    assert "POST" in response.json()["detail"]
    assert response["Allow"] == "POST"


def test_a_heartbeat_tells_the_fleet_group_after_commit(
    device_api: Any,
    registered: dict[str, Any],
    fleet: FleetListener,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        device_api.heartbeat(registered["token"])

    assert len(callbacks) == 1
    assert fleet.changed_devices() == [registered["device_id"]]


# --- Back online ----------------------------------------------------------------------------


def test_an_offline_device_that_beats_is_back_online_with_one_online_event(
    device_api: Any, registered: dict[str, Any]
) -> None:
    _take_offline(registered, silent_for_s=30)

    first = device_api.heartbeat(registered["token"])
    second = device_api.heartbeat(registered["token"])

    assert first.status_code == second.status_code == 200
    assert _device(registered).status == Device.Status.ONLINE
    (online,) = events("device.online")
    assert online.device_id == UUID(registered["device_id"])
    assert online.stream == "fleet"
    assert 29 <= online.payload["offline_for_s"] <= 35
    assert online.seq > events("device.offline")[0].seq


def test_an_online_device_that_beats_records_no_event(
    device_api: Any, registered: dict[str, Any]
) -> None:
    before = ProductionEvent.objects.count()

    device_api.heartbeat(registered["token"])
    device_api.heartbeat(registered["token"])

    assert ProductionEvent.objects.count() == before
    assert events("device.online") == []


# --- Auth -----------------------------------------------------------------------------------


def _assert_unauthorized(response: Any) -> None:
    detail = assert_error(response, 401, "unauthorized")
    assert "Bearer" in detail
    assert response["WWW-Authenticate"] == 'Bearer realm="motionmix-devices"'


def test_a_heartbeat_without_a_token_is_refused_with_401(
    device_api: Any, registered: dict[str, Any]
) -> None:
    _assert_unauthorized(device_api.post(HEARTBEAT, heartbeat_body()))
    assert _device(registered).last_sent_at is None


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer mmd_not-a-real-token",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "mmd_no-scheme",
    ],
)
def test_a_heartbeat_with_a_wrong_token_is_refused_with_401(
    device_api: Any, registered: dict[str, Any], authorization: str
) -> None:
    response = device_api.client.post(
        f"/api/v1/{HEARTBEAT}",
        heartbeat_body(),
        content_type="application/json",
        HTTP_AUTHORIZATION=authorization,
    )

    _assert_unauthorized(response)
    assert _device(registered).last_sent_at is None


def test_the_stored_hash_is_not_a_token(device_api: Any, registered: dict[str, Any]) -> None:
    _assert_unauthorized(device_api.heartbeat(_device(registered).token_hash))


# --- Bad beats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"battery": 1.5}, "battery"),
        ({"battery": -0.1}, "battery"),
        ({"battery": "0.5"}, "battery"),
        ({"battery": None}, "battery"),
        ({"thermal": "hot"}, "thermal"),
        ({"charging": "yes"}, "charging"),
        ({"zoom": 0}, "zoom"),
        ({"zoom": "1.0"}, "zoom"),
        ({"orientation": "sideways"}, "orientation"),
        ({"flip": {"horizontal": True}}, "flip.vertical"),
        ({"flip": {"horizontal": "no", "vertical": False}}, "flip.horizontal"),
        ({"storage_free_mb": -1}, "storage_free_mb"),
        ({"storage_free_mb": 12.5}, "storage_free_mb"),
        ({"storage_free_mb": 2**31}, "storage_free_mb"),
        ({"storage_free_mb": 10**20}, "storage_free_mb"),
        ({"battery": True}, "battery"),
        ({"sent_at": 10**400}, "sent_at"),
        ({"fps": 1000}, "fps"),
        ({"sent_at": 0}, "sent_at"),
        ({"lens": ""}, "lens"),
    ],
)
def test_a_beat_with_a_value_out_of_range_or_of_the_wrong_type_is_refused_with_400(
    device_api: Any, registered: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    before = _snapshot(registered)

    response = device_api.heartbeat(registered["token"], **overrides)

    detail = assert_error(response, 400, "invalid")
    assert detail.startswith(f"{field}: "), detail
    assert _snapshot(registered) == before


@pytest.mark.parametrize(
    ("field", "value", "literal"),
    [
        ("battery", float("nan"), "NaN"),
        ("zoom", float("inf"), "Infinity"),
        ("fps", float("-inf"), "-Infinity"),
        ("sent_at", float("inf"), "Infinity"),
    ],
)
def test_nan_and_infinity_literals_are_refused_with_400(
    device_api: Any, registered: dict[str, Any], field: str, value: float, literal: str
) -> None:
    data = json.dumps(heartbeat_body(**{field: value}))
    assert f'"{field}": {literal}' in data  # Python writes the non-standard literal
    before = _snapshot(registered)

    response = device_api.post(HEARTBEAT, data, token=registered["token"])

    detail = assert_error(response, 400, "invalid")
    assert detail.startswith(f"{field}: "), detail
    assert _snapshot(registered) == before


def test_a_lens_the_device_did_not_register_is_refused_with_400(
    device_api: Any, registered: dict[str, Any]
) -> None:
    device_api.heartbeat(registered["token"], sent_at=1_800_000_000.0, lens="wide")
    before = _snapshot(registered)

    response = device_api.heartbeat(registered["token"], sent_at=1_800_000_001.0, lens="periscope")

    detail = assert_error(response, 400, "invalid")
    assert "'periscope'" in detail
    assert "ultra_wide, wide, tele" in detail
    assert _snapshot(registered) == before


def test_a_refused_beat_from_an_offline_device_leaves_it_offline_with_no_event(
    device_api: Any, registered: dict[str, Any]
) -> None:
    _take_offline(registered)
    before = _snapshot(registered)
    events_before = ProductionEvent.objects.count()

    response = device_api.heartbeat(registered["token"], lens="periscope")

    assert_error(response, 400, "invalid")
    assert _snapshot(registered) == before
    assert _device(registered).status == Device.Status.OFFLINE
    assert ProductionEvent.objects.count() == events_before
    assert events("device.online") == []


def test_malformed_json_in_a_heartbeat_is_refused_with_400_bad_json(
    device_api: Any, registered: dict[str, Any]
) -> None:
    response = device_api.post(HEARTBEAT, '{"battery": 0.5,', token=registered["token"])

    assert_error(response, 400, "bad_json")


def test_a_heartbeat_sent_as_text_plain_is_refused_with_415(
    device_api: Any, registered: dict[str, Any]
) -> None:
    response = device_api.client.post(
        f"/api/v1/{HEARTBEAT}",
        json.dumps(heartbeat_body()),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {registered['token']}",
    )

    assert_error(response, 415, "unsupported_media_type")
    assert _device(registered).last_sent_at is None


def test_a_heartbeat_over_64_kib_is_refused_with_413(
    device_api: Any, registered: dict[str, Any]
) -> None:
    response = device_api.heartbeat(registered["token"], padding="x" * (64 * 1024))

    assert_error(response, 413, "too_large")
    assert _device(registered).last_sent_at is None


def test_a_server_fault_answers_500_in_the_contract_body_and_stores_nothing(
    device_api: Any, registered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "device_heartbeat", broken)
    device_api.client.raise_request_exception = False

    response = device_api.heartbeat(registered["token"], battery=0.11)

    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert "nothing was stored" in response.json()["detail"]
    assert _device(registered).battery != 0.11
