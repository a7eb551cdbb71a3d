"""The stills push: a still landed. Ids only; the operator's socket renders the strip."""

from __future__ import annotations

import time
from typing import Literal, TypedDict
from uuid import UUID

from channels.layers import get_channel_layer

from devices.broadcast import FLEET_GROUP
from ledger.pushes import send_soon


class StillsChanged(TypedDict):
    type: Literal["stills.changed"]
    still_id: str
    device_id: str
    # Server clock (unix s) after the commit: a strip rendered from a query that began later
    # already shows this still, so the consumer can skip a second render of a burst.
    committed_at: float


def stills_changed(*, still_id: UUID, device_id: UUID) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = StillsChanged(
        type="stills.changed",
        still_id=str(still_id),
        device_id=str(device_id),
        committed_at=time.time(),
    )
    send_soon(layer.group_send(FLEET_GROUP, dict(message)), what=f"push of still {still_id}")
