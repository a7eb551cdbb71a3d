from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from devices.models import Device, DeviceCommand
from director import services
from director.models import PhotoshootSession
from ledger.convex import ConvexLedger
from ledger.models import ProductionEvent
from ledger.sync import outbox_flush
from tests.support.api import register_device
from tests.support.bridge import Bridge, running_bridge

pytestmark = pytest.mark.django_db


def _device(install_id: str, *, kind: str = "iphone", online: bool = True) -> Device:
    return register_device(install_id, kind=kind, online=online).device


def _events(session: PhotoshootSession) -> list[ProductionEvent]:
    return list(ProductionEvent.objects.filter(stream=str(session.pk)).order_by("seq"))


def test_a_session_starts_with_every_online_camera_but_webcams(operator: Any) -> None:
    a, b = _device("a"), _device("b")
    _device("w", kind="webcam")
    _device("off", online=False)
    session = services.session_create(name="Lookbook", operator=operator)

    session = services.session_start(session_id=session.pk)

    assert session.status == PhotoshootSession.Status.LIVE and session.started_at
    assert set(session.devices.all()) == {a, b}
    assert session.hero in (a, b)
    started = _events(session)[1]
    assert started.type == "session.started"
    assert set(started.payload["devices"]) == {str(a.pk), str(b.pk)}
    assert started.payload["session"]["status"] == "live"
    assert [(e.seq, e.type) for e in _events(session)] == [
        (1, "session.created"),
        (2, "session.started"),
        (3, "command.sent"),
        (4, "command.sent"),
        (5, "command.sent"),
    ]
    tally = _events(session)[2].payload
    assert (tally["command"], tally["args"]) == ("tally", {"state": "live"})
    assert DeviceCommand.objects.get(type="tally").device_id == session.hero_id
    # Every camera of the session publishes video, so any of them can go on air at once.
    publishing = DeviceCommand.objects.filter(type="start_publish", session_id=session.pk)
    assert set(publishing.values_list("device_id", flat=True)) == {a.pk, b.pk}


def test_a_camera_takes_part_in_one_live_session_at_most(operator: Any) -> None:
    _device("a")
    first = services.session_create(name="One", operator=operator)
    services.session_start(session_id=first.pk)
    second = services.session_create(name="Two", operator=operator)

    with pytest.raises(services.SessionRefused, match="Cam a already take part"):
        services.session_start(session_id=second.pk)

    second.refresh_from_db()
    assert second.status == PhotoshootSession.Status.DRAFT
    assert [e.type for e in _events(second)] == ["session.created"]


def test_stopping_records_a_summary_and_cannot_be_repeated(operator: Any) -> None:
    _device("a")
    session = services.session_create(name="Take", operator=operator)
    services.session_start(session_id=session.pk)

    session = services.session_stop(session_id=session.pk)

    assert session.status == PhotoshootSession.Status.ENDED
    stopped, tally_off, unpublish = _events(session)[-3:]
    assert stopped.type == "session.stopped"
    assert stopped.payload["summary"]["devices"] == 1
    # created, started, the hero's tally going live and the camera's start_publish, and those
    # two commands ended by the stop
    assert stopped.payload["summary"]["events"] == 6
    assert tally_off.payload["args"] == {"state": "off"}
    assert unpublish.payload["command"] == "stop_publish"
    assert stopped.payload["session"]["endedAt"] >= stopped.payload["session"]["startedAt"]
    with pytest.raises(services.SessionRefused, match="not live"):
        services.session_stop(session_id=session.pk)
    with pytest.raises(services.SessionRefused, match="only a draft"):
        services.session_start(session_id=session.pk)


def test_a_session_needs_a_name(operator: Any) -> None:
    with pytest.raises(services.SessionRefused):
        services.session_create(name="   ", operator=operator)


def test_the_page_creates_starts_and_stops_a_session(operator_client: Client) -> None:
    _device("a")
    response = operator_client.post(reverse("director:session_create"), {"name": "Studio A"})
    assert response.status_code == 302
    session = PhotoshootSession.objects.get(name="Studio A")

    start = operator_client.post(
        reverse("director:session_start", args=[session.pk]), headers={"HX-Request": "true"}
    )
    assert start.status_code == 200
    assert 'data-status="live"' in start.content.decode()
    assert "is live" in json.loads(start["HX-Trigger"])["toast"]["message"]

    again = operator_client.post(reverse("director:session_start", args=[session.pk]))
    assert again.status_code == 409
    assert "only a draft" in json.loads(again["HX-Trigger"])["toast"]["message"]

    stop = operator_client.post(reverse("director:session_stop", args=[session.pk]))
    assert stop.status_code == 200 and 'data-status="ended"' in stop.content.decode()


