"""The session's music track: upload checks (PyAV), the beat grid (librosa, in a child
process, never in the request), playback cues on the ledger, the file served by range, and
the export's selector. Real files: the song from ../shared/data, a metronome made by the
simulator, silence, a JPEG."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import av
import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from devices.simulator_operator import click_track, parse_music_panel
from director import services as session_services
from director.models import MusicTrack, PhotoshootSession
from director.music import jobs, selectors
from director.music.ranges import Unsatisfiable, parse_range
from ledger.models import ProductionEvent
from tests.director.stills_support import jpeg_bytes
from tests.support.shared_data import SHARED_DATA

SONG = SHARED_DATA / "music" / "muldjord-chaos-god" / "song.ogg"
SONG_BPM = 170.0


def song_bytes() -> bytes:
    if not SONG.exists():
        pytest.skip(f"the real recording is not at {SONG} (../shared/data is missing)")
    return SONG.read_bytes()


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def session(operator: Any) -> PhotoshootSession:
    return session_services.session_create(name="Music take", operator=operator)


@pytest.fixture(scope="module")
def click() -> bytes:
    return click_track()


def upload(client: Client, session_id: object, name: str, data: bytes) -> Any:
    return client.post(
        f"/sessions/{session_id}/music/upload",
        {"file": SimpleUploadedFile(name, data, "application/octet-stream")},
        HTTP_HX_REQUEST="true",
    )


def cue(client: Client, session_id: object, body: object) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/sessions/{session_id}/music/cue", data, content_type="application/json")


def events(session: PhotoshootSession, prefix: str = "music.") -> list[ProductionEvent]:
    return list(
        ProductionEvent.objects.filter(stream=str(session.pk), type__startswith=prefix).order_by(
            "seq"
        )
    )


def silence_wav(seconds: float = 4.0, rate: int = 22050) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, int(seconds * rate)), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def assert_nothing_saved(session: PhotoshootSession) -> None:
    assert not MusicTrack.objects.filter(session=session).exists()
    assert events(session) == []
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


# --- Upload ------------------------------------------------------------------------------------


def test_the_real_song_is_kept_as_uploaded_and_its_beat_grid_reads_170_bpm(
    operator_client: Client, session: PhotoshootSession, django_capture_on_commit_callbacks: Any
) -> None:
    data = song_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(operator_client, session.pk, "song.ogg", data)

    assert response.status_code == 201, response.content
    assert "finding the beat" in json.loads(response["HX-Trigger"])["toast"]["message"]
    track = MusicTrack.objects.get(session=session)
    assert (track.original_name, track.container, track.codec) == ("song.ogg", "ogg", "vorbis")
    assert (track.sample_rate, track.channels) == (44100, 2)
    assert track.duration_s == pytest.approx(183.5, abs=0.1)
    assert track.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(track.file.path).read_bytes() == data
    assert Path(track.file.name).name == "song.ogg"
    # Nothing is analysed inside the request.
    assert track.analysis_state == MusicTrack.AnalysisState.PENDING
    assert track.bpm is None
    panel = parse_music_panel(response.content.decode())
    assert panel is not None and panel.track_id == str(track.pk)

    analysed = jobs.music_analysis_run(track_id=track.pk)

    assert analysed is not None
    track.refresh_from_db()
    assert track.analysis_state == MusicTrack.AnalysisState.DONE, track.analysis_error
    assert track.bpm == pytest.approx(SONG_BPM, rel=0.02)
    assert len(track.beats) > 400
    assert track.beats == sorted(track.beats)
    assert track.beats[0] >= 0 and track.beats[-1] <= track.duration_s
    assert track.analysis_progress == 1.0 and track.analysed_at is not None
    uploaded, done = events(session)
    assert uploaded.type == "music.uploaded"
    assert uploaded.payload["sha256"] == track.sha256
    assert uploaded.payload["replaced"] is None
    assert done.type == "music.analysed"
    assert done.payload["bpm"] == pytest.approx(SONG_BPM, rel=0.02)
    assert done.payload["beats"] == len(track.beats)
    page = operator_client.get(f"/sessions/{session.pk}/")
    assert f"{track.bpm:.1f} BPM" in page.content.decode()


def test_the_embedded_mode_never_analyses_inside_the_upload_request(
    operator_client: Client,
    session: PhotoshootSession,
    click: bytes,
    django_capture_on_commit_callbacks: Any,
) -> None:
    jobs.ANALYSIS_WANTED.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(operator_client, session.pk, "click.wav", click)

    assert response.status_code == 201
    track = MusicTrack.objects.get(session=session)
    assert track.analysis_state == MusicTrack.AnalysisState.PENDING
    assert track.analysis_attempts == 0
    assert "Waiting to analyse" in response.content.decode()
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # The ticker is woken to hand it to the analysis thread; nothing ran here.
        assert jobs.ANALYSIS_WANTED.is_set()
    assert jobs.tracks_due() == [track.pk]


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("noise.ogg", lambda: os.urandom(20_000), "not a media file"),
        ("photo.jpg", lambda: jpeg_bytes(64, 48), "no audio stream"),
        ("empty.mp3", lambda: b"", "empty"),
    ],
)
def test_a_file_that_is_not_audio_is_refused_and_nothing_is_saved(
    operator_client: Client, session: PhotoshootSession, name: str, make: Any, words: str
) -> None:
    response = upload(operator_client, session.pk, name, make())

    assert response.status_code == 400
    assert words in response.content.decode()
    assert json.loads(response["HX-Trigger"])["toast"]["level"] == "error"
    assert_nothing_saved(session)


def test_a_truncated_ogg_is_refused(operator_client: Client, session: PhotoshootSession) -> None:
    data = song_bytes()
    response = upload(operator_client, session.pk, "song.ogg", data[: int(len(data) * 0.3)])

    assert response.status_code == 400
    assert "truncated" in response.content.decode()
    assert_nothing_saved(session)


def test_a_truncated_wav_is_refused(
    operator_client: Client, session: PhotoshootSession, click: bytes
) -> None:
    response = upload(operator_client, session.pk, "click.wav", click[: len(click) // 2])

    assert response.status_code == 400
    assert "truncated" in response.content.decode()
    assert_nothing_saved(session)


def test_a_track_over_the_size_limit_is_refused_with_413(
    operator_client: Client, session: PhotoshootSession, click: bytes, settings: Any
) -> None:
    settings.MOTIONMIX_MUSIC_MAX_BYTES = 100_000

    response = upload(operator_client, session.pk, "click.wav", click)

    assert response.status_code == 413
    assert_nothing_saved(session)


def test_uploading_needs_a_login(client: Client, session: PhotoshootSession, click: bytes) -> None:
    response = upload(client, session.pk, "click.wav", click)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert_nothing_saved(session)


def test_an_ended_session_takes_no_music_and_an_unknown_one_is_404(
    operator_client: Client, session: PhotoshootSession, click: bytes
) -> None:
    session_services.session_start(session_id=session.pk, device_ids=[])
    session_services.session_stop(session_id=session.pk)

    assert upload(operator_client, session.pk, "click.wav", click).status_code == 409
    assert upload(operator_client, uuid4(), "click.wav", click).status_code == 404
    assert not MusicTrack.objects.exists()


def test_a_second_upload_replaces_the_track_and_keeps_the_first(
    operator_client: Client, session: PhotoshootSession, click: bytes
) -> None:
    assert upload(operator_client, session.pk, "click.wav", click).status_code == 201
    first = MusicTrack.objects.get(session=session)
    other = click_track(bpm=100.0, duration_s=12.0)

    assert upload(operator_client, session.pk, "click.wav", other).status_code == 201

    first.refresh_from_db()
    second = selectors.music_track_current(session_id=session.pk)
    assert second is not None and second.pk != first.pk
    assert first.replaced_at is not None and first.replaced_by_id == second.pk
    assert Path(first.file.path).read_bytes() == click  # kept: cues name it
    assert Path(second.file.path).read_bytes() == other
    assert events(session)[-1].payload["replaced"] == str(first.pk)
    stale = cue(
        operator_client, session.pk, {"track_id": str(first.pk), "action": "play", "position_s": 0}
    )
    assert stale.status_code == 409
    assert "replaced" in stale.json()["detail"]


# --- Cues ------------------------------------------------------------------------------------


@pytest.fixture
def track(operator_client: Client, session: PhotoshootSession, click: bytes) -> MusicTrack:
    assert upload(operator_client, session.pk, "click.wav", click).status_code == 201
    return MusicTrack.objects.get(session=session)


def test_every_play_pause_seek_and_end_is_a_cue_at_the_server_time(
    operator_client: Client, session: PhotoshootSession, track: MusicTrack
) -> None:
    steps = [("play", 0.0), ("pause", 4.25), ("seek", 1.5), ("play", 1.5), ("ended", 30.0)]
    for action, position in steps:
        response = cue(
            operator_client,
            session.pk,
            {"track_id": str(track.pk), "action": action, "position_s": position},
        )
        assert response.status_code == 201, response.content

    recorded = [e for e in events(session) if e.type == "music.cue"]
    assert [(e.payload["action"], e.payload["position_s"]) for e in recorded] == steps
    for event in recorded:
        assert event.payload["server_time"] == event.occurred_at.timestamp()
        assert event.payload["track_id"] == str(track.pk)
        assert event.payload["by"] == "op"
    music = selectors.session_music(session.pk)
    assert music.track is not None and music.track.id == track.pk
    assert music.track.file_name == "click.wav"
    assert music.track.open().read() == Path(track.file.path).read_bytes()
    assert [c.action for c in music.cues_for(track.pk)] == [a for a, _ in steps]
    assert [c.seq for c in music.cues] == sorted(c.seq for c in music.cues)
    assert music.cues[0].as_json()["position_s"] == 0.0
    panel = operator_client.get(f"/sessions/{session.pk}/music/").content.decode()
    assert 'data-music-state="ended"' in panel


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        ("[1, 2]", 400),
        ({"action": "rewind", "position_s": 1.0}, 400),
        ({"action": "play", "position_s": -0.5}, 400),
        ({"action": "play", "position_s": 45.0}, 400),
        ({"action": "play", "position_s": "3"}, 400),
        ({"action": "play", "position_s": 1.0, "track_id": "nope"}, 400),
        ({"action": "play", "position_s": 1.0, "track_id": str(uuid4())}, 404),
    ],
)
def test_a_malformed_cue_is_refused_and_not_recorded(
    operator_client: Client,
    session: PhotoshootSession,
    track: MusicTrack,
    body: Any,
    status: int,
) -> None:
    if isinstance(body, dict):
        body = {"track_id": str(track.pk), **body}
    response = cue(operator_client, session.pk, body)

    assert response.status_code == status, response.content
    assert response.json()["detail"]
    assert [e.type for e in events(session)] == ["music.uploaded"]


def test_an_ended_session_takes_no_cue(
    operator_client: Client, session: PhotoshootSession, track: MusicTrack
) -> None:
    session_services.session_start(session_id=session.pk, device_ids=[])
    session_services.session_stop(session_id=session.pk)

    response = cue(
        operator_client, session.pk, {"track_id": str(track.pk), "action": "play", "position_s": 0}
    )

    assert response.status_code == 409
    assert "ended" in response.json()["detail"]


# --- Analysis failure, the file, the simulator's track --------------------------------------


def test_a_track_with_no_beat_ends_in_a_failed_analysis_the_panel_shows(
    operator_client: Client, session: PhotoshootSession
) -> None:
    assert upload(operator_client, session.pk, "silence.wav", silence_wav()).status_code == 201
    track = MusicTrack.objects.get(session=session)

    jobs.music_analysis_run(track_id=track.pk)

    track.refresh_from_db()
    assert track.analysis_state == MusicTrack.AnalysisState.FAILED
    assert "silent" in track.analysis_error
    failed = events(session)[-1]
    assert failed.type == "music.analysis_failed"
    assert failed.payload["error"] == track.analysis_error
    panel = operator_client.get(f"/sessions/{session.pk}/music/").content.decode()
    assert "Beat analysis failed" in panel
    # Claimed once: a second run finds nothing to do.
    assert jobs.music_analysis_run(track_id=track.pk) is None


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_the_file_is_served_whole_or_by_range_for_seeking(
    operator_client: Client, session: PhotoshootSession, track: MusicTrack, click: bytes
) -> None:
    url = f"/sessions/{session.pk}/music/{track.pk}/file"

    whole = operator_client.get(url)
    part = operator_client.get(url, HTTP_RANGE="bytes=100-199")
    tail = operator_client.get(url, HTTP_RANGE="bytes=-10")
    past = operator_client.get(url, HTTP_RANGE=f"bytes={len(click)}-")

    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    assert whole["Content-Type"] == "audio/wav"
    assert b"".join(whole) == click
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-199/{len(click)}"
    assert b"".join(part) == click[100:200]
    assert b"".join(tail) == click[-10:]
    assert past.status_code == 416 and past["Content-Range"] == f"bytes */{len(click)}"


def test_range_headers_parse_as_rfc_9110_says() -> None:
    assert parse_range("bytes=0-", 1000) == (0, 999)
    assert parse_range("bytes=10-2000", 1000) == (10, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=0-1,5-6", 1000) is None  # several ranges: the whole file
    assert parse_range("items=0-1", 1000) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=1000-", 1000)


def test_the_simulators_click_track_is_deterministic_and_reads_120_bpm(
    operator_client: Client, session: PhotoshootSession, click: bytes
) -> None:
    assert click_track() == click
    assert upload(operator_client, session.pk, "click.wav", click).status_code == 201
    track = MusicTrack.objects.get(session=session)
    assert track.duration_s == pytest.approx(30.0)

    jobs.music_analysis_run(track_id=track.pk)

    track.refresh_from_db()
    assert track.bpm == pytest.approx(120.0, rel=0.01)
    assert isinstance(UUID(str(track.pk)), UUID)
