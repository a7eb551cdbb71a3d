"""Handing commands to devices: the long poll's wait, and the wire form of a command.

Both the device WebSocket and the long poll wait on the device's group (`device-<id>`) for a
"commands.ready" wake-up, then claim through `services.command_claim`, which hands each
command out exactly once. The wake-up carries no data, so a missed one costs nothing: every
wait claims once before it sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from devices import broadcast, services
from devices.models import Device, DeviceCommand


def command_json(command: DeviceCommand, clock_offset_s: float | None) -> dict[str, Any]:
    return {
        "id": str(command.pk),
        "type": command.type,
        "args": command.args,
        "issued_at": command.issued_at.timestamp(),
        "fire_at": command.fire_at.timestamp() if command.fire_at else None,
        "expires_at": command.expires_at.timestamp(),
        "clock_offset_s": clock_offset_s,
    }


@database_sync_to_async
def claim(*, device_id: UUID, via: str) -> list[DeviceCommand]:
    return services.command_claim(device_id=device_id, via=via)


@database_sync_to_async
def clock_offset(*, device_id: UUID) -> float | None:
    """The offset a command's times are mapped with: the fitted clock while it is fresh."""
    device = (
        Device.objects.filter(pk=device_id)
        .only("clock_offset_s", "clock_fit_offset_s", "clock_drift_ppm", "clock_fit_at")
        .first()
    )
    return device.clock_offset_now() if device is not None else None


async def commands_wait(
    *, device_id: UUID, wait_s: float, via: str, stop: asyncio.Event | None = None
) -> list[DeviceCommand]:
    """Claim the device's commands, waiting up to `wait_s` for some to be queued.

    Once `stop` is set (the client hung up) nothing more is claimed, even if the wait is slow to
    end: a Redis receive can take seconds to honour a cancellation.
    """
    stop = stop or asyncio.Event()
    layer = get_channel_layer()
    if layer is None or wait_s <= 0:
        return await claim(device_id=device_id, via=via)
    channel = await layer.new_channel()
    group = broadcast.device_group(device_id)
    # Join before the first claim, so a command queued in between wakes us.
    await layer.group_add(group, channel)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            if stop.is_set():
                return []
            claimed = await claim(device_id=device_id, via=via)
            remaining = deadline - loop.time()
            if claimed or remaining <= 0:
                return claimed
            try:
                async with asyncio.timeout(remaining):
                    await layer.receive(channel)
            except TimeoutError:
                pass
    finally:
        await layer.group_discard(group, channel)
