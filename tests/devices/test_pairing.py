from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from devices import services, tasks
from devices.models import PairingCode
from tests.devices.support import FleetListener, assert_error, events
from tests.support.api import register_body

pytestmark = pytest.mark.django_db

AMBIGUOUS = set("0O1IL2Z5S8B")


def _current() -> PairingCode:
    return PairingCode.objects.get(retired_at__isnull=True)


def test_the_alphabet_leaves_out_characters_that_are_misread() -> None:
    assert not AMBIGUOUS & set(services.PAIRING_ALPHABET)
    assert len(set(services.PAIRING_ALPHABET)) == len(services.PAIRING_ALPHABET)
    assert services.PAIRING_ALPHABET.isupper()
    assert services.PAIRING_ALPHABET.isalnum()


def test_codes_use_only_the_unambiguous_alphabet_and_the_set_length() -> None:
    codes = [services.pairing_code_rotate().code for _ in range(40)]

    for code in codes:
        assert len(code) == services.PAIRING_CODE_LENGTH == 6
        assert set(code) <= set(services.PAIRING_ALPHABET), code
    assert len(set(codes)) > 30  # random, not one code over and over


def test_the_display_form_puts_a_dash_in_the_middle() -> None:
    code = services.pairing_code_rotate()

    assert code.display == f"{code.code[:3]}-{code.code[3:]}"
    assert len(code.display) == 7


def test_the_first_call_issues_a_code_and_later_calls_return_it() -> None:
    first = services.pairing_code_get_or_rotate()
    again = services.pairing_code_get_or_rotate()

    assert again.pk == first.pk
    assert [e.payload for e in events("pairing.rotated")] == [{"reason": "first"}]


def test_rotation_retires_the_old_code_and_keeps_it_for_audit() -> None:
    old = services.pairing_code_get_or_rotate()

    new = services.pairing_code_rotate(reason="operator")

    old.refresh_from_db()
    assert old.retired_at is not None
    assert new.retired_at is None
    assert _current().pk == new.pk
    assert PairingCode.objects.count() == 2


def test_after_rotation_the_old_code_is_refused_with_403_and_the_new_one_works(
    device_api: Any,
) -> None:
    old = device_api.code
    new = services.pairing_code_rotate(reason="operator").code
    assert new != old

    refused = device_api.post("devices/register", register_body(old, "install-1"))
    accepted = device_api.post("devices/register", register_body(new, "install-1"))

    assert_error(refused, 403, "pairing_refused")
    assert accepted.status_code == 201, accepted.content


def test_rotation_keeps_registered_devices_tokens(device_api: Any) -> None:
    token = device_api.register("install-1")["token"]

    services.pairing_code_rotate(reason="operator")

    assert device_api.heartbeat(token).status_code == 200


def test_rotation_is_recorded_in_the_ledger_without_the_code() -> None:
    old = services.pairing_code_get_or_rotate()
    new = services.pairing_code_rotate(reason="operator")

    rotated = events("pairing.rotated")
    assert [e.payload for e in rotated] == [{"reason": "first"}, {"reason": "operator"}]
    for event in rotated:
        text = json.dumps(event.payload) + repr(event.__dict__)
        for code in (old, new):
            assert code.code not in text
            assert code.display not in text
        assert event.stream == "fleet"
        assert event.device_id is None


def test_rotation_tells_the_fleet_group_after_commit(
    fleet: FleetListener, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.pairing_code_rotate(reason="operator")

    assert fleet.drain() == [{"type": "pairing.changed"}]


def test_an_expired_code_is_replaced_by_get_or_rotate() -> None:
    old = services.pairing_code_get_or_rotate()
    PairingCode.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    new = services.pairing_code_get_or_rotate()

    assert new.pk != old.pk
    assert new.expires_at > timezone.now()
    old.refresh_from_db()
    assert old.retired_at is not None
    assert _current().pk == new.pk
    assert events("pairing.rotated")[-1].payload == {"reason": "expired"}


def test_an_expired_code_is_refused_at_register(device_api: Any) -> None:
    PairingCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    response = device_api.post("devices/register", register_body(device_api.code, "install-1"))

    assert_error(response, 403, "pairing_refused")
    assert _current().expires_at > timezone.now()  # the register call issued a fresh code
    assert events("pairing.rotated")[-1].payload == {"reason": "expired"}


def test_the_refresh_task_rotates_only_an_expired_code() -> None:
    code = services.pairing_code_get_or_rotate()
    assert tasks.pairing_code_refresh() == code.display

    PairingCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    shown = tasks.pairing_code_refresh()

    assert shown == _current().display
    assert _current().pk != code.pk


def test_the_management_command_prints_the_current_code() -> None:
    code = services.pairing_code_get_or_rotate()
    out = StringIO()

    call_command("pairing_code", stdout=out)

    assert out.getvalue().strip() == code.display
    assert PairingCode.objects.count() == 1


def test_the_management_command_prints_the_raw_code() -> None:
    code = services.pairing_code_get_or_rotate()
    out = StringIO()

    call_command("pairing_code", "--raw", stdout=out)

    assert out.getvalue().strip() == code.code


def test_the_management_command_issues_a_code_when_there_is_none() -> None:
    out = StringIO()

    call_command("pairing_code", stdout=out)

    assert out.getvalue().strip() == _current().display


def test_the_management_command_can_rotate_first() -> None:
    old = services.pairing_code_get_or_rotate()
    out = StringIO()

    call_command("pairing_code", "--rotate", stdout=out)

    assert out.getvalue().strip() == _current().display
    assert _current().pk != old.pk
    assert events("pairing.rotated")[-1].payload == {"reason": "operator"}


@pytest.mark.parametrize(
    "spelling",
    [
        lambda code: code.lower(),
        lambda code: f"{code[:3]}-{code[3:]}",
        lambda code: f"{code[:3]}-{code[3:]}".lower(),
        lambda code: f" {code[:3]} {code[3:]} ",
    ],
    ids=["lower case", "with a dash", "lower case with a dash", "with spaces"],
)
def test_a_code_is_accepted_case_insensitively_and_with_a_dash(
    device_api: Any, spelling: Callable[[str], str]
) -> None:
    typed = spelling(device_api.code)
    assert typed != device_api.code

    response = device_api.post("devices/register", register_body(typed, "install-1"))

    assert response.status_code == 201, response.content


def test_a_code_with_one_character_wrong_is_refused(device_api: Any) -> None:
    code = device_api.code
    other = next(ch for ch in services.PAIRING_ALPHABET if ch != code[-1])

    response = device_api.post("devices/register", register_body(code[:-1] + other, "install-1"))

    assert_error(response, 403, "pairing_refused")


def test_a_prefix_of_the_code_is_refused(device_api: Any) -> None:
    response = device_api.post("devices/register", register_body(device_api.code[:5], "install-1"))

    assert_error(response, 403, "pairing_refused")
