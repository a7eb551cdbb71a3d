"""Every change of state of a session's music track, and the cues of its playback. Nothing
else writes `MusicTrack` rows or records `music.*` events."""

from __future__ import annotations

import functools
import logging
import posixpath
from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from uuid import UUID

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

import ledger
from director.models import MusicTrack, PhotoshootSession
from director.music import broadcast, probe
from director.music.analysis import BeatGrid
from director.stills.upload import ReceivedStill
from ledger.models import ProductionEvent

logger = logging.getLogger(__name__)

CueAction = Literal["play", "pause", "seek", "ended"]
CUE_ACTIONS: tuple[str, ...] = get_args(CueAction)
# Browsers measure a track's length a little differently from PyAV (priming samples, the last
# packet's padding): a cue this far past the end is still the end.
POSITION_TOLERANCE_S = 0.5
# An analysis that has been running this long is taken to have died with its process.
ANALYSIS_LEASE_S = 900.0
ANALYSIS_MAX_ATTEMPTS = 3
STORAGE_PREFIX = "music"


class MusicRefused(Exception):
    """Not done; the message says what was wrong and what to do. `status` is the HTTP answer."""

    status = 400
    code = "invalid"


class MusicSessionEnded(MusicRefused):
    status = 409
    code = "conflict"


class MusicTrackStale(MusicRefused):
    status = 409
    code = "conflict"


class MusicTrackUnknown(MusicRefused):
    status = 404
    code = "not_found"


class MusicFileRefused(MusicRefused):
    """The upload is not usable audio: empty, not audio, corrupt or truncated (400)."""

    def __init__(self, refusal: probe.AudioRefused) -> None:
        super().__init__(str(refusal))
        self.code = refusal.code


def storage_name(*, session_id: UUID, track_id: UUID, original_name: str) -> str:
    """`music/<session>/<track>/<the uploaded name, made safe>`: the export writes the file
    under its own name, and one folder per track keeps two uploads of "song.ogg" apart."""
    base = posixpath.basename(original_name.replace("\\", "/"))
    try:
        safe = get_valid_filename(base)
    except Exception:
        safe = ""
    return f"{STORAGE_PREFIX}/{session_id}/{track_id}/{safe or 'track'}"


def _check_session_open(session: PhotoshootSession) -> None:
    if session.status == PhotoshootSession.Status.ENDED:
        raise MusicSessionEnded(
            f"“{session.name}” has ended; its music is kept as it was. Create a new session "
            "for another take."
        )


def music_track_upload(
    *, session_id: UUID, upload: ReceivedStill, original_name: str, uploaded_by: str
) -> MusicTrack:
    """Check, store and record the session's music track; it replaces the current one.

    The file is probed (opened, decoded to the end) before the transaction, so nothing is
    stored for a refused file and no write lock waits on the decode. The session's row is the
    lock: two uploads at once end with one current track and the other marked replaced by it.
    The old track and its file are kept (the ledger's cues name it). The beat analysis is
    asked for after the commit and runs elsewhere (`director/music/jobs.py`).
    """
    session = PhotoshootSession.objects.get(pk=session_id)
    _check_session_open(session)
    name = original_name.strip() or "track"
    try:
        found = probe.probe(upload.path, name=f"“{name}”")
    except probe.AudioRefused as exc:
        raise MusicFileRefused(exc) from None
    saved: list[str] = []
    try:
        return _store(
            session_id=session_id,
            upload=upload,
            original_name=name,
            found=found,
            uploaded_by=uploaded_by,
            saved=saved,
        )
    except BaseException:
        for stored in saved:
            try:
                default_storage.delete(stored)
            except Exception:
                logger.exception("could not delete %s after a failed music upload", stored)
        raise


