"""Typed messages to and from the hero relay, sent after commit.

Switches reach the relay through the channel layer, whichever process recorded them (an
operator's request, a Celery worker carrying out Ghost's autopilot). Previews go from the relay
to every operator page, as the fleet's other pushes do.
"""

from __future__ import annotations

import time
from typing import Literal, TypedDict
from uuid import UUID

from channels.layers import get_channel_layer

from devices.broadcast import FLEET_GROUP
from ledger.pushes import send_soon

HERO_GROUP = "hero-relay"


class HeroSwitch(TypedDict):
    type: Literal["hero.switch"]
    session_id: str
    device_id: str | None  # None: the session ended, nothing is on air
    cause: str  # the event id that chose the camera
    switched_at: float  # unix s, server clock, at commit


class HeroPreview(TypedDict):
    type: Literal["hero.preview"]
    device_id: str
    image: str  # a data: URL of a small JPEG
    width: int  # of the camera's frames, not of the preview
    height: int
    fps: float
    sent_at: float


def hero_switch_announce(*, session_id: UUID, device_id: UUID | None, cause: UUID | str) -> None:
    """Tell the relay (on commit) what a session's hero is now."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = HeroSwitch(
        type="hero.switch",
        session_id=str(session_id),
        device_id=str(device_id) if device_id else None,
        cause=str(cause),
        switched_at=time.time(),
    )
    send_soon(layer.group_send(HERO_GROUP, dict(message)), what="hero switch to the relay")


async def hero_preview_send(message: HeroPreview) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(FLEET_GROUP, dict(message))
