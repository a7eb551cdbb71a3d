"""Redis going away must not cost a device its heartbeat or the ledger its event."""

from __future__ import annotations

from typing import Any

import pytest
from channels.layers import channel_layers

from devices.models import Device
from ledger.models import ProductionEvent
from tests.support.server import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_down(settings: Any) -> None:
    # A loopback port nobody listens on: the layer's connect is refused at once.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_a_heartbeat_is_stored_and_answered_while_redis_is_down(
    redis_down: None, device_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registration = device_api.register()
    device = Device.objects.get(pk=registration["device_id"])
    Device.objects.filter(pk=device.pk).update(status=Device.Status.OFFLINE)

    response = device_api.heartbeat(registration["token"], battery=0.42)

    assert response.status_code == 200, response.content
    device.refresh_from_db()
    assert device.battery == pytest.approx(0.42)
    assert device.status == Device.Status.ONLINE
    assert ProductionEvent.objects.filter(type="device.online", device_id=device.pk).count() == 1
    assert "push to fleet failed" in caplog.text
