from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from PIL import Image, ImageFile

from devices import services as device_services
from devices.models import Device
from director import services as director_services
from director.models import Still
from director.stills import images, naming
from director.stills.services import (
    StillIngested,
    StillUndecodable,
)
from ledger.models import ProductionEvent
from tests.devices.support import FleetListener
from tests.director.stills_support import heic_bytes, ingest, jpeg_bytes, sha256, stored_files
from tests.support.api import register_device

CAPTURED_AT = 1_750_000_000.25


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return tmp_path / "media"


@pytest.fixture
def camera(db: None) -> Device:
    return register_device("install-1", name="Cam 1: Front/Left").device


def _ingest(device: Device, data: bytes, **overrides: Any) -> StillIngested:
    overrides.setdefault("captured_at", CAPTURED_AT)
    return ingest(device, data, raw={"sent": "as is"}, **overrides)


def _live_session(operator: Any, *devices: Device, name: str = "Shoot") -> UUID:
    session = director_services.session_create(name=name, operator=operator)
    director_services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])
    return session.pk


# --- Names ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_still_outside_any_session_is_named_unsorted_by_the_default_template(
    camera: Device, media: Path
) -> None:
    still = _ingest(camera, jpeg_bytes()).still

    short = str(camera.pk)[:8]
    assert still.file.name == f"unsorted/cam-1-frontleft-{short}/0001_wide.jpg"
    assert still.thumbnail.name == f"thumbs/unsorted/cam-1-frontleft-{short}/0001_wide.jpg"
    assert stored_files(media) == sorted([still.file.name, still.thumbnail.name])


@pytest.mark.django_db
def test_a_still_in_a_live_session_is_filed_under_the_session(
    camera: Device, operator: Any
) -> None:
    session_id = _live_session(operator, camera)

    still = _ingest(camera, jpeg_bytes(), lens="ultra_wide").still

    assert still.session_id == session_id
    assert still.file.name.startswith(f"{session_id}/cam-1-frontleft-")
    assert still.file.name.endswith("/0001_ultra_wide.jpg")


@pytest.mark.django_db
def test_a_custom_template_can_use_the_date_and_the_batch(camera: Device, settings: Any) -> None:
    settings.MOTIONMIX_STILL_NAME_TEMPLATE = "shoots/{date}/{batch}/{device}-{seq:03d}.{ext}"
    (command,) = device_services.commands_issue_capture(device_ids=[camera.pk])
    data = heic_bytes()

    still = _ingest(camera, data, command_id=command.pk).still

    day = datetime.fromtimestamp(CAPTURED_AT, tz=UTC).strftime("%Y-%m-%d")
    assert still.file.name == (
        f"shoots/{day}/{command.batch}/cam-1-frontleft-{str(camera.pk)[:8]}-001.heic"
    )


@pytest.mark.django_db
def test_a_template_with_an_unknown_placeholder_is_refused_before_anything_is_stored(
    camera: Device, settings: Any, media: Path
) -> None:
    settings.MOTIONMIX_STILL_NAME_TEMPLATE = "{session}/{camera}/{seq}.{ext}"

    with pytest.raises(ImproperlyConfigured, match=r"\{camera\}"):
        _ingest(camera, jpeg_bytes())

    assert Still.objects.count() == 0 and stored_files(media) == []


def test_a_lens_id_cannot_lead_the_name_out_of_the_storage() -> None:
    name = naming.still_name(
        "{session}/{lens}/{seq}.{ext}",
        session_id=None,
        device_name="Cam",
        device_id=UUID(int=1),
        seq=1,
        lens="../../etc",
        ext="jpg",
        captured_at=datetime.now(tz=UTC),
        batch=None,
    )

    assert name == "unsorted/etc/1.jpg"


# --- What the row holds ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_still_snapshots_placement_and_what_the_camera_said_it_was_doing(
    camera: Device,
) -> None:
    Device.objects.filter(pk=camera.pk).update(
        azimuth_deg=90.0, distance_m=2.5, height_m=1.4, flip_horizontal=False, lens="tele"
    )
    data = jpeg_bytes()

    still = _ingest(
        camera,
        data,
        lens="ultra_wide",
        zoom=0.5,
        flip_horizontal=True,
        flip_vertical=True,
        orientation="landscape_right",
    ).still

    assert (still.azimuth_deg, still.distance_m, still.height_m) == (90.0, 2.5, 1.4)
    # The meta, not the device's last heartbeat, says what this still was taken with.
    assert (still.lens, still.zoom) == ("ultra_wide", 0.5)
    assert still.flip_horizontal and still.flip_vertical
    assert still.orientation == "landscape_right"
    assert still.meta == {"sent": "as is"}
    Device.objects.filter(pk=camera.pk).update(azimuth_deg=180.0)
    still.refresh_from_db()
    assert still.azimuth_deg == 90.0


