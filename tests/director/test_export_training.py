"""From a recorded session to a training dataset: a camera whose clock runs 2.75 s ahead
streams 30 fps pose while "Chaos God" plays; the session is exported with `export_session` and
built with `training`. Each frame must land on the audio frame of the instant it was taken."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training
from devices.models import ClockSample, Device
from devices.services.pose import pose_batch_ingest
from director import services
from director.export.bundle import export_session
from director.models import PhotoshootSession
from director.music.services import music_cue_record, music_track_upload
from director.stills.upload import ReceivedStill
from tests.support.api import register_device
from tests.support.clock import round_trip
from tests.support.shared_data import SHARED_DATA
from training.build import build
from training.config import BuildConfig
from training.progress import Progress
from training.report import format_report
from training.verify import verify

pytestmark = pytest.mark.django_db

SONG = SHARED_DATA / "music" / "muldjord-chaos-god" / "song.ogg"
OFFSET_S = 2.75  # the camera's clock minus the server's
DRIFT_PPM = 15.0
PLAY_AT_S = 8.0  # after the session went live: play from the top
POSE_AT_S = 10.0  # the first pose frame, 2 s (60 audio frames) into the song
FRAMES = 900  # 30 s at 30 fps
LENGTH_S = 60.0


def device_time(started: float, server: float) -> float:
    return server + OFFSET_S + DRIFT_PPM * 1e-6 * (server - started)


def standing(k: int) -> list[list[float]]:
    """A COCO-17 figure swaying; the nose's confidence carries the frame number."""
    sway = 0.02 * math.sin(2 * math.pi * k / 30)
    points = [
        (0.50, 0.20), (0.49, 0.19), (0.51, 0.19), (0.48, 0.20), (0.52, 0.20),
        (0.45, 0.30), (0.55, 0.30), (0.43, 0.40), (0.57, 0.40), (0.42, 0.50), (0.58, 0.50),
        (0.47, 0.52), (0.53, 0.52), (0.47, 0.68), (0.53, 0.68), (0.47, 0.84), (0.53, 0.84),
    ]  # fmt: skip
    keypoints = [[x + sway, y, 0.9] for x, y in points]
    keypoints[0][2] = 0.5 + k / 10000
    return keypoints


def round_trips(device: Device, started: float) -> None:
    """A heartbeat every 2 s from a minute before to a minute after, 4–6 ms round trips."""
    rows = []
    for index in range(int((LENGTH_S + 120) / 2)):
        sent = started - 60 + 2.0 * index
        forward, back = 0.002 + 0.001 * (index % 3), 0.002 + 0.001 * (index % 2)
        rows.append(round_trip(device, sent, forward, back, lambda s: device_time(started, s)))
    ClockSample.objects.bulk_create(rows)


@pytest.fixture
def bundle(operator: Any, settings: Any, tmp_path: Path) -> tuple[Path, str]:
    if not SONG.exists():
        pytest.skip(f"the shared recordings are not at {SHARED_DATA} (../shared/data)")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    camera = register_device("train-cam", name="Cam A").device
    session = services.session_create(name="Training take", operator=operator)
    session = services.session_start(session_id=session.pk, device_ids=[camera.pk])
    started = session.started_at.timestamp()
    upload = ReceivedStill.from_bytes(SONG.read_bytes())
    try:
        track = music_track_upload(
            session_id=session.pk, upload=upload, original_name="song.ogg", uploaded_by="op"
        )
    finally:
        upload.close()
    for action, at, position in (("play", PLAY_AT_S, 0.0), ("pause", 50.0, 42.0)):
        music_cue_record(
            session_id=session.pk,
            track_id=track.pk,
            action=action,
            position_s=position,
            by="op",
            received_at=datetime.fromtimestamp(started + at, tz=UTC),
        )
    for first in range(0, FRAMES, 300):
        frames = [
            {
                "t": device_time(started, started + POSE_AT_S + k / 30),
                "keypoints": standing(k),
            }
            for k in range(first, first + 300)
        ]
        pose_batch_ingest(device_id=camera.pk, format="coco17", frames=frames)
    services.session_stop(session_id=session.pk)
    PhotoshootSession.objects.filter(pk=session.pk).update(
        ended_at=session.started_at + timedelta(seconds=LENGTH_S)
    )
    round_trips(camera, started)
    path = export_session(session_id=session.pk, out_dir=tmp_path / "bundle").path
    return path, str(camera.pk)


def test_an_exported_session_builds_a_verified_dataset_on_the_songs_clock(
    bundle: tuple[Path, str], tmp_path: Path
) -> None:
    path, camera = bundle
    quiet = Progress(quiet=True)
    cache = tmp_path / "cache"
    manifest = build([str(path)], tmp_path / "a", BuildConfig(), cache_dir=cache, progress=quiet)
    again = build([str(path)], tmp_path / "b", BuildConfig(), cache_dir=cache, progress=quiet)
    assert manifest["dataset_id"] == again["dataset_id"]
    for file in sorted((tmp_path / "a").iterdir()):
        assert file.read_bytes() == (tmp_path / "b" / file.name).read_bytes(), file.name
    assert verify(tmp_path / "a").ok

    [pair] = manifest["pairs"]
    assert pair["pair_id"].endswith(f"/take000/{camera}")
    # The report's table shortens the UUIDs so a session's pairs can be told apart.
    row = format_report(manifest).splitlines()[3]
    assert row.startswith(f"session-{pair['source'][8:16]}/take000/{camera[:8]} train")
    assert pair["alignment"]["clock"]["offset_s"] == pytest.approx(OFFSET_S, abs=0.005)
    # Pose began 2 s into the song: audio frame 60 (61 if the fit puts it a hair later).
    assert pair["first_frame"] in (60, 61)
    assert pair["frames"] in (FRAMES - 1, FRAMES)
    assert pair["missing_frames"] == 0
    windows = list(training.load(tmp_path / "a"))
    assert len(windows) == pair["windows"]["kept"] == (pair["frames"] - 150) // 75 + 1
    for window in windows:
        # The nose's confidence says which pose frame each audio frame got.
        got = (window.conf[:, 0].astype(np.float64) - 0.5) * 10000
        want = np.arange(window.start_frame, window.start_frame + 150) - 60
        assert np.abs(got - want).max() < 0.15, window.window_id  # under 5 ms


def test_the_zip_download_builds_the_same_dataset(bundle: tuple[Path, str], tmp_path: Path) -> None:
    from director.export.archive import zip_bundle

    path, _ = bundle
    archive = tmp_path / "session.zip"
    session_id = json.loads((path / "session.json").read_text())["session"]["id"]
    zip_bundle(path, archive, top=f"motionmix-session-{session_id}")
    quiet = Progress(quiet=True)
    cache = tmp_path / "cache"
    from_folder = build([str(path)], tmp_path / "a", BuildConfig(), cache_dir=cache, progress=quiet)
    from_zip = build([str(archive)], tmp_path / "z", BuildConfig(), cache_dir=cache, progress=quiet)
    # The dataset id is over the content: the same windows whichever form the bundle came in.
    assert from_zip["dataset_id"] == from_folder["dataset_id"]
    assert [f["name"] for f in from_zip["inputs"][0]["files"]] == ["session.zip"]
    assert verify(tmp_path / "z").ok
