"""`GET /api/v1/devices/commands?wait=S`, the long poll, answered at the ASGI layer.

A long poll waits up to 25 s. Through Django's request cycle the wait would hold a worker
thread for all that time (a synchronous middleware makes Django run async views inside one),
so, like heartbeats, the call is answered before Django: the token is checked, the wait is an
await on the device's channel group, and the claim is one short database call. The Ninja
operation in devices/api.py is the same contract for other servers and documents it.

A client that hangs up while waiting stops the wait before anything is claimed, so a command
is not marked delivered to a poll nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from devices import delivery, selectors
from devices.api import MAX_WAIT_S
from devices.heartbeats import check_call, respond, unauthorized
from devices.models import DeviceCommand
from motionmix.types import Receive, Scope, Send

PATH = "/api/v1/devices/commands"


def _wait_s(scope: Scope) -> float | str:
    """The wait in seconds, or what is wrong with it."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("wait", ["0"])
    try:
        wait = float(values[-1])
    except ValueError:
        return f"wait: {values[-1]!r} is not a number of seconds"
    if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT_S:
        return f"wait: must be between 0 and {MAX_WAIT_S:g} seconds"
    return wait


async def _hung_up(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def commands_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    checked = await check_call(scope, send, method="GET")
    if checked is None:
        return
    _, token = checked
    device = await database_sync_to_async(selectors.device_get_by_token)(token=token)
    if device is None:
        await unauthorized(send)
        return
    wait = _wait_s(scope)
    if isinstance(wait, str):
        await respond(send, 400, {"error": "invalid", "detail": wait})
        return
    hung_up = asyncio.Event()
    waiting = asyncio.ensure_future(
        delivery.commands_wait(
            device_id=device.pk, wait_s=wait, via=DeviceCommand.Via.POLL, stop=hung_up
        )
    )
    hang_up = asyncio.ensure_future(_hung_up(receive))
    done, _ = await asyncio.wait({waiting, hang_up}, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        hung_up.set()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return
    hang_up.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hang_up
    claimed = waiting.result()
    offset = await delivery.clock_offset(device_id=device.pk)
    answer: dict[str, Any] = {
        "commands": [delivery.command_json(c, offset) for c in claimed],
        "clock_offset_s": offset,
    }
    await respond(send, 200, answer)