@pytest.mark.django_db
def test_the_device_clock_is_mapped_to_the_server_clock_with_the_offset_used(
    camera: Device,
) -> None:
    Device.objects.filter(pk=camera.pk).update(clock_offset_s=2.5)

    still = _ingest(camera, jpeg_bytes()).still

    assert still.captured_at_device == CAPTURED_AT
    assert still.captured_at == datetime.fromtimestamp(CAPTURED_AT - 2.5, tz=UTC)
    assert still.clock_offset_s == 2.5


@pytest.mark.django_db
def test_without_an_offset_estimate_the_device_clock_is_taken_as_is(camera: Device) -> None:
    still = _ingest(camera, jpeg_bytes()).still

    assert still.captured_at == datetime.fromtimestamp(CAPTURED_AT, tz=UTC)
    assert still.clock_offset_s is None


@pytest.mark.django_db
def test_seq_counts_per_session_and_camera(camera: Device, operator: Any) -> None:
    other = register_device("install-2", name="Cam 2").device
    first = _ingest(camera, jpeg_bytes(seed=1)).still
    second = _ingest(camera, jpeg_bytes(seed=2)).still
    theirs = _ingest(other, jpeg_bytes(seed=3)).still
    _live_session(operator, camera)
    in_session = _ingest(camera, jpeg_bytes(seed=4)).still

    assert (first.seq, second.seq, theirs.seq, in_session.seq) == (1, 2, 1, 1)
    assert in_session.file.name.endswith("/0001_wide.jpg")
    assert second.file.name.endswith("/0002_wide.jpg")


@pytest.mark.django_db
def test_an_exif_rotated_jpeg_is_measured_and_thumbnailed_upright(camera: Device) -> None:
    # Orientation 6: the sensor's landscape pixels are shown turned a quarter, as portrait.
    still = _ingest(camera, jpeg_bytes(800, 600, orientation=6)).still

    assert (still.width, still.height) == (600, 800)
    assert (still.thumb_width, still.thumb_height) == (360, 480)


@pytest.mark.django_db
def test_the_still_is_recorded_in_the_ledger_of_its_session(camera: Device, operator: Any) -> None:
    session_id = _live_session(operator, camera)
    Device.objects.filter(pk=camera.pk).update(clock_offset_s=-0.75)
    data = jpeg_bytes()

    still = _ingest(camera, data, flip_horizontal=True).still

    event = ProductionEvent.objects.get(type="still.captured")
    assert event.session_id == session_id and event.device_id == camera.pk
    assert event.payload == {
        "still_id": str(still.pk),
        "sha256": sha256(data),
        "size_bytes": len(data),
        "lens": "wide",
        "zoom": 1.0,
        "flip": {"horizontal": True, "vertical": False},
        "captured_at": CAPTURED_AT + 0.75,
        "command_id": None,
        "batch": None,
    }


@pytest.mark.django_db
def test_the_same_bytes_again_record_nothing_more(camera: Device) -> None:
    data = jpeg_bytes()
    first = _ingest(camera, data)

    again = _ingest(camera, data, lens="tele")

    assert first.created and not again.created
    assert again.still.pk == first.still.pk
    assert ProductionEvent.objects.filter(type="still.captured").count() == 1


@pytest.mark.django_db
def test_another_camera_sending_the_same_bytes_gets_its_own_still(camera: Device) -> None:
    other = register_device("install-2", name="Cam 2").device
    data = jpeg_bytes()
    first = _ingest(camera, data)

    theirs = _ingest(other, data)
    mine_again = _ingest(camera, data)
    theirs_again = _ingest(other, data)

    assert first.created and theirs.created
    assert theirs.still.pk != first.still.pk
    assert theirs.still.device_id == other.pk
    assert theirs.still.file.name != first.still.file.name
    # Each camera's retry stays idempotent: its own still, nothing recorded again.
    assert not mine_again.created and mine_again.still.pk == first.still.pk
    assert not theirs_again.created and theirs_again.still.pk == theirs.still.pk
    assert Still.objects.count() == 2
    assert ProductionEvent.objects.filter(type="still.captured").count() == 2


