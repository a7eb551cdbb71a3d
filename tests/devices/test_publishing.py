"""The services that record a camera's publish to the hero relay."""

from __future__ import annotations

from typing import Any

import pytest

from devices import services
from devices.models import Device
from ledger.models import ProductionEvent
from tests.support.api import register_device

pytestmark = pytest.mark.django_db


@pytest.fixture
def device() -> Any:
    return register_device("pub-1", name="Cam 1").device


def _events(type: str) -> list[ProductionEvent]:
    return list(ProductionEvent.objects.filter(type=type).order_by("seq"))


def test_a_publish_is_recorded_and_shown_with_its_measured_size_and_rate(device: Any) -> None:
    services.device_publish_start(device_id=device.pk, publish_id="p1", codec="VP8")
    assert services.device_publish_measure(
        device_id=device.pk, publish_id="p1", width=640, height=480, fps=29.97
    )
    device.refresh_from_db()
    assert device.is_publishing and device.publish_size == "640\u00d7480"
    assert device.publish_fps == 30.0 and device.publish_codec == "VP8"
    assert _events("device.publish_started")[0].payload == {
        "publish_id": "p1",
        "codec": "VP8",
        "replaced": None,
    }


def test_a_steady_feed_writes_nothing_more(device: Any) -> None:
    services.device_publish_start(device_id=device.pk, publish_id="p1", codec="VP8")
    services.device_publish_measure(
        device_id=device.pk, publish_id="p1", width=640, height=480, fps=30
    )
    assert not services.device_publish_measure(
        device_id=device.pk, publish_id="p1", width=640, height=480, fps=29.5
    )
    assert services.device_publish_measure(
        device_id=device.pk, publish_id="p1", width=640, height=480, fps=24
    )
    assert services.device_publish_measure(
        device_id=device.pk, publish_id="p1", width=1280, height=720, fps=24
    )


def test_a_new_publish_replaces_the_old_one_on_the_record(device: Any) -> None:
    services.device_publish_start(device_id=device.pk, publish_id="p1", codec="VP8")
    services.device_publish_start(device_id=device.pk, publish_id="p2", codec="H264")
    stopped = _events("device.publish_stopped")
    assert [e.payload["reason"] for e in stopped] == ["replaced"]
    assert stopped[0].payload["publish_id"] == "p1"
    assert _events("device.publish_started")[1].payload["replaced"] == "p1"
    # The late end of the replaced publish changes nothing.
    assert (
        services.device_publish_stop(device_id=device.pk, publish_id="p1", reason="ice_failed")
        is None
    )
    assert (
        services.device_publish_measure(
            device_id=device.pk, publish_id="p1", width=1, height=1, fps=1
        )
        is False
    )
    assert Device.objects.get(pk=device.pk).publish_id == "p2"


def test_stopping_clears_the_card_and_records_why(device: Any) -> None:
    services.device_publish_start(device_id=device.pk, publish_id="p1", codec="VP8")
    services.device_publish_stop(device_id=device.pk, publish_id="p1", reason="no_media", frames=90)
    device.refresh_from_db()
    assert not device.is_publishing and device.publish_size == ""
    payload = _events("device.publish_stopped")[0].payload
    assert payload["reason"] == "no_media" and payload["frames"] == 90
    assert payload["duration_s"] >= 0
    with pytest.raises(ValueError, match="unknown publish stop reason"):
        services.device_publish_stop(device_id=device.pk, publish_id="p1", reason="bored")
