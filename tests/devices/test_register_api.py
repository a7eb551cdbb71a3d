from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from django.conf import settings
from django.utils import timezone

from devices.models import Device, PairingFailure
from ledger.models import ProductionEvent
from tests.devices.support import FleetListener, assert_error, database_text, events
from tests.support.api import IPHONE_LENSES, register_body

pytestmark = pytest.mark.django_db

REGISTER = "devices/register"
OTHER_ADDRESS = "10.20.30.40"


def _post_raw(device_api: Any, data: str | bytes, content_type: str = "application/json") -> Any:
    return device_api.client.post(f"/api/v1/{REGISTER}", data, content_type=content_type)


def _counts() -> tuple[int, int]:
    return Device.objects.count(), ProductionEvent.objects.count()


# --- First registration ---------------------------------------------------------------------


def test_a_first_registration_answers_201_with_the_device_id_a_token_and_the_interval(
    device_api: Any,
) -> None:
    response = device_api.post(REGISTER, register_body(device_api.code, "install-1"))

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"device_id", "token", "heartbeat_interval_s"}
    device = Device.objects.get()
    assert body["device_id"] == str(device.pk)
    assert UUID(body["device_id"]) == device.pk
    assert body["token"].startswith("mmd_")
    assert len(body["token"]) > 40
    assert body["heartbeat_interval_s"] == settings.MOTIONMIX_HEARTBEAT_INTERVAL_S


def test_a_registration_stores_what_the_device_reported_and_marks_it_online(
    device_api: Any,
) -> None:
    before = timezone.now()
    device_api.register(
        "install-7", name="Left stand", kind="ipad", model="iPad Pro", os_version="18.2"
    )

    device = Device.objects.get(install_id="install-7")
    assert device.name == "Left stand"
    assert device.kind == Device.Kind.IPAD
    assert device.model == "iPad Pro"
    assert device.os_version == "18.2"
    assert device.app_version == "1.0.0"
    assert device.lenses == IPHONE_LENSES
    assert device.lens_ids == ["ultra_wide", "wide", "tele"]
    assert device.status == Device.Status.ONLINE
    assert device.last_seen_at is not None
    assert before <= device.last_seen_at <= timezone.now()
    assert device.registered_at == device.last_seen_at


def test_the_token_is_stored_only_as_its_sha256_hash(device_api: Any) -> None:
    token = device_api.register("install-1")["token"]

    device = Device.objects.get()
    assert device.token_hash == hashlib.sha256(token.encode()).hexdigest()
    dump = database_text()
    assert device.token_hash in dump  # the dump does see the device's row
    assert token not in dump
    assert token.removeprefix("mmd_") not in dump


def test_the_registration_is_recorded_in_the_ledger_without_the_token_or_the_code(
    device_api: Any,
) -> None:
    body = device_api.register("install-1", name="Cam 3", model="iPhone 16 Pro")

    (event,) = events("device.registered")
    assert event.device_id == UUID(body["device_id"])
    assert event.stream == "fleet"
    assert event.session_id is None
    assert event.payload == {
        "name": "Cam 3",
        "kind": "iphone",
        "model": "iPhone 16 Pro",
        "install_id": "install-1",
        "re_registered": False,
    }
    text = json.dumps(event.payload)
    assert body["token"] not in text
    assert device_api.code not in text


