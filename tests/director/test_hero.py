"""The hero of a live session: switching it sets tally, and stopping the session ends what it
asked of the cameras."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from devices import services as device_services
from devices.models import Device, DeviceCommand
from director import services
from director.models import PhotoshootSession
from ledger.models import ProductionEvent
from tests.support.api import register_device

pytestmark = pytest.mark.django_db


def _live(operator: Any, *devices: Device) -> PhotoshootSession:
    session = services.session_create(name="Look 2", operator=operator)
    return services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])


def _tallies(device: Device) -> list[str]:
    return [
        c.args["state"]
        for c in DeviceCommand.objects.filter(device=device, type="tally").order_by("issued_at")
    ]


def test_switching_the_hero_moves_the_tally_and_is_on_the_record(operator: Any) -> None:
    first = register_device("iphone-a", name="Cam A").device
    second = register_device("iphone-b", name="Cam B").device
    session = _live(operator, first, second)
    assert session.hero_id == first.pk

    session = services.session_hero_switch(
        session_id=session.pk, device_id=second.pk, switched_by="op"
    )

    assert session.hero_id == second.pk
    assert _tallies(first) == ["live", "off"]
    assert _tallies(second) == ["live"]
    event = ProductionEvent.objects.get(type="hero.switched")
    assert event.payload == {"from": str(first.pk), "to": str(second.pk), "by": "op"}
    assert Device.objects.get(pk=second.pk).tally == "live"
    assert Device.objects.get(pk=first.pk).tally == "off"


def test_switching_to_the_current_hero_changes_nothing(operator: Any) -> None:
    cam = register_device("iphone-a").device
    session = _live(operator, cam)
    before = ProductionEvent.objects.count()
    services.session_hero_switch(session_id=session.pk, device_id=cam.pk, switched_by="op")
    assert ProductionEvent.objects.count() == before


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("outsider", "does not take part"),
        ("offline", "Cam B is offline"),
        ("ended", "is not live"),
    ],
)
def test_a_hero_that_cannot_go_on_air_is_refused(operator: Any, case: str, message: str) -> None:
    hero = register_device("iphone-a", name="Cam A").device
    other = register_device("iphone-b", name="Cam B").device
    session = _live(operator, hero, *([] if case == "outsider" else [other]))
    if case == "offline":
        device_services.device_mark_offline(device_id=other.pk, reason="test")
    if case == "ended":
        services.session_stop(session_id=session.pk)
    with pytest.raises(services.SessionRefused, match=message):
        services.session_hero_switch(session_id=session.pk, device_id=other.pk, switched_by="op")
    assert not ProductionEvent.objects.filter(type="hero.switched").exists()


def test_stopping_a_session_expires_what_it_asked_and_turns_the_tally_off(
    operator: Any,
) -> None:
    cam = register_device("iphone-a").device
    session = _live(operator, cam)
    capture = device_services.commands_issue_capture(device_ids=[cam.pk], session_id=session.pk)[0]

    services.session_stop(session_id=session.pk)

    capture.refresh_from_db()
    assert capture.state == DeviceCommand.State.EXPIRED
    expired = ProductionEvent.objects.get(
        type="command.expired", payload__command_id=str(capture.pk)
    )
    assert expired.payload["reason"] == "session_stopped"
    tally_off = DeviceCommand.objects.filter(device=cam, type="tally").latest("issued_at")
    assert (tally_off.args, tally_off.state) == ({"state": "off"}, DeviceCommand.State.QUEUED)


def test_make_hero_on_a_card_puts_the_camera_on_air(operator: Any, operator_client: Client) -> None:
    first = register_device("iphone-a", name="Cam A").device
    second = register_device("iphone-b", name="Cam B").device
    _live(operator, first, second)
    page = operator_client.get("/registry/").content.decode()
    second_card = page.split(f'id="device-{second.pk}-card"')[1].split("</article>")[0]
    assert 'data-testid="make-hero"' in second_card

    response = operator_client.post(
        f"/registry/devices/{second.pk}/hero", headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert 'data-testid="on-air"' in response.content.decode()
    assert "Cam B is on air" in json.loads(response["HX-Trigger"])["toast"]["message"]


def test_make_hero_outside_a_live_session_is_refused_with_a_toast(
    operator_client: Client,
) -> None:
    cam = register_device("iphone-a", name="Cam A").device
    response = operator_client.post(f"/registry/devices/{cam.pk}/hero")
    assert response.status_code == 409
    assert "not in a live session" in json.loads(response["HX-Trigger"])["toast"]["message"]