@transaction.atomic
def _store(
    *,
    session_id: UUID,
    upload: ReceivedStill,
    original_name: str,
    found: probe.AudioProbe,
    uploaded_by: str,
    saved: list[str],
) -> MusicTrack:
    session = PhotoshootSession.objects.select_for_update(no_key=True).get(pk=session_id)
    _check_session_open(session)
    now = timezone.now()
    previous = (
        MusicTrack.objects.select_for_update(no_key=True)
        .filter(session=session, replaced_at=None)
        .first()
    )
    if previous is not None:
        previous.replaced_at = now
        previous.save(update_fields=["replaced_at"])
    track = MusicTrack(
        session=session,
        original_name=original_name[:255],
        sha256=upload.sha256,
        size_bytes=upload.size,
        container=found.container,
        codec=found.codec,
        duration_s=found.duration_s,
        sample_rate=found.sample_rate,
        channels=found.channels,
        uploaded_by=uploaded_by,
        uploaded_at=now,
    )
    # The bytes go through the storage API untouched (a local storage moves the temporary
    # file into place; S3 uploads it).
    name = default_storage.save(
        storage_name(session_id=session.pk, track_id=track.pk, original_name=original_name),
        upload.file,
    )
    saved.append(name)
    track.file.name = name
    track.save()
    if previous is not None:
        previous.replaced_by = track
        previous.save(update_fields=["replaced_by"])
    ledger.record(
        type="music.uploaded",
        session_id=session.pk,
        occurred_at=now,
        payload={
            "track_id": str(track.pk),
            "original_name": track.original_name,
            "sha256": track.sha256,
            "size_bytes": track.size_bytes,
            "container": track.container,
            "codec": track.codec,
            "duration_s": round(track.duration_s, 6),
            "sample_rate": track.sample_rate,
            "channels": track.channels,
            "replaced": str(previous.pk) if previous is not None else None,
            "by": uploaded_by,
        },
    )
    transaction.on_commit(functools.partial(_analysis_wanted, track_id=track.pk), robust=True)
    return track


def _analysis_wanted(*, track_id: UUID) -> None:
    from director.music import jobs

    jobs.music_analysis_request(track_id=track_id)


# --- The beat analysis ------------------------------------------------------------------------


@transaction.atomic
def music_analysis_claim(*, track_id: UUID, now: datetime | None = None) -> MusicTrack | None:
    """Take a track's analysis: pending, or analysing for longer than the lease (its process
    died). Returns None when there is nothing to do (done, failed, or running elsewhere), so
    two workers asked for the same track analyse it once. A track whose analysis died
    `ANALYSIS_MAX_ATTEMPTS` times is marked failed."""
    now = now or timezone.now()
    track = MusicTrack.objects.select_for_update(no_key=True).filter(pk=track_id).first()
    if track is None:
        return None
    state = MusicTrack.AnalysisState
    stale = (
        track.analysis_state == state.ANALYSING
        and track.analysis_started_at is not None
        and track.analysis_started_at < now - timedelta(seconds=ANALYSIS_LEASE_S)
    )
    if track.analysis_state != state.PENDING and not stale:
        return None
    if stale and track.analysis_attempts >= ANALYSIS_MAX_ATTEMPTS:
        _fail(track, f"The analysis did not finish in {track.analysis_attempts} tries.")
        return None
    track.analysis_state = state.ANALYSING
    track.analysis_started_at = now
    track.analysis_progress = 0.0
    track.analysis_attempts += 1
    track.save(
        update_fields=[
            "analysis_state",
            "analysis_started_at",
            "analysis_progress",
            "analysis_attempts",
        ]
    )
    _push(track)
    return track


@transaction.atomic
def music_analysis_progress(*, track_id: UUID, progress: float) -> None:
    """How far the running analysis is (0 to 1), for the operator's panel. No ledger event."""
    updated = MusicTrack.objects.filter(
        pk=track_id, analysis_state=MusicTrack.AnalysisState.ANALYSING
    ).update(analysis_progress=max(0.0, min(1.0, progress)))
    if updated:
        session_id = MusicTrack.objects.filter(pk=track_id).values_list("session_id", flat=True)[0]
        transaction.on_commit(
            functools.partial(broadcast.music_changed, session_id=session_id, track_id=track_id),
            robust=True,
        )


@transaction.atomic
def music_analysis_complete(*, track_id: UUID, grid: BeatGrid) -> MusicTrack:
    """Store the beat grid. Only the analysis that holds the claim completes it: a grid that
    arrives for a track no longer analysing (failed by a sweep meanwhile) is dropped."""
    track = MusicTrack.objects.select_for_update(no_key=True).get(pk=track_id)
    if track.analysis_state != MusicTrack.AnalysisState.ANALYSING:
        return track
    track.analysis_state = MusicTrack.AnalysisState.DONE
    track.analysis_progress = 1.0
    track.analysis_error = ""
    track.analysed_at = timezone.now()
    track.bpm = grid.bpm
    track.beats = grid.beats
    track.analysis = grid.details
    track.save(
        update_fields=[
            "analysis_state",
            "analysis_progress",
            "analysis_error",
            "analysed_at",
            "bpm",
            "beats",
            "analysis",
        ]
    )
    ledger.record(
        type="music.analysed",
        session_id=track.session_id,
        occurred_at=track.analysed_at,
        payload={
            "track_id": str(track.pk),
            "bpm": grid.bpm,
            "beats": len(grid.beats),
            "duration_s": round(track.duration_s, 6),
            "tempo_estimate_bpm": grid.tempo_estimate_bpm,
        },
    )
    return track


