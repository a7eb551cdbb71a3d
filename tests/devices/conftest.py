from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer

from tests.devices.support import FleetListener


@pytest.fixture
def fleet() -> Iterator[FleetListener]:
    """A test channel in the "fleet" group of the real channel layer."""
    layer = get_channel_layer()
    assert layer is not None
    listener = FleetListener(layer)
    yield listener
    listener.close()


@pytest.fixture
def registered(device_api: Any) -> dict[str, Any]:
    """One iPhone registered through the API: {device_id, token, heartbeat_interval_s}."""
    return dict(device_api.register("install-1"))