@pytest.mark.django_db
def test_the_push_names_the_still_and_goes_only_after_the_commit(
    camera: Device, django_capture_on_commit_callbacks: Any
) -> None:
    layer = get_channel_layer()
    assert layer is not None
    listener = FleetListener(layer)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            still = _ingest(camera, jpeg_bytes()).still
        assert not [m for m in listener.drain() if m["type"] == "stills.changed"]
        for callback in callbacks:
            callback()
        pushed = [m for m in listener.drain() if m["type"] == "stills.changed"]
    finally:
        listener.close()

    assert len(pushed) == 1
    assert pushed[0]["still_id"] == str(still.pk)
    assert pushed[0]["device_id"] == str(camera.pk)
    assert set(pushed[0]) == {"type", "still_id", "device_id", "committed_at"}


# --- Failures leave nothing behind ----------------------------------------------------------


@pytest.mark.django_db
def test_a_failure_after_the_files_are_saved_deletes_them_and_the_row(
    camera: Device, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ledger_down(**kwargs: Any) -> None:
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr("director.stills.services.ledger.record", ledger_down)

    with pytest.raises(RuntimeError, match="outbox unavailable"):
        _ingest(camera, jpeg_bytes())

    assert Still.objects.count() == 0
    assert stored_files(media) == []


@pytest.mark.django_db
def test_a_truncated_jpeg_is_refused_even_with_little_left_to_read(
    camera: Device, media: Path
) -> None:
    whole = jpeg_bytes(1600, 1200)

    with pytest.raises(StillUndecodable, match="cut short"):
        _ingest(camera, whole[:-64])

    assert stored_files(media) == []


@pytest.mark.django_db
def test_stills_are_not_taken_while_pillow_is_told_to_accept_truncated_files(
    camera: Device, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    whole = jpeg_bytes(1600, 1200)

    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        _ingest(camera, whole[: len(whole) // 2])

    assert Still.objects.count() == 0 and stored_files(media) == []


def test_the_draft_decode_gives_a_thumbnail_without_building_the_full_picture(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(4032, 3024))
    decoded_sizes: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def watching_load(image: Image.Image) -> Any:
        result = real_load(image)
        decoded_sizes.append(image.size)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", watching_load)
        inspected = images.inspect(path, images.JPEG)

    assert (inspected.width, inspected.height) == (4032, 3024)
    assert max(inspected.thumb_width, inspected.thumb_height) == 480
    assert decoded_sizes and max(max(size) for size in decoded_sizes) <= 1008


# --- Races ----------------------------------------------------------------------------------


@pytest.fixture
def both_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hold each upload after its checks until both are checked: both then race to store."""
    gate = threading.Barrier(2)
    real_inspect = images.inspect

    def inspect_then_wait(source: Any, media: images.MediaType) -> images.Inspected:
        result = real_inspect(source, media)
        gate.wait(10)
        return result

    monkeypatch.setattr(images, "inspect", inspect_then_wait)
    yield


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cameras", [1, 2], ids=["same-camera", "two-cameras"])
def test_the_same_bytes_stored_at_once_end_in_one_row_per_camera(
    both_checked: None, media: Path, cameras: int
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite's in-memory test database locks whole tables between "
            "threads, so two ingests cannot race; runs in the scaled pass"
        )
    devices = [register_device(f"install-{i}", name=f"Cam {i}").device for i in range(2)]
    data = jpeg_bytes()
    results: list[StillIngested] = []

    def ingest(device: Device) -> None:
        try:
            results.append(_ingest(device, data))
        finally:
            connection.close()

    threads = [threading.Thread(target=ingest, args=(devices[i % cameras],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    if cameras == 2:
        # Each camera's bytes are its own still, even when another sent the same ones.
        assert [r.created for r in results] == [True, True]
        assert {r.still.device_id for r in results} == {d.pk for d in devices}
    else:
        assert sorted(r.created for r in results) == [False, True]
        assert results[0].still.pk == results[1].still.pk
    stills = Still.objects.all()
    assert len(stills) == cameras
    names = [name for still in stills for name in (still.file.name, still.thumbnail.name)]
    assert stored_files(media) == sorted(names)
    assert ProductionEvent.objects.filter(type="still.captured").count() == cameras
