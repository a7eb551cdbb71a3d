"""Typed push payloads for the fleet, sent after commit. Ids only: consumers render partials."""

from __future__ import annotations

import time
from typing import Literal, TypedDict
from uuid import UUID

from channels.layers import get_channel_layer

from ledger.pushes import send_soon

FLEET_GROUP = "fleet"


class DevicesChanged(TypedDict):
    type: Literal["devices.changed"]
    device_id: str
    # Server clock (unix s) after the commit: pages may share a render begun later.
    sent_at: float


class PairingChanged(TypedDict):
    type: Literal["pairing.changed"]


class CommandsReady(TypedDict):
    type: Literal["commands.ready"]


def device_group(device_id: UUID | str) -> str:
    """The group of whatever delivers to this device: its socket, or a long poll waiting."""
    return f"device-{device_id}"


def _send(group: str, message: DevicesChanged | PairingChanged | CommandsReady) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    send_soon(layer.group_send(group, dict(message)), what=f"push to {group}")


def device_changed(*, device_id: UUID) -> None:
    _send(
        FLEET_GROUP,
        DevicesChanged(type="devices.changed", device_id=str(device_id), sent_at=time.time()),
    )


def devices_changed(*, device_ids: list[UUID]) -> None:
    """One hand-over to the event loop for a whole batch of changed devices."""
    layer = get_channel_layer()
    if layer is None or not device_ids:
        return

    sent_at = time.time()

    async def send_all() -> None:
        for device_id in device_ids:
            message = DevicesChanged(
                type="devices.changed", device_id=str(device_id), sent_at=sent_at
            )
            await layer.group_send(FLEET_GROUP, dict(message))

    send_soon(send_all(), what=f"push of {len(device_ids)} devices to {FLEET_GROUP}")


def pairing_changed() -> None:
    _send(FLEET_GROUP, PairingChanged(type="pairing.changed"))


def commands_ready(*, device_id: UUID) -> None:
    """Wake the device's socket or long poll: it has commands queued."""
    _send(device_group(device_id), CommandsReady(type="commands.ready"))
