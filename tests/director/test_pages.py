from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from devices import services
from director.dom import device_card_id
from tests.support.api import IPHONE_LENSES, record_beat, register_device

pytestmark = pytest.mark.django_db


def _device(install_id: str = "p-1", name: str = "Cam Echo") -> Any:
    return register_device(
        install_id, name=name, kind="ipad", model="iPad Pro", lenses=IPHONE_LENSES[1:]
    ).device


@pytest.mark.parametrize("path", ["/", "/registry/"])
def test_operator_pages_send_anonymous_users_to_the_login_page(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_rotating_the_pairing_code_needs_a_login(client: Client) -> None:
    response = client.post(reverse("director:pairing_rotate"))
    assert response.status_code == 302


def test_the_login_page_renders_in_the_app_look(client: Client) -> None:
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Log in to the Live Director" in response.content
    assert b"director/app.css" in response.content


def test_a_wrong_password_gets_a_clear_message(client: Client, operator: Any) -> None:
    response = client.post(reverse("login"), {"username": "op", "password": "nope"})
    assert response.status_code == 200
    assert b"do not match" in response.content


def test_logging_in_and_out(client: Client, operator: Any) -> None:
    response = client.post(reverse("login"), {"username": "op", "password": "op-password-123"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_the_registry_shows_a_card_per_device_and_the_pairing_code(
    operator_client: Client,
) -> None:
    device = _device()
    code = services.pairing_code_get_or_rotate()
    response = operator_client.get(reverse("director:registry"))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="{device_card_id(device.pk)}"' in html
    assert "Cam Echo" in html and "iPad Pro" in html
    assert code.display in html
    assert "<svg" in html  # the QR code
    assert 'ws-connect="/ws/director/registry/"' in html
    assert "django_htmx/htmx-2.min.js" in html and "django_htmx/ext/hx-ws-2.min.js" in html


def test_an_htmx_request_gets_only_the_cards_partial(operator_client: Client) -> None:
    device = _device()
    response = operator_client.get(reverse("director:registry"), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.startswith('<div id="device-cards"')
    assert device_card_id(device.pk) in html
    assert "<html" not in html


def test_rotating_the_code_from_the_page_issues_a_new_one(operator: Any) -> None:
    # Rotating voids every phone's code: an admin's action (tests/project/test_authorization.py
    # has the refusal for other operators).
    operator.is_staff = True
    operator.save(update_fields=["is_staff"])
    admin_client = Client()
    admin_client.force_login(operator)
    old = services.pairing_code_get_or_rotate()
    response = admin_client.post(reverse("director:pairing_rotate"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    new = services.pairing_code_get_or_rotate()
    assert new.code != old.code
    assert new.display in response.content.decode()
    assert "New pairing code" in response["HX-Trigger"]


def test_rotating_needs_post(operator_client: Client) -> None:
    assert operator_client.get(reverse("director:pairing_rotate")).status_code == 405


def test_the_session_list_has_an_empty_state(operator_client: Client) -> None:
    response = operator_client.get("/")
    assert response.status_code == 200
    assert b"No sessions yet" in response.content


def test_warnings_show_on_the_card(operator_client: Client) -> None:
    device = _device()
    record_beat(device.pk, sent_at=1e9, battery=0.1, thermal="serious", orientation="portrait")
    html = operator_client.get(reverse("director:registry")).content.decode()
    assert "Running hot" in html
    assert "Battery below 20" in html
    assert "warn-thermal" in html


def test_the_admin_lists_devices_and_events_for_staff(admin_client: Client) -> None:
    _device()
    assert admin_client.get("/admin/devices/device/").status_code == 200
    assert b"Cam Echo" in admin_client.get("/admin/devices/device/").content
    assert admin_client.get("/admin/ledger/productionevent/").status_code == 200
    assert b"device.registered" in admin_client.get("/admin/ledger/productionevent/").content


def test_the_admin_is_closed_to_non_staff_operators(operator_client: Client) -> None:
    response = operator_client.get("/admin/devices/device/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
