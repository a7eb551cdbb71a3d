"""Rate limits on pairing and register (devices/ratelimit.py): register calls per client
address and per install id, whatever their outcome; the client address behind trusted proxies
only; and old pairing failures pruned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.utils import timezone

from devices.models import Device, PairingFailure, RegisterAttempt
from devices.ratelimit import client_address
from devices.services import hash_token
from tests.devices.support import assert_error
from tests.support.api import register_body

REGISTER = "/api/v1/devices/register"
PROXY = "10.0.0.5"


@pytest.fixture(autouse=True)
def small_limits(settings: Any) -> None:
    settings.MOTIONMIX_REGISTER_MAX_PER_ADDRESS = 4
    settings.MOTIONMIX_REGISTER_MAX_PER_INSTALL = 2
    settings.MOTIONMIX_REGISTER_WINDOW_S = 60
    settings.MOTIONMIX_TRUSTED_PROXIES = []


def register(code: str, install_id: str, **extra: Any) -> Any:
    return Client().post(
        REGISTER, register_body(code, install_id), content_type="application/json", **extra
    )


def assert_limited(response: Any, window: int = 60) -> str:
    detail = assert_error(response, 429, "too_many_attempts")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= window + 1
    assert f"try again in {retry_after} s" in detail
    return detail


# --- Per address ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_register_calls_past_the_limit_from_one_address_answer_429_with_retry_after(
    pairing_code: str,
) -> None:
    for i in range(4):
        assert register(pairing_code, f"install-{i}").status_code == 201

    refused = register(pairing_code, "install-9")

    assert "from this address" in assert_limited(refused)
    assert Device.objects.count() == 4
    # Another address is not held back.
    assert register(pairing_code, "install-9", REMOTE_ADDR="192.0.2.7").status_code == 201


@pytest.mark.django_db
def test_wrong_pairing_codes_count_towards_the_address_limit_too(
    pairing_code: str, settings: Any
) -> None:
    settings.MOTIONMIX_PAIRING_MAX_FAILURES = 100
    for i in range(4):
        assert_error(register("WRONG1", f"install-{i}"), 403, "pairing_refused")

    assert_limited(register(pairing_code, "install-9"))
    assert not Device.objects.exists()


@pytest.mark.django_db
def test_a_refused_call_is_not_counted_so_the_wait_does_not_grow(pairing_code: str) -> None:
    for i in range(4):
        register(pairing_code, f"install-{i}")
    for _ in range(5):
        assert_limited(register(pairing_code, "install-9"))

    assert RegisterAttempt.objects.count() == 4


@pytest.mark.django_db
def test_calls_older_than_the_window_stop_counting_and_are_pruned(pairing_code: str) -> None:
    for i in range(4):
        register(pairing_code, f"install-{i}")
    RegisterAttempt.objects.update(at=timezone.now() - timedelta(seconds=61))

    response = register(pairing_code, "install-9")

    assert response.status_code == 201, response.content
    assert list(RegisterAttempt.objects.values_list("install_id", flat=True)) == ["install-9"]


@pytest.mark.django_db
def test_retry_after_is_when_the_oldest_counted_call_leaves_the_window(
    pairing_code: str,
) -> None:
    for i in range(4):
        register(pairing_code, f"install-{i}")
    oldest = RegisterAttempt.objects.order_by("at").first()
    assert oldest is not None
    RegisterAttempt.objects.filter(pk=oldest.pk).update(at=timezone.now() - timedelta(seconds=50))

    response = register(pairing_code, "install-9")

    assert_limited(response)
    assert 9 <= int(response["Retry-After"]) <= 11


# --- Per install id -------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_install_id_is_limited_from_any_address(pairing_code: str) -> None:
    first = register(pairing_code, "install-1", REMOTE_ADDR="192.0.2.1")
    again = register(pairing_code, "install-1", REMOTE_ADDR="192.0.2.2")

    refused = register(pairing_code, "install-1", REMOTE_ADDR="192.0.2.3")

    assert (first.status_code, again.status_code) == (201, 200)
    assert "for this app" in assert_limited(refused)
    # The device keeps the token of its last successful call.
    assert Device.objects.get().token_hash == hash_token(again.json()["token"])


# --- The client address ---------------------------------------------------------------------


def _request(remote: str, forwarded: str | None = None) -> Any:
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().post(REGISTER, **extra)


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(settings: Any) -> None:
    assert client_address(_request("198.51.100.9", "203.0.113.1")) == "198.51.100.9"
    settings.MOTIONMIX_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(_request("198.51.100.9", "203.0.113.1")) == "198.51.100.9"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("203.0.113.1", "203.0.113.1"),
        # What the client wrote itself is left of what the proxy appended: not believed.
        ("6.6.6.6, 203.0.113.1", "203.0.113.1"),
        # Two proxies in a row: the rightmost address that is not a proxy.
        ("203.0.113.1, 10.0.0.7", "203.0.113.1"),
        ("  2001:db8::1  ", "2001:db8::1"),
        ("::ffff:203.0.113.1", "203.0.113.1"),
        # Not an address: the walk stops at the last trusted hop.
        ("203.0.113.1, not-an-ip", PROXY),
        ("203.0.113.1, garbage, 10.0.0.7", "10.0.0.7"),
        ("", PROXY),
    ],
)
def test_behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_forwarded_address(
    settings: Any, forwarded: str, client: str
) -> None:
    settings.MOTIONMIX_TRUSTED_PROXIES = ["10.0.0.0/8"]

    assert client_address(_request(PROXY, forwarded)) == client


def test_a_peer_without_an_address_is_counted_under_one_key() -> None:
    assert client_address(_request("")) == "0.0.0.0"  # noqa: S104 - a key, not a bind


@pytest.mark.django_db
def test_clients_behind_a_trusted_proxy_are_counted_apart(pairing_code: str, settings: Any) -> None:
    settings.MOTIONMIX_TRUSTED_PROXIES = [PROXY]
    for i in range(4):
        response = register(
            pairing_code, f"a-{i}", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.1"
        )
        assert response.status_code == 201

    blocked = register(pairing_code, "a-9", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.1")
    other = register(pairing_code, "b-1", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.2")

    assert_limited(blocked)
    assert other.status_code == 201
    assert set(RegisterAttempt.objects.values_list("address", flat=True)) == {
        "203.0.113.1",
        "203.0.113.2",
    }


@pytest.mark.django_db
def test_wrong_codes_behind_a_trusted_proxy_are_held_against_the_client_not_the_proxy(
    pairing_code: str, settings: Any
) -> None:
    settings.MOTIONMIX_TRUSTED_PROXIES = [PROXY]
    settings.MOTIONMIX_REGISTER_MAX_PER_ADDRESS = 100
    settings.MOTIONMIX_REGISTER_MAX_PER_INSTALL = 100
    for _ in range(settings.MOTIONMIX_PAIRING_MAX_FAILURES):
        register("WRONG1", "x", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.1")

    blocked = register(pairing_code, "a", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.1")
    other = register(pairing_code, "b", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.2")

    assert "wrong pairing codes" in assert_limited(blocked)
    assert other.status_code == 201
    assert set(PairingFailure.objects.values_list("address", flat=True)) == {"203.0.113.1"}


# --- Pruning pairing failures ---------------------------------------------------------------


@pytest.mark.django_db
def test_pairing_failures_older_than_a_day_are_pruned_when_another_is_recorded() -> None:
    now = timezone.now()
    PairingFailure.objects.create(address="192.0.2.1", at=now - timedelta(days=2))
    PairingFailure.objects.create(address="192.0.2.2", at=now - timedelta(hours=1))

    assert_error(register("WRONG1", "install-1"), 403, "pairing_refused")

    assert sorted(PairingFailure.objects.values_list("address", flat=True)) == [
        "127.0.0.1",
        "192.0.2.2",
    ]
