"""The session bundle: what `export_session` writes, byte for byte, and what it refuses."""

from __future__ import annotations

import hashlib
import io
import json
import random
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from devices.models import ClockSample, Device, PoseBatch
from devices.services.placement import device_place
from devices.services.pose import pose_batch_ingest
from devices.simulator_operator import click_track
from director import services
from director.export.bundle import FORMAT, FORMAT_VERSION, ExportRefused, export_session
from director.export.jobs import session_export_run
from director.export.services import (
    EXPORTS_WANTED,
    STALE_S,
    session_export_begin,
    session_export_progress,
    session_export_request,
    session_exports_sweep_stale,
)
from director.models import MusicTrack, PhotoshootSession, SessionExport, Still
from director.music.services import music_cue_record, music_track_upload
from director.stills.upload import ReceivedStill
from director.tasks import session_exports_sweep
from tests.director.stills_support import ingest, jpeg_bytes
from tests.support.api import register_device
from tests.support.clock import round_trip

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
LENGTH_S = 600.0
# Device clock minus server clock, and how fast it drifts.
CLICK = click_track(duration_s=6.0)
TRUTH = {"Cam A": (1.5, 20.0), "Cam B": (-0.75, -35.0)}


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    return tmp_path / "media"


def device_time(name: str, server: float) -> float:
    offset, drift = TRUTH[name]
    return server + offset + drift * 1e-6 * (server - START.timestamp())


def store_round_trips(device: Device, name: str, *, seed: int) -> None:
    """A heartbeat every 2 s across the session, with jitter and the odd slow exchange."""
    rng = random.Random(seed)
    rows = []
    t = START.timestamp() - 60
    while t < START.timestamp() + LENGTH_S + 60:
        forward = 0.002 + rng.expovariate(1 / 0.003)
        back = 0.002 + rng.expovariate(1 / 0.003)
        if rng.random() < 0.1:
            forward += rng.uniform(0.05, 0.3)
        rows.append(round_trip(device, t, forward, back, lambda s: device_time(name, s)))
        t += 2.0
    ClockSample.objects.bulk_create(rows)


def pose_frames(name: str, first: int, count: int) -> list[dict[str, Any]]:
    """Frames `first`.. of a 30 fps stream that starts 10 s into the session, device-stamped.
    The keypoints carry the frame number, so a test can tell which frame it reads."""
    return [
        {
            "t": device_time(name, START.timestamp() + 10 + k / 30),
            "keypoints": [[k / 10000, 0.5, 0.9]] + [[0.5, 0.5, 0.8]] * 16,
        }
        for k in range(first, first + count)
    ]


@pytest.fixture
def recorded(operator: Any, media: Path) -> PhotoshootSession:
    a = register_device("export-a", name="Cam A").device
    b = register_device("export-b", name="Cam B").device
    device_place(device_id=a.pk, azimuth_deg=0, distance_m=3.0, height_m=1.5)
    session = services.session_create(name="Salsa take", operator=operator)
    session = services.session_start(session_id=session.pk, device_ids=[a.pk, b.pk])
    device_place(device_id=b.pk, azimuth_deg=90, distance_m=2.5, height_m=1.4)
    # Cam A sends in order; Cam B's second batch arrives before its first, and its first twice.
    pose_batch_ingest(device_id=a.pk, format="coco17", frames=pose_frames("Cam A", 0, 60))
    pose_batch_ingest(device_id=a.pk, format="coco17", frames=pose_frames("Cam A", 60, 60))
    pose_batch_ingest(device_id=b.pk, format="coco17", frames=pose_frames("Cam B", 60, 60))
    pose_batch_ingest(device_id=b.pk, format="coco17", frames=pose_frames("Cam B", 0, 60))
    pose_batch_ingest(device_id=b.pk, format="coco17", frames=pose_frames("Cam B", 0, 60))
    ingest(
        a, jpeg_bytes(320, 240, seed=3), captured_at=device_time("Cam A", START.timestamp() + 30)
    )
    upload = ReceivedStill.from_bytes(CLICK)
    try:
        track = music_track_upload(
            session_id=session.pk, upload=upload, original_name="click.wav", uploaded_by="op"
        )
    finally:
        upload.close()
    for action, position in (("play", 0.0), ("pause", 2.5), ("seek", 1.0)):
        music_cue_record(
            session_id=session.pk,
            track_id=track.pk,
            action=action,
            position_s=position,
            by="op",
            received_at=timezone.now(),
        )
    session = services.session_stop(session_id=session.pk)
    # Put the recording at a fixed time, so its clock samples (written below) surround it.
    shift = START - session.started_at
    PhotoshootSession.objects.filter(pk=session.pk).update(
        started_at=START, ended_at=START + timedelta(seconds=LENGTH_S)
    )
    from ledger.models import ProductionEvent

    for event in ProductionEvent.objects.all():
        ProductionEvent.objects.filter(pk=event.pk).update(occurred_at=event.occurred_at + shift)
    store_round_trips(a, "Cam A", seed=1)
    store_round_trips(b, "Cam B", seed=2)
    return PhotoshootSession.objects.get(pk=session.pk)