@transaction.atomic
def music_analysis_fail(*, track_id: UUID, error: str) -> MusicTrack:
    track = MusicTrack.objects.select_for_update(no_key=True).get(pk=track_id)
    if track.analysis_state in (MusicTrack.AnalysisState.DONE, MusicTrack.AnalysisState.FAILED):
        return track
    _fail(track, error)
    return track


def _fail(track: MusicTrack, error: str) -> None:
    track.analysis_state = MusicTrack.AnalysisState.FAILED
    track.analysis_error = error[:2000]
    track.analysed_at = timezone.now()
    track.save(update_fields=["analysis_state", "analysis_error", "analysed_at"])
    ledger.record(
        type="music.analysis_failed",
        session_id=track.session_id,
        occurred_at=track.analysed_at,
        payload={"track_id": str(track.pk), "error": track.analysis_error},
    )


@transaction.atomic
def music_analysis_retry(*, track_id: UUID) -> MusicTrack:
    """The operator asks again for the beat grid of a track whose analysis failed."""
    track = MusicTrack.objects.select_for_update(no_key=True).get(pk=track_id)
    if track.analysis_state != MusicTrack.AnalysisState.FAILED:
        raise MusicTrackStale(
            f"The analysis of “{track.original_name}” is {track.get_analysis_state_display()}"
            "; only a failed one is tried again."
        )
    track.analysis_state = MusicTrack.AnalysisState.PENDING
    track.analysis_error = ""
    track.analysis_progress = 0.0
    track.analysis_attempts = 0
    track.save(
        update_fields=[
            "analysis_state",
            "analysis_error",
            "analysis_progress",
            "analysis_attempts",
        ]
    )
    _push(track)
    transaction.on_commit(functools.partial(_analysis_wanted, track_id=track.pk), robust=True)
    return track


def _push(track: MusicTrack) -> None:
    transaction.on_commit(
        functools.partial(broadcast.music_changed, session_id=track.session_id, track_id=track.pk),
        robust=True,
    )


# --- Playback cues ----------------------------------------------------------------------------


@transaction.atomic
def music_cue_record(
    *,
    session_id: UUID,
    track_id: UUID,
    action: str,
    position_s: float,
    by: str,
    received_at: datetime,
    client_time: float | None = None,
) -> ProductionEvent:
    """Put one play, pause, seek or end of the music on the record, at the server's receive
    time (`received_at`, taken when the request arrived) with the track position the player
    reported. The track's row is locked, so a cue and a replacing upload are ordered: a cue
    for a track that was replaced is refused, never recorded after the replacement."""
    if action not in CUE_ACTIONS:
        raise MusicRefused(f"A cue's action is one of {', '.join(CUE_ACTIONS)}, not {action!r}.")
    session = PhotoshootSession.objects.get(pk=session_id)
    _check_session_open(session)
    track = (
        MusicTrack.objects.select_for_update(no_key=True)
        .filter(pk=track_id, session=session)
        .first()
    )
    if track is None:
        raise MusicTrackUnknown(f"Track {track_id} is not a music track of “{session.name}”.")
    if track.replaced_at is not None:
        raise MusicTrackStale(
            f"“{track.original_name}” was replaced by another upload; reload the page to play "
            "the current track."
        )
    if not (0.0 <= position_s <= track.duration_s + POSITION_TOLERANCE_S):
        raise MusicRefused(
            f"position_s {position_s} is outside the track (0 to {track.duration_s:.3f} s)."
        )
    payload: dict[str, Any] = {
        "track_id": str(track.pk),
        "action": action,
        "position_s": round(position_s, 4),
        "server_time": received_at.timestamp(),
        "by": by,
        "client_time": client_time,
    }
    return ledger.record(
        type="music.cue", session_id=session.pk, occurred_at=received_at, payload=payload
    )
