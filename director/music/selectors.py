"""Reads of the session's music: the current track, the panel's state, and `session_music`
for the session export."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from uuid import UUID

from django.core.files.storage import default_storage
from django.shortcuts import get_object_or_404
from django.utils import timezone

from director.models import MusicTrack, PhotoshootSession
from ledger.models import ProductionEvent

CUE_TYPE = "music.cue"
# The panel works out "playing at 1:23" from the newest cues of the current track.
PANEL_CUES = 50


def music_track_current(*, session_id: UUID | str) -> MusicTrack | None:
    return MusicTrack.objects.filter(session_id=session_id, replaced_at=None).first()


def music_track_get(*, session_id: UUID | str, track_id: UUID | str) -> MusicTrack:
    """A track of the session (current or replaced), or 404."""
    return get_object_or_404(MusicTrack, pk=track_id, session_id=session_id)


# --- What the operator's panel shows ----------------------------------------------------------


@dataclass(frozen=True)
class Playback:
    """Where the music is, from the cues: `state` is stopped (no cue yet), playing, paused or
    ended; `position_s` where it was at `at` (the last cue's server time), `by` who cued."""

    state: str
    position_s: float
    at: datetime | None
    by: str

    def position_now(self, now: datetime, duration_s: float) -> float:
        if self.state != "playing" or self.at is None:
            return self.position_s
        return min(duration_s, self.position_s + max(0.0, (now - self.at).total_seconds()))


STOPPED = Playback(state="stopped", position_s=0.0, at=None, by="")


def playback_get(*, session_id: UUID | str, track: MusicTrack) -> Playback:
    events = list(
        ProductionEvent.objects.filter(stream=str(session_id), type=CUE_TYPE)
        .order_by("-seq")
        .only("payload", "occurred_at")[:PANEL_CUES]
    )
    playback = STOPPED
    for event in reversed(events):
        payload = event.payload
        if payload.get("track_id") != str(track.pk):
            continue
        action = payload.get("action")
        state = {"play": "playing", "pause": "paused", "ended": "ended"}.get(
            str(action), playback.state if playback.state != "stopped" else "paused"
        )
        playback = Playback(
            state=state,
            position_s=float(payload.get("position_s", 0.0)),
            at=event.occurred_at,
            by=str(payload.get("by", "")),
        )
    return playback


def music_panel_context(*, session: PhotoshootSession) -> dict[str, Any]:
    """What `director/partials/music_panel.html` needs."""
    track = music_track_current(session_id=session.pk)
    now = timezone.now()
    context: dict[str, Any] = {
        "session": session,
        "track": track,
        "playback": None,
        "playback_position_s": 0.0,
        "can_upload": session.status != PhotoshootSession.Status.ENDED,
    }
    if track is not None:
        playback = playback_get(session_id=session.pk, track=track)
        context["playback"] = playback
        context["playback_position_s"] = playback.position_now(now, track.duration_s)
    return context


# --- The session export -------------------------------------------------------------------------


@dataclass(frozen=True)
class MusicCue:
    """One `music.cue` ledger event. `server_time` (unix s) is when the server received it,
    the event's own time; `position_s` is seconds into the track `track_id`."""

    seq: int
    event_id: UUID
    track_id: UUID
    action: str  # play | pause | seek | ended
    position_s: float
    server_time: float
    by: str
    client_time: float | None

    def as_json(self) -> dict[str, Any]:
        """One line of `audio/cues.ndjson`."""
        return {
            "seq": self.seq,
            "event_id": str(self.event_id),
            "track_id": str(self.track_id),
            "action": self.action,
            "position_s": self.position_s,
            "server_time": self.server_time,
            "by": self.by,
            "client_time": self.client_time,
        }


@dataclass(frozen=True)
class MusicTrackInfo:
    """One uploaded track, as the export needs it. `file_name` is the stored file's own name
    (the uploaded name made safe, extension kept), for `audio/<file_name>`; `open()` reads its
    bytes exactly as uploaded, through the storage (local or S3); `path` is a local path when
    the storage has one."""

    id: UUID
    file_name: str
    storage_name: str
    path: str | None
    original_name: str
    sha256: str
    size_bytes: int
    container: str
    codec: str
    duration_s: float
    sample_rate: int
    channels: int
    uploaded_at: datetime
    uploaded_by: str
    replaced_at: datetime | None
    analysis_state: str  # pending | analysing | done | failed
    analysis_error: str
    bpm: float | None
    beats: list[float] = field(default_factory=list)
    analysis: dict[str, Any] = field(default_factory=dict)

    @property
    def is_current(self) -> bool:
        return self.replaced_at is None

    def open(self) -> IO[bytes]:
        return default_storage.open(self.storage_name, "rb")

    def as_json(self) -> dict[str, Any]:
        """The track's facts (no bytes), e.g. for session.json."""
        return {
            "track_id": str(self.id),
            "file_name": self.file_name,
            "original_name": self.original_name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "container": self.container,
            "codec": self.codec,
            "duration_s": self.duration_s,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "uploaded_at": self.uploaded_at.isoformat(),
            "uploaded_by": self.uploaded_by,
            "replaced_at": self.replaced_at.isoformat() if self.replaced_at else None,
            "analysis_state": self.analysis_state,
            "analysis_error": self.analysis_error,
            "bpm": self.bpm,
            "beats": self.beats,
            "analysis": self.analysis,
        }


@dataclass(frozen=True)
class SessionMusic:
    """The session's music for the export.

    - `track`: the current track, or None when no music was uploaded.
    - `tracks`: every track uploaded to the session, oldest first (replaced ones too: cues
      made before a replacement name them).
    - `cues`: every `music.cue` of the session in ledger seq order (all tracks); `cues_for`
      keeps one track's.
    """

    track: MusicTrackInfo | None
    tracks: list[MusicTrackInfo]
    cues: list[MusicCue]

    def cues_for(self, track_id: UUID | str) -> list[MusicCue]:
        return [cue for cue in self.cues if str(cue.track_id) == str(track_id)]


def _info(track: MusicTrack) -> MusicTrackInfo:
    try:
        path: str | None = default_storage.path(track.file.name)
    except NotImplementedError:
        path = None
    return MusicTrackInfo(
        id=track.pk,
        file_name=posixpath.basename(track.file.name),
        storage_name=track.file.name,
        path=path,
        original_name=track.original_name,
        sha256=track.sha256,
        size_bytes=track.size_bytes,
        container=track.container,
        codec=track.codec,
        duration_s=track.duration_s,
        sample_rate=track.sample_rate,
        channels=track.channels,
        uploaded_at=track.uploaded_at,
        uploaded_by=track.uploaded_by,
        replaced_at=track.replaced_at,
        analysis_state=track.analysis_state,
        analysis_error=track.analysis_error,
        bpm=track.bpm,
        beats=list(track.beats or []),
        analysis=dict(track.analysis or {}),
    )


def session_music(session_id: UUID | str) -> SessionMusic:
    """The session's music track(s) and play cues (see `SessionMusic`)."""
    tracks = [
        _info(t) for t in MusicTrack.objects.filter(session_id=session_id).order_by("uploaded_at")
    ]
    cues = [
        MusicCue(
            seq=event.seq,
            event_id=event.event_id,
            track_id=UUID(event.payload["track_id"]),
            action=event.payload["action"],
            position_s=float(event.payload["position_s"]),
            server_time=float(event.payload["server_time"]),
            by=str(event.payload.get("by", "")),
            client_time=event.payload.get("client_time"),
        )
        for event in ProductionEvent.objects.filter(stream=str(session_id), type=CUE_TYPE).order_by(
            "seq"
        )
    ]
    current = next((t for t in tracks if t.is_current), None)
    return SessionMusic(track=current, tracks=tracks, cues=cues)