def test_the_music_is_copied_as_uploaded_with_its_cues(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b").path
    document = json.loads((bundle / "session.json").read_text())

    (track,) = document["audio"]["tracks"]
    assert (bundle / track["file"]).read_bytes() == CLICK
    assert track["sha256"] == hashlib.sha256(CLICK).hexdigest()
    assert track["original_name"] == "click.wav"
    assert track["duration_s"] == pytest.approx(6.0, abs=0.05)
    cues = read_ndjson(bundle / document["audio"]["cues"]["file"])
    assert [(c["action"], c["position_s"]) for c in cues] == [
        ("play", 0.0),
        ("pause", 2.5),
        ("seek", 1.0),
    ]
    assert all(c["track_id"] == track["track_id"] for c in cues)
    assert [c["seq"] for c in cues] == sorted(c["seq"] for c in cues)


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_exporting_a_session_twice_gives_identical_bytes(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    first = export_session(session_id=recorded.pk, out_dir=tmp_path / "one", copy_stills=True)
    second = export_session(session_id=recorded.pk, out_dir=tmp_path / "two", copy_stills=True)

    assert tree_bytes(first.path) == tree_bytes(second.path)
    assert sorted(tree_bytes(first.path)) == sorted(
        ["session.json", "events.ndjson", "stills.ndjson", "checksums.sha256"]
        + [f"pose/{d.pk}.ndjson" for d in recorded.devices.all()]
        + [line["file"] for line in read_ndjson(first.path / "stills.ndjson")]
        + ["audio/cues.ndjson", "audio/" + Path(MusicTrack.objects.get().file.name).name]
    )


def test_the_checksums_cover_every_other_file(recorded: PhotoshootSession, tmp_path: Path) -> None:
    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b").path

    listed = {}
    for line in (bundle / "checksums.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert set(listed) == files - {"checksums.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest


def test_pose_frames_are_ordered_deduplicated_and_mapped_to_the_servers_clock(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b").path
    document = json.loads((bundle / "session.json").read_text())

    for device in document["devices"]:
        frames = read_ndjson(bundle / device["pose"]["file"])
        assert len(frames) == 120, device["name"]
        assert [f["t_device"] for f in frames] == sorted(f["t_device"] for f in frames)
        for f in frames:
            k = round(f["keypoints"][0][0] * 10000)
            truth = START.timestamp() + 10 + k / 30
            assert abs(f["t_server"] - truth) < 0.002, (device["name"], k)
            assert f["format"] == "coco17" and len(f["keypoints"]) == 17
        assert [round(f["keypoints"][0][0] * 10000) for f in frames] == list(range(120))
    cam_b = next(d for d in document["devices"] if d["name"] == "Cam B")
    assert cam_b["pose"]["duplicates_dropped"] == 60
    assert cam_b["pose"]["late_batches"] == 1


def test_session_json_describes_devices_placements_and_clocks(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b").path
    document = json.loads((bundle / "session.json").read_text())

    assert (document["format"], document["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert document["session"]["name"] == "Salsa take"
    assert document["session"]["span"] == {
        "start": START.timestamp(),
        "end": START.timestamp() + LENGTH_S,
    }
    by_name = {d["name"]: d for d in document["devices"]}
    assert set(by_name) == {"Cam A", "Cam B"}
    # Cam A was placed before the session; Cam B during it (its event is on the session).
    assert [p["azimuth_deg"] for p in by_name["Cam A"]["placements"]] == [0.0]
    assert by_name["Cam B"]["placements"][-1]["azimuth_deg"] == 90.0
    for name, (offset, drift) in TRUTH.items():
        clock = by_name[name]["clock"]
        assert clock["method"] == "fit"
        assert len(clock["samples"]) > 300
        segment = clock["segments"][0]
        truth_at = offset + drift * 1e-6 * (segment["at"] - START.timestamp())
        assert abs(segment["offset_s"] - truth_at) < 0.002
        assert abs(segment["drift_ppm"] - drift) < 10


def test_events_and_stills_are_written_in_order(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b", copy_stills=True).path

    events = read_ndjson(bundle / "events.ndjson")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "session.created"
    assert "session.stopped" in [e["type"] for e in events]
    stills = read_ndjson(bundle / "stills.ndjson")
    assert len(stills) == 1
    still = Still.objects.get()
    assert stills[0]["sha256"] == still.sha256
    copied = bundle / stills[0]["file"]
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == still.sha256


def test_without_copy_the_stills_are_listed_with_their_source(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b").path

    (line,) = read_ndjson(bundle / "stills.ndjson")
    assert line["file"] is None
    assert line["source"] == Still.objects.get().file.name
    assert not (bundle / "stills").exists()


def test_a_late_batch_sent_after_the_stop_is_kept_when_its_frames_fall_in_the_session(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    cam_a = Device.objects.get(name="Cam A")
    pose_batch_ingest(device_id=cam_a.pk, format="coco17", frames=pose_frames("Cam A", 120, 30))
    outside = pose_frames("Cam A", 0, 2)
    for i, frame in enumerate(outside):  # long after the session
        frame["t"] = device_time("Cam A", START.timestamp() + LENGTH_S + 100 + i)
    pose_batch_ingest(device_id=cam_a.pk, format="coco17", frames=outside)
    assert PoseBatch.objects.filter(session_id__isnull=True).count() == 2

    bundle = export_session(session_id=recorded.pk, out_dir=tmp_path / "b").path
    document = json.loads((bundle / "session.json").read_text())
    cam = next(d for d in document["devices"] if d["name"] == "Cam A")
    assert cam["pose"]["frames"] == 150
    assert cam["pose"]["outside_session_dropped"] == 2  # after the stop: read, left out


def test_a_draft_session_an_unknown_one_and_a_full_folder_are_refused(
    operator: Any, recorded: PhotoshootSession, tmp_path: Path
) -> None:
    draft = services.session_create(name="Not yet", operator=operator)
    with pytest.raises(ExportRefused, match="has not started"):
        export_session(session_id=draft.pk, out_dir=tmp_path / "d")
    with pytest.raises(ExportRefused, match="No session"):
        export_session(session_id="not-a-uuid", out_dir=tmp_path / "d")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportRefused, match="not empty"):
        export_session(session_id=recorded.pk, out_dir=full)
    assert (full / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".full")) == []

    replaced = export_session(session_id=recorded.pk, out_dir=full, replace=True)
    assert not (replaced.path / "keep.txt").exists()


def test_the_command_writes_the_bundle_and_names_what_is_wrong(
    recorded: PhotoshootSession, tmp_path: Path
) -> None:
    out = io.StringIO()
    call_command(
        "export_session", str(recorded.pk), str(tmp_path / "cli"), stdout=out, stderr=io.StringIO()
    )
    assert "240 pose frames" in out.getvalue()
    assert (tmp_path / "cli" / "session.json").exists()

    with pytest.raises(CommandError, match="not empty"):
        call_command(
            "export_session", str(recorded.pk), str(tmp_path / "cli"), stderr=io.StringIO()
        )


# --- The zip download from the session page ---------------------------------------------------


def run_export(session: PhotoshootSession, **kwargs: Any) -> SessionExport:
    export = session_export_request(session_id=session.pk, requested_by="op", **kwargs)
    finished = session_export_run(export_id=export.pk)
    assert finished is not None
    return finished


def test_asking_for_an_export_queues_one_job_and_wakes_the_ticker(
    recorded: PhotoshootSession, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded mode's path
    EXPORTS_WANTED.clear()
    with django_capture_on_commit_callbacks(execute=True):
        first = session_export_request(session_id=recorded.pk, requested_by="op")
    assert EXPORTS_WANTED.is_set()
    assert first.state == SessionExport.State.QUEUED
    # Asking again while it is queued gives the same export, not a second job.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = session_export_request(session_id=recorded.pk, requested_by="op")
    assert again.pk == first.pk
    assert callbacks == []


def test_the_zip_holds_the_bundle_under_one_folder_and_is_identical_twice(
    recorded: PhotoshootSession, media: Path, tmp_path: Path
) -> None:
    first = run_export(recorded, copy_stills=True)
    second = run_export(recorded, copy_stills=True)

    assert first.state == SessionExport.State.DONE, first.error
    assert first.pk != second.pk
    assert first.sha256 == second.sha256
    zipped = media / first.file
    assert hashlib.sha256(zipped.read_bytes()).hexdigest() == first.sha256
    bundle = export_session(
        session_id=recorded.pk, out_dir=tmp_path / "plain", copy_stills=True
    ).path
    top = f"motionmix-session-{recorded.pk}"
    with zipfile.ZipFile(zipped) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert {n.removeprefix(top + "/") for n in names} == set(tree_bytes(bundle))
        for name in names:
            assert archive.read(name) == (bundle / name.removeprefix(top + "/")).read_bytes()
    assert first.summary["pose_frames"] == 240
    assert not list((media / "exports" / ".work").iterdir())  # scratch cleaned up


def test_the_panel_shows_progress_then_the_download(
    recorded: PhotoshootSession, operator_client: Any, media: Path
) -> None:
    url = reverse("director:session_export", args=[recorded.pk])
    page = operator_client.get(reverse("director:session_live", args=[recorded.pk]))
    assert b'data-testid="export-start"' in page.content

    queued = operator_client.post(url, {"copy_stills": "1"})
    assert queued.status_code == 200
    assert b'hx-trigger="every 1s"' in queued.content  # it polls while the job runs
    export = SessionExport.objects.get()
    assert export.copy_stills
    session_export_begin(export_id=export.pk)
    session_export_progress(export_id=export.pk, stage="Writing pose: Cam A", progress=0.42)
    running = operator_client.get(url)
    assert b"Writing pose: Cam A" in running.content and b"42 %" in running.content

    SessionExport.objects.filter(pk=export.pk).update(state=SessionExport.State.QUEUED)
    session_export_run(export_id=export.pk)
    done = operator_client.get(url)
    assert b'hx-trigger="every 1s"' not in done.content
    assert b"240 pose frames" in done.content
    download = operator_client.get(reverse("director:export_download", args=[export.pk]))
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    assert 'filename="motionmix-salsa-take-' in download["Content-Disposition"]
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == download["X-Content-SHA256"]


def test_downloads_need_a_login_a_finished_export_and_its_file(
    recorded: PhotoshootSession, operator_client: Any, client: Any, media: Path
) -> None:
    export = run_export(recorded)
    url = reverse("director:export_download", args=[export.pk])
    assert client.get(url).status_code == 302  # to the login page
    assert (
        operator_client.get(reverse("director:export_download", args=[uuid.uuid4()])).status_code
        == 404
    )
    (media / export.file).unlink()
    gone = operator_client.get(url)
    assert gone.status_code == 410
    assert b"export the session again" in gone.content


def test_exporting_a_draft_is_refused_with_a_toast(operator: Any, operator_client: Any) -> None:
    draft = services.session_create(name="Draft", operator=operator)
    response = operator_client.post(reverse("director:session_export", args=[draft.pk]))
    assert response.status_code == 409
    assert "has not started" in response["HX-Trigger"]
    assert not SessionExport.objects.exists()


def test_a_failing_export_is_marked_failed_with_the_reason(
    recorded: PhotoshootSession, media: Path
) -> None:
    still = Still.objects.get()
    (media / still.file.name).write_bytes(b"not the original")
    export = run_export(recorded, copy_stills=True)
    assert export.state == SessionExport.State.FAILED
    assert "no longer matches its sha256" in export.error
    assert not (media / "exports" / str(recorded.pk)).exists()


def test_an_export_whose_job_stopped_is_marked_interrupted_and_its_job_gives_up(
    recorded: PhotoshootSession, media: Path
) -> None:
    export = session_export_request(session_id=recorded.pk, requested_by="op")
    session_export_begin(export_id=export.pk)
    later = timezone.now() + timedelta(seconds=STALE_S + 1)
    assert session_exports_sweep_stale(now=later) == 1
    export.refresh_from_db()
    assert export.state == SessionExport.State.FAILED
    assert "interrupted" in export.error
    # The job, if it was only slow, learns so at its next progress report.
    assert not session_export_progress(export_id=export.pk, stage="x", progress=0.5)
    # And a new request starts afresh.
    again = session_export_request(session_id=recorded.pk, requested_by="op")
    assert again.pk != export.pk


def test_the_sweep_runs_queued_exports_a_lost_message_left_behind(
    recorded: PhotoshootSession, media: Path
) -> None:
    export = session_export_request(session_id=recorded.pk, requested_by="op")
    assert session_exports_sweep() == 1
    export.refresh_from_db()
    assert export.state == SessionExport.State.DONE
