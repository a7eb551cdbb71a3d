"""Placing a camera from the coverage map: the view, and the push every operator tab gets."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse

from devices import services
from devices.models import Device
from director.dom import COVERAGE_MAP, coverage_camera_id
from tests.support.api import record_beat, register_device
from tests.support.sockets import operator_socket, receive_until


def _camera(install_id: str = "place-1", name: str = "Cam Place") -> Device:
    return register_device(install_id, name=name).device


def _place_url(device_id: Any) -> str:
    return reverse("director:device_place", args=[device_id])


def _toast(response: Any) -> dict[str, str]:
    return json.loads(response["HX-Trigger"])["toast"]


@pytest.mark.django_db
def test_placing_a_camera_saves_it_and_answers_the_new_map(operator_client: Client) -> None:
    device = _camera()
    response = operator_client.post(
        _place_url(device.pk), {"azimuth_deg": "135"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    device.refresh_from_db()
    assert device.azimuth_deg == 135.0
    assert device.placement_source == Device.PlacementSource.OPERATOR
    html = response.content.decode()
    assert f'id="{COVERAGE_MAP}"' in html and "hx-swap-oob" not in html
    assert f'id="{coverage_camera_id(device.pk)}"' in html
    assert 'data-azimuth="135"' in html


@pytest.mark.django_db
def test_distance_and_height_alone_keep_the_azimuth(operator_client: Client) -> None:
    device = _camera()
    services.device_place(device_id=device.pk, azimuth_deg=40.0)
    response = operator_client.post(
        _place_url(device.pk), {"azimuth_deg": "", "distance_m": "2.5", "height_m": "1.4"}
    )
    assert response.status_code == 200
    device.refresh_from_db()
    assert (device.azimuth_deg, device.distance_m, device.height_m) == (40.0, 2.5, 1.4)
    assert "2.5 m away" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"azimuth_deg": "left"}, "Cam Place was not moved: Azimuth must be a number, not “left”."),
        ({"distance_m": "inf"}, "Cam Place was not moved: Distance must be a number"),
        ({"distance_m": "500"}, "Cam Place was not moved: distance must be between 0.1 and 50 m"),
        ({"height_m": "-30"}, "Cam Place was not moved: height must be between -5 and 20 m"),
        ({}, "Cam Place was not moved: send an azimuth, a distance or a height."),
    ],
)
def test_a_refused_placement_answers_400_with_a_toast_and_changes_nothing(
    operator_client: Client, form: dict[str, str], message: str
) -> None:
    device = _camera()
    services.device_place(device_id=device.pk, azimuth_deg=10.0, distance_m=3.0)
    response = operator_client.post(_place_url(device.pk), form)
    assert response.status_code == 400
    toast = _toast(response)
    assert toast["level"] == "error"
    assert toast["message"].startswith(message)
    device.refresh_from_db()
    assert (device.azimuth_deg, device.distance_m, device.height_m) == (10.0, 3.0, None)


@pytest.mark.django_db
def test_placing_an_unknown_device_is_404(operator_client: Client) -> None:
    response = operator_client.post(_place_url(uuid.uuid4()), {"azimuth_deg": "10"})
    assert response.status_code == 404


@pytest.mark.django_db
def test_placing_needs_a_login_and_a_post(client: Client, operator_client: Client) -> None:
    device = _camera()
    response = client.post(_place_url(device.pk), {"azimuth_deg": "10"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert operator_client.get(_place_url(device.pk)).status_code == 405
    device.refresh_from_db()
    assert device.azimuth_deg is None


@pytest.mark.django_db
def test_the_map_partial_is_served_to_operators_only(
    client: Client, operator_client: Client
) -> None:
    _camera()
    assert client.get(reverse("director:coverage_map")).status_code == 302
    response = operator_client.get(reverse("director:coverage_map"))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="{COVERAGE_MAP}"' in html
    assert "Cam Place" in html and "Not placed" in html


@pytest.mark.django_db
def test_the_registry_page_carries_the_map_the_webcam_switch_and_their_script(
    operator_client: Client,
) -> None:
    html = operator_client.get(reverse("director:registry")).content.decode()
    assert f'id="{COVERAGE_MAP}"' in html
    assert 'data-testid="toggle-webcams"' in html
    assert "data-webcam-scope" in html
    assert "director/coverage.js" in html


# --- the push ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_connecting_sends_the_map_with_the_rest_of_the_page() -> None:
    device = await sync_to_async(_camera)()
    communicator = await operator_socket()
    try:
        first = await communicator.receive_from(timeout=5)
        assert f'id="{COVERAGE_MAP}"' in first
        assert 'hx-swap-oob="true"' in first.split(f'id="{COVERAGE_MAP}"')[1].split(">")[0]
        assert f'data-device-id="{device.pk}" data-kind="iphone"' in first  # not placed yet
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_placement_pushes_the_redrawn_map_once_per_flush() -> None:
    device = await sync_to_async(_camera)()
    communicator = await operator_socket()
    try:
        await communicator.receive_from(timeout=5)
        await sync_to_async(services.device_place)(
            device_id=device.pk, azimuth_deg=200.0, distance_m=2.0
        )
        pushed = await receive_until(communicator, f'id="{COVERAGE_MAP}"')
        assert pushed.count(f'id="{COVERAGE_MAP}"') == 1
        marker = pushed.split(f'id="{coverage_camera_id(device.pk)}"')[1].split(">")[0]
        assert 'data-azimuth="200"' in marker
        assert "2 m away" in marker
        # A lens change (a heartbeat) redraws the cone and the shot size too.
        await sync_to_async(record_beat)(device.pk, lens="tele", zoom=3.0)
        pushed = await receive_until(communicator, "close · 3x")
        assert pushed.count(f'id="{COVERAGE_MAP}"') == 1
    finally:
        await communicator.disconnect()
