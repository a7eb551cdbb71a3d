"""The operator's control actions on a card: lens, flip, capture, capture all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from devices import services
from devices.models import DeviceCommand
from director import services as director_services
from tests.support.api import record_beat, register_device

pytestmark = pytest.mark.django_db

IPAD_LENSES = [{"id": "wide", "zoom": 1.0, "hfov_deg": 80.0}]


def _toast(response: Any) -> dict[str, str]:
    return json.loads(response["HX-Trigger"])["toast"]


def _post(client: Client, path: str, data: dict[str, str] | None = None) -> Any:
    return client.post(path, data or {}, headers={"HX-Request": "true"})


def test_pressing_half_x_queues_the_ultra_wide_and_the_card_shows_it_pending(
    operator_client: Client,
) -> None:
    device = register_device("iphone-1", name="Cam front").device
    response = _post(operator_client, f"/registry/devices/{device.pk}/lens", {"zoom": "0.5"})
    assert response.status_code == 200
    command = DeviceCommand.objects.get(device=device)
    assert command.args["lens"] == "ultra_wide"
    assert command.issued_by == "op"
    html = response.content.decode()
    assert 'data-testid="zoom-0.5x"' in html
    assert "chip zoom pending" in html
    assert "Lens 0.5x (ultra-wide)" in html


def test_half_x_on_an_ipad_is_refused_with_a_toast_and_nothing_is_sent(
    operator_client: Client,
) -> None:
    device = register_device("ipad-1", name="iPad side", kind="ipad", lenses=IPAD_LENSES).device
    response = _post(operator_client, f"/registry/devices/{device.pk}/lens", {"zoom": "0.5"})
    assert response.status_code == 409
    toast = _toast(response)
    assert toast["level"] == "error"
    assert "iPad side has no ultra-wide lens" in toast["message"]
    assert not DeviceCommand.objects.exists()


def test_the_card_offers_only_the_zooms_the_device_has(operator_client: Client) -> None:
    iphone = register_device("iphone-1").device
    ipad = register_device("ipad-1", kind="ipad", lenses=IPAD_LENSES).device
    page = operator_client.get("/registry/").content.decode()
    iphone_card = page.split(f'id="device-{iphone.pk}-card"')[1].split("</article>")[0]
    ipad_card = page.split(f'id="device-{ipad.pk}-card"')[1].split("</article>")[0]
    for label in ("0.5x", "1x", "2x", "3x"):
        assert f'data-testid="zoom-{label}"' in iphone_card
    assert 'data-testid="zoom-1x"' in ipad_card
    assert 'data-testid="zoom-0.5x"' not in ipad_card


def test_a_typed_zoom_that_is_not_a_number_is_a_400_with_a_toast(operator_client: Client) -> None:
    device = register_device("iphone-1").device
    response = _post(operator_client, f"/registry/devices/{device.pk}/lens", {"zoom": "wide"})
    assert response.status_code == 400
    assert "zoom" in _toast(response)["message"]


def test_flip_toggles_one_axis_and_a_second_press_toggles_it_back(
    operator_client: Client,
) -> None:
    device = register_device("iphone-1").device
    path = f"/registry/devices/{device.pk}/flip"
    _post(operator_client, path, {"axis": "horizontal"})
    _post(operator_client, path, {"axis": "horizontal"})
    _post(operator_client, path, {"axis": "vertical"})
    args = [c.args for c in DeviceCommand.objects.filter(device=device).order_by("issued_at")]
    assert args == [
        {"horizontal": True, "vertical": False},
        {"horizontal": False, "vertical": False},
        {"horizontal": False, "vertical": True},
    ]


def test_the_preview_is_mirrored_as_the_device_reports_its_flip(operator_client: Client) -> None:
    device = register_device("iphone-1").device
    record_beat(device.pk, flip={"horizontal": True, "vertical": False})
    page = operator_client.get("/registry/").content.decode()
    card = page.split(f'id="device-{device.pk}-card"')[1].split("</article>")[0]
    assert 'class="preview flip-h"' in card
    assert 'aria-pressed="true" data-testid="flip-horizontal"' in card


def test_capture_on_a_card_sends_an_immediate_capture(operator_client: Client) -> None:
    device = register_device("iphone-1", name="Cam front").device
    response = _post(operator_client, f"/registry/devices/{device.pk}/capture")
    assert response.status_code == 200
    assert "Capturing on Cam front" in _toast(response)["message"]
    command = DeviceCommand.objects.get(device=device)
    assert command.type == "capture_still"
    assert command.fire_at is None


def test_capture_all_fires_every_online_camera_but_not_webcams(operator_client: Client) -> None:
    cams = [register_device(f"iphone-{i}").device for i in range(3)]
    register_device("webcam-1", kind="webcam", lenses=IPAD_LENSES)
    register_device("iphone-off", online=False)
    response = _post(operator_client, "/registry/capture-all")
    assert response.status_code == 200
    assert "3 cameras fire together" in _toast(response)["message"]
    commands = DeviceCommand.objects.all()
    assert {c.device_id for c in commands} == {c.pk for c in cams}
    assert len({c.fire_at for c in commands}) == 1


def test_capture_all_in_a_live_session_fires_its_cameras_and_tags_the_session(
    operator_client: Client, operator: Any
) -> None:
    inside = register_device("iphone-1").device
    register_device("iphone-2")
    session = director_services.session_create(name="Look 1", operator=operator)
    director_services.session_start(session_id=session.pk, device_ids=[inside.pk])
    _post(operator_client, "/registry/capture-all")
    command = DeviceCommand.objects.get(type="capture_still")
    assert command.device_id == inside.pk
    assert command.session_id == session.pk


def test_capture_all_with_no_camera_online_is_refused_with_a_toast(
    operator_client: Client,
) -> None:
    register_device("iphone-off", online=False)
    response = _post(operator_client, "/registry/capture-all")
    assert response.status_code == 409
    assert "No cameras" in _toast(response)["message"]


def test_an_expired_command_is_shown_as_expired_on_the_card(operator_client: Client) -> None:
    from django.utils import timezone

    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 3})
    DeviceCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now())
    services.commands_expire_due()
    page = operator_client.get("/registry/").content.decode()
    assert 'data-testid="last-command" data-state="expired"' in page


def test_control_actions_need_an_operator(client: Client) -> None:
    device = register_device("iphone-1").device
    response = client.post(f"/registry/devices/{device.pk}/lens", {"zoom": "1"})
    assert response.status_code == 302
    assert not DeviceCommand.objects.exists()