def test_a_registration_tells_the_fleet_group_after_commit(
    device_api: Any,
    fleet: FleetListener,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        body = device_api.register("install-1")

    assert fleet.changed_devices() == [body["device_id"]]


# --- Registering again ----------------------------------------------------------------------


def test_the_same_install_id_again_answers_200_with_the_same_device_and_a_new_token(
    device_api: Any,
) -> None:
    first = device_api.register("install-1", name="Cam 1")
    again = device_api.post(REGISTER, register_body(device_api.code, "install-1", name="Cam 9"))

    assert again.status_code == 200, again.content
    second = again.json()
    assert second["device_id"] == first["device_id"]
    assert second["token"] != first["token"]
    device = Device.objects.get()
    assert device.name == "Cam 9"
    assert device.token_hash == hashlib.sha256(second["token"].encode()).hexdigest()


def test_after_registering_again_the_old_token_is_refused_and_the_new_one_works(
    device_api: Any,
) -> None:
    old = device_api.register("install-1")["token"]
    new = device_api.register("install-1")["token"]

    assert_error(device_api.heartbeat(old), 401, "unauthorized")
    assert device_api.heartbeat(new).status_code == 200


def test_registering_again_is_recorded_as_re_registered(device_api: Any) -> None:
    first = device_api.register("install-1")
    device_api.register("install-1")

    recorded = events("device.registered")
    assert [e.payload["re_registered"] for e in recorded] == [False, True]
    assert {str(e.device_id) for e in recorded} == {first["device_id"]}
    assert recorded[1].seq == recorded[0].seq + 1


def test_another_install_id_is_another_device(device_api: Any) -> None:
    one = device_api.register("install-1")
    two = device_api.post(REGISTER, register_body(device_api.code, "install-2"))

    assert two.status_code == 201
    assert two.json()["device_id"] != one["device_id"]
    assert Device.objects.count() == 2


# --- Pairing code ---------------------------------------------------------------------------


def test_a_wrong_pairing_code_is_refused_with_403(device_api: Any) -> None:
    # O and 1 are not in the alphabet, so this can never be the current code.
    response = device_api.post(REGISTER, register_body("WRONG1", "install-1"))

    detail = assert_error(response, 403, "pairing_refused")
    assert "pairing code" in detail
    assert _counts() == (0, 1)  # only the code's own pairing.rotated event
    assert PairingFailure.objects.get().address == "127.0.0.1"


def test_a_wrong_pairing_code_for_a_known_install_id_changes_nothing(device_api: Any) -> None:
    token = device_api.register("install-1", name="Cam 1")["token"]
    counts = _counts()

    response = device_api.post(REGISTER, register_body("WRONG1", "install-1", name="Hijacked"))

    assert_error(response, 403, "pairing_refused")
    assert _counts() == counts
    device = Device.objects.get()
    assert device.name == "Cam 1"
    assert device_api.heartbeat(token).status_code == 200


def test_a_pairing_code_with_letters_outside_ascii_is_refused_with_403(device_api: Any) -> None:
    response = device_api.post(REGISTER, register_body("ÄÖÜ-éçñ", "install-1"))

    assert_error(response, 403, "pairing_refused")
    assert Device.objects.count() == 0


def _fail(device_api: Any, times: int, **extra: Any) -> None:
    for _ in range(times):
        response = device_api.post(REGISTER, register_body("WRONG1", "install-x"), **extra)
        assert_error(response, 403, "pairing_refused")


def test_after_ten_bad_codes_the_eleventh_call_is_refused_with_429_even_with_the_right_code(
    device_api: Any,
) -> None:
    _fail(device_api, settings.MOTIONMIX_PAIRING_MAX_FAILURES)

    response = device_api.post(REGISTER, register_body(device_api.code, "install-1"))

    detail = assert_error(response, 429, "too_many_attempts")
    retry_after = int(response["Retry-After"])
    window = settings.MOTIONMIX_PAIRING_FAILURE_WINDOW_S
    assert window - 2 <= retry_after <= window + 1
    assert f"{retry_after} s" in detail
    assert Device.objects.count() == 0
    assert PairingFailure.objects.count() == settings.MOTIONMIX_PAIRING_MAX_FAILURES


def test_nine_bad_codes_do_not_lock_the_right_code_out(device_api: Any) -> None:
    _fail(device_api, settings.MOTIONMIX_PAIRING_MAX_FAILURES - 1)

    response = device_api.post(REGISTER, register_body(device_api.code, "install-1"))

    assert response.status_code == 201, response.content


def test_the_limit_counts_per_address_so_another_address_is_unaffected(device_api: Any) -> None:
    _fail(device_api, settings.MOTIONMIX_PAIRING_MAX_FAILURES, REMOTE_ADDR="10.0.0.1")

    blocked = device_api.post(
        REGISTER, register_body(device_api.code, "install-1"), REMOTE_ADDR="10.0.0.1"
    )
    other = device_api.post(
        REGISTER, register_body(device_api.code, "install-2"), REMOTE_ADDR=OTHER_ADDRESS
    )

    assert_error(blocked, 429, "too_many_attempts")
    assert other.status_code == 201, other.content
    assert list(Device.objects.values_list("install_id", flat=True)) == ["install-2"]
    assert set(PairingFailure.objects.values_list("address", flat=True)) == {"10.0.0.1"}


def test_failures_older_than_the_window_do_not_count(device_api: Any) -> None:
    _fail(device_api, settings.MOTIONMIX_PAIRING_MAX_FAILURES)
    window = timedelta(seconds=settings.MOTIONMIX_PAIRING_FAILURE_WINDOW_S)
    PairingFailure.objects.update(at=timezone.now() - window - timedelta(seconds=1))

    response = device_api.post(REGISTER, register_body(device_api.code, "install-1"))

    assert response.status_code == 201, response.content


def test_the_limit_holds_while_any_ten_failures_are_inside_the_window(device_api: Any) -> None:
    _fail(device_api, settings.MOTIONMIX_PAIRING_MAX_FAILURES)
    window = settings.MOTIONMIX_PAIRING_FAILURE_WINDOW_S
    # Move all of them back to 10 s before the window ends: still inside.
    PairingFailure.objects.update(at=timezone.now() - timedelta(seconds=window - 10))

    response = device_api.post(REGISTER, register_body(device_api.code, "install-1"))

    assert_error(response, 429, "too_many_attempts")
    assert 9 <= int(response["Retry-After"]) <= 11


# --- Bad bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", ['{"pairing_code": ', "{'single': 'quotes'}", "\xff\xfe"])
def test_malformed_json_is_refused_with_400_bad_json(device_api: Any, data: str) -> None:
    counts = _counts()

    response = _post_raw(device_api, data)

    detail = assert_error(response, 400, "bad_json")
    assert "not valid JSON" in detail
    assert _counts() == counts


def test_invalid_utf8_is_refused_with_400_bad_json(device_api: Any) -> None:
    response = _post_raw(device_api, b'{"name": "\xff\xfe"}')

    assert_error(response, 400, "bad_json")


@pytest.mark.parametrize("data", ["[1, 2]", '"register me"', "null", "42"])
def test_json_that_is_not_an_object_is_refused_with_400(device_api: Any, data: str) -> None:
    response = _post_raw(device_api, data)

    detail = assert_error(response, 400, "bad_json")
    assert detail == "The body must be a JSON object."
    assert Device.objects.count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": 123}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"kind": "android"}, "kind"),
        ({"lenses": []}, "lenses"),
        ({"lenses": "wide"}, "lenses"),
        ({"lenses": [{"id": "wide", "zoom": "1.0", "hfov_deg": 73.0}]}, "lenses.0.zoom"),
        ({"lenses": [{"id": "wide", "zoom": 1.0, "hfov_deg": 180.0}]}, "lenses.0.hfov_deg"),
        ({"lenses": [{"id": "wide", "zoom": 0, "hfov_deg": 73.0}]}, "lenses.0.zoom"),
        ({"lenses": [{"zoom": 1.0, "hfov_deg": 73.0}]}, "lenses.0.id"),
        ({"lenses": [{"id": "wi\x00de", "zoom": 1.0, "hfov_deg": 73.0}]}, "lenses.0.id"),
        ({"install_id": None}, "install_id"),
        ({"pairing_code": 123456}, "pairing_code"),
        ({"model": ["iPhone"]}, "model"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_refused_with_400_naming_the_field(
    device_api: Any, overrides: dict[str, Any], field: str
) -> None:
    counts = _counts()

    body = register_body(device_api.code, "install-1")
    body.update(overrides)

    response = device_api.post(REGISTER, body)

    detail = assert_error(response, 400, "invalid")
    assert detail.startswith(f"{field}: "), detail
    assert _counts() == counts


def test_duplicate_lens_ids_are_refused_with_400(device_api: Any) -> None:
    lenses = [
        {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
        {"id": "wide", "zoom": 2.0, "hfov_deg": 40.0},
    ]

    response = device_api.post(REGISTER, register_body(device_api.code, "install-1", lenses=lenses))

    detail = assert_error(response, 400, "invalid")
    assert detail.startswith("lenses: ")
    assert "unique" in detail
    assert Device.objects.count() == 0


def test_a_missing_field_is_refused_with_400_naming_it(device_api: Any) -> None:
    body = register_body(device_api.code, "install-1")
    del body["install_id"]

    response = device_api.post(REGISTER, body)

    detail = assert_error(response, 400, "invalid")
    assert detail.startswith("install_id: ")


def test_unknown_fields_are_ignored(device_api: Any) -> None:
    body = register_body(device_api.code, "install-1", future_field={"nested": [1, 2]})

    response = device_api.post(REGISTER, body)

    assert response.status_code == 201, response.content


@pytest.mark.parametrize("value", ["Cam\x00 1", "Cam \ud800"])
def test_text_that_cannot_be_stored_is_refused_with_400_not_a_crash(
    device_api: Any, value: str
) -> None:
    # json.dumps escapes both as \u0000 and \ud800: valid JSON text that no database stores.
    data = json.dumps(register_body(device_api.code, "install-1", name=value))

    response = _post_raw(device_api, data)

    detail = assert_error(response, 400, "invalid")
    assert detail.startswith("name: ")
    assert Device.objects.count() == 0


def test_a_body_sent_as_text_plain_is_refused_with_415(device_api: Any) -> None:
    data = json.dumps(register_body(device_api.code, "install-1"))

    response = _post_raw(device_api, data, content_type="text/plain")

    detail = assert_error(response, 415, "unsupported_media_type")
    assert "text/plain" in detail
    assert _counts() == (0, 1)


def test_a_form_post_is_refused_with_415(device_api: Any) -> None:
    response = device_api.client.post(f"/api/v1/{REGISTER}", {"pairing_code": device_api.code})

    assert_error(response, 415, "unsupported_media_type")


def _body_of_size(code: str, size: int) -> str:
    body = register_body(code, "install-1", padding="")
    base = len(json.dumps(body).encode())
    body["padding"] = "x" * (size - base)
    data = json.dumps(body)
    assert len(data.encode()) == size
    return data


def test_a_body_of_exactly_64_kib_is_accepted(device_api: Any) -> None:
    response = _post_raw(device_api, _body_of_size(device_api.code, 64 * 1024))

    assert response.status_code == 201, response.content


def test_a_body_over_64_kib_is_refused_with_413(device_api: Any) -> None:
    response = _post_raw(device_api, _body_of_size(device_api.code, 64 * 1024 + 1))

    detail = assert_error(response, 413, "too_large")
    assert "65537" in detail
    assert "65536" in detail
    assert _counts() == (0, 1)


# --- Routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_path_under_the_api_answers_404_json_without_a_login(
    device_api: Any, method: str
) -> None:
    response = getattr(device_api.client, method)("/api/v1/devices/teleport")

    detail = assert_error(response, 404, "not_found")
    assert "/api/v1/devices/teleport" in detail


def test_the_api_root_answers_404_json(device_api: Any) -> None:
    assert_error(device_api.client.get("/api/v1/"), 404, "not_found")
