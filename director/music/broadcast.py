"""The music push: a track's analysis moved on (claimed, progress) without a ledger event.
Ids only; the session's socket renders the music panel. (Uploads, grids and cues are ledger
events, and reach the panel through the session's own push.)"""

from __future__ import annotations

import time
from typing import Literal, TypedDict
from uuid import UUID

from channels.layers import get_channel_layer

from ledger.broadcast import session_group
from ledger.pushes import send_soon


class MusicChanged(TypedDict):
    type: Literal["music.changed"]
    track_id: str
    # Server clock (unix s) after the commit: a panel rendered later already shows it.
    committed_at: float


def music_changed(*, session_id: UUID, track_id: UUID) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = MusicChanged(type="music.changed", track_id=str(track_id), committed_at=time.time())
    send_soon(
        layer.group_send(session_group(session_id), dict(message)),
        what=f"push of music track {track_id}",
    )