def test_a_blank_name_is_shown_back_with_the_error(operator_client: Client) -> None:
    response = operator_client.post(reverse("director:session_create"), {"name": " "})
    assert response.status_code == 400
    assert b"This field is required" in response.content


@pytest.fixture
def bridge(tmp_path: Path, settings: Any) -> Iterator[Bridge]:
    with running_bridge(tmp_path) as running:
        settings.CONVEX_URL = running.url
        settings.CONVEX_DEPLOY_KEY = running.admin_key
        yield running


def test_a_session_start_and_stop_land_in_convex(bridge: Bridge, operator: Any) -> None:
    _device("a")
    session = services.session_create(name="Convex take", operator=operator)
    services.session_start(session_id=session.pk)
    services.session_stop(session_id=session.pk)

    result = outbox_flush()

    assert result.failed == 0
    summary = ConvexLedger().session_summary(str(session.pk))
    assert summary["session"]["status"] == "ended"
    assert summary["session"]["name"] == "Convex take"
    assert summary["session"]["operator"] == get_user_model().objects.get().get_username()
    # created, started, tally live, start_publish, their expiries at the stop, stopped,
    # tally off, stop_publish
    assert summary["eventCount"] == 9
    assert summary["countsByType"]["session.stopped"] == 1
    call_command("ledger_verify", str(session.pk))


def test_publishes_lost_with_a_killed_relay_are_ended_and_their_cameras_asked_at_once(
    operator: Any,
) -> None:
    from devices import services as device_services

    a, b, c = _device("a"), _device("b"), _device("c")
    session = services.session_create(name="Relay crash", operator=operator)
    services.session_start(session_id=session.pk, device_ids=[a.pk, b.pk])
    asked_at_start = DeviceCommand.objects.filter(type="start_publish").count()
    for device, publish_id in ((a, "old-a"), (b, "old-b"), (c, "old-c")):
        device_services.device_publish_start(
            device_id=device.pk, publish_id=publish_id, codec="VP8", session_id=session.pk
        )
    # b published again to the new relay before the old one's publish was ended.
    device_services.device_publish_start(
        device_id=b.pk, publish_id="new-b", codec="VP8", session_id=session.pk
    )

    ended = services.hero_relay_started(lost=[(a.pk, "old-a"), (b.pk, "old-b"), (c.pk, "old-c")])

    assert set(ended) == {a.pk, c.pk}
    a.refresh_from_db(), b.refresh_from_db(), c.refresh_from_db()
    assert (a.publish_id, a.publishing_since) == ("", None)
    assert b.publish_id == "new-b" and b.publishing_since is not None
    assert c.publish_id == ""
    stops = ProductionEvent.objects.filter(
        type="device.publish_stopped", payload__reason="relay_restarted"
    )
    assert sorted((e.device_id, e.payload["publish_id"]) for e in stops) == sorted(
        [(a.pk, "old-a"), (c.pk, "old-c")]
    )
    assert stops.get(device_id=a.pk).session_id == session.pk
    # a was asked at the session's start a moment ago, and is asked again now all the same;
    # c is in no live session, and b publishes: neither is asked.
    asked = DeviceCommand.objects.filter(type="start_publish").order_by("issued_at")
    assert asked.count() == asked_at_start + 1
    assert asked.last().device_id == a.pk  # type: ignore[union-attr]
    # Told again (a second relay start finding nothing more), nothing changes.
    assert services.hero_relay_started(lost=[(a.pk, "old-a")]) == []
    assert DeviceCommand.objects.filter(type="start_publish").count() == asked_at_start + 1


def test_cameras_of_a_live_session_that_stopped_publishing_are_asked_again(
    operator: Any,
) -> None:
    a, b = _device("a"), _device("b")
    session = services.session_create(name="Restart", operator=operator)
    services.session_start(session_id=session.pk)
    # Just asked at the start: nobody is nagged.
    assert services.sessions_publish_reconcile() == 0
    DeviceCommand.objects.filter(type="start_publish").update(
        issued_at=timezone.now() - timedelta(seconds=services.PUBLISH_RETRY_S + 1)
    )
    from devices import services as device_services

    device_services.device_publish_start(device_id=a.pk, publish_id="p1", codec="VP8")
    # b is online, in the session and silent: asked again, once; a publishes already.
    assert services.sessions_publish_reconcile() == 1
    assert services.sessions_publish_reconcile() == 0
    latest = DeviceCommand.objects.filter(type="start_publish").order_by("-issued_at").first()
    assert latest is not None and latest.device_id == b.pk
    assert latest.session_id == session.pk
    services.session_stop(session_id=session.pk)
    DeviceCommand.objects.update(issued_at=timezone.now() - timedelta(minutes=5))
    assert services.sessions_publish_reconcile() == 0
