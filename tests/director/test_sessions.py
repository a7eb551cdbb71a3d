from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

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
    ]
    tally = _events(session)[-1].payload
    assert (tally["command"], tally["args"]) == ("tally", {"state": "live"})
    assert DeviceCommand.objects.get(type="tally").device_id == session.hero_id


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
    stopped, tally_off = _events(session)[-2:]
    assert stopped.type == "session.stopped"
    assert stopped.payload["summary"]["devices"] == 1
    # created, started, the hero's tally going live, and that command ended by the stop
    assert stopped.payload["summary"]["events"] == 4
    assert tally_off.payload["args"] == {"state": "off"}
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
    # created, started, tally live, its expiry at the stop, stopped, tally off
    assert summary["eventCount"] == 6
    assert summary["countsByType"]["session.stopped"] == 1
    call_command("ledger_verify", str(session.pk))
