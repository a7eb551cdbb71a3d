"""Typed push payloads for the fleet, sent after commit. Ids only: consumers render partials."""

from __future__ import annotations

import logging
from typing import Literal, TypedDict
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

FLEET_GROUP = "fleet"


class DevicesChanged(TypedDict):
    type: Literal["devices.changed"]
    device_id: str


class PairingChanged(TypedDict):
    type: Literal["pairing.changed"]


def _send(group: str, message: DevicesChanged | PairingChanged) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, dict(message))
    except Exception:
        # The change is committed; a push that fails (Redis down) must not fail the request.
        # Pages resync their partials when their socket reconnects.
        logger.warning("push to %s failed: %s", group, message["type"], exc_info=True)


def device_changed(*, device_id: UUID) -> None:
    _send(FLEET_GROUP, DevicesChanged(type="devices.changed", device_id=str(device_id)))


def pairing_changed() -> None:
    _send(FLEET_GROUP, PairingChanged(type="pairing.changed"))
