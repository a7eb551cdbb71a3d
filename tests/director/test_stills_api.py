from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from PIL import Image

from devices import services as device_services
from devices.models import DeviceCommand
from director.models import Still
from tests.devices.support import assert_error
from tests.director.stills_support import (
    heic_bytes,
    jpeg_bytes,
    meta_for,
    png_bytes,
    post_still,
    sha256,
    stored_files,
)
from tests.support.api import register_device


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> dict[str, Path]:
    """Stills in a folder of this test; uploads' temporary files in another, to prove they go."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    return {"media": tmp_path / "media", "uploads": tmp_path / "uploads"}


@pytest.fixture
def camera(db: None) -> Any:
    return register_device("install-1", name="Cam 1")


@pytest.fixture
def client() -> Client:
    return Client()


def _nothing_left(media: dict[str, Path]) -> None:
    assert Still.objects.count() == 0
    assert stored_files(media["media"]) == []
    assert stored_files(media["uploads"]) == []


# --- The happy path -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_jpeg_is_stored_byte_for_byte_with_a_small_thumbnail(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes(1600, 1200)

    response = post_still(client, camera.token, data, meta_for(data))

    assert response.status_code == 201, response.content
    still = Still.objects.get(pk=response.json()["still_id"])
    assert (media["media"] / still.file.name).read_bytes() == data
    assert still.sha256 == sha256(data) and still.size_bytes == len(data)
    assert still.content_type == "image/jpeg"
    assert (still.width, still.height) == (1600, 1200)
    thumb = (media["media"] / still.thumbnail.name).read_bytes()
    assert len(thumb) < 60_000
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "JPEG"
        assert max(image.size) == 480
        assert image.size == (still.thumb_width, still.thumb_height)
    assert stored_files(media["uploads"]) == []


@pytest.mark.django_db
def test_a_heic_is_stored_as_taken_and_thumbnailed_as_jpeg(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = heic_bytes(320, 240)

    response = post_still(client, camera.token, data, meta_for(data), filename="IMG_0002.HEIC")

    assert response.status_code == 201, response.content
    still = Still.objects.get(pk=response.json()["still_id"])
    assert still.content_type == "image/heic"
    assert still.file.name.endswith(".heic")
    assert (media["media"] / still.file.name).read_bytes() == data
    with Image.open(media["media"] / still.thumbnail.name) as image:
        assert image.format == "JPEG" and image.size == (320, 240)


@pytest.mark.django_db
def test_the_same_bytes_again_answer_200_with_the_same_id_and_overwrite_nothing(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()
    first = post_still(client, camera.token, data, meta_for(data))
    files = stored_files(media["media"])

    again = post_still(client, camera.token, data, meta_for(data, lens="tele", zoom=3.0))

    assert first.status_code == 201 and again.status_code == 200, again.content
    assert again.json() == first.json()
    still = Still.objects.get()
    assert (still.lens, still.zoom) == ("wide", 1.0)
    assert stored_files(media["media"]) == files
    assert stored_files(media["uploads"]) == []


@pytest.mark.django_db
def test_a_meta_sent_as_a_file_part_is_read_like_a_field(client: Client, camera: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = jpeg_bytes()
    meta = SimpleUploadedFile(
        "meta.json", json.dumps(meta_for(data)).encode(), content_type="application/json"
    )
    file = SimpleUploadedFile("IMG_0003.JPG", data, content_type="image/jpeg")

    response = client.post(
        "/api/v1/stills",
        {"file": file, "meta": meta},
        HTTP_AUTHORIZATION=f"Bearer {camera.token}",
    )

    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_a_still_answering_a_capture_takes_its_batch_and_session(
    client: Client, camera: Any, operator: Any
) -> None:
    from director import services as director_services

    session = director_services.session_create(name="Shoot", operator=operator)
    other = register_device("install-2", name="Cam 2")
    commands = device_services.commands_issue_capture(
        device_ids=[camera.device.pk, other.device.pk], session_id=session.pk
    )
    mine = next(c for c in commands if c.device_id == camera.device.pk)
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, command_id=str(mine.pk)))

    assert response.status_code == 201, response.content
    still = Still.objects.get()
    assert still.command_id == mine.pk
    assert still.batch == mine.batch is not None
    assert still.session_id == session.pk


# --- Every refusal --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_wrong_token_is_refused_with_401(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()

    response = post_still(client, "mmd_not-a-token", data, meta_for(data))

    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")
    _nothing_left(media)


@pytest.mark.django_db
def test_no_token_at_all_is_refused_with_401(client: Client, camera: Any) -> None:
    data = jpeg_bytes()

    assert_error(post_still(client, None, data, meta_for(data)), 401, "unauthorized")


@pytest.mark.django_db
def test_a_body_that_is_not_multipart_is_refused_with_415(client: Client, camera: Any) -> None:
    data = jpeg_bytes()

    response = client.post(
        "/api/v1/stills",
        json.dumps(meta_for(data)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {camera.token}",
    )

    detail = assert_error(response, 415, "unsupported_media_type")
    assert "multipart/form-data" in detail


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data",
    [png_bytes(), b"Just some text that a phone should never send as a photo.\n" * 20],
    ids=["png", "text"],
)
def test_a_file_that_is_neither_jpeg_nor_heic_is_refused_with_415_whatever_its_name(
    client: Client, camera: Any, media: dict[str, Path], data: bytes
) -> None:
    response = post_still(client, camera.token, data, meta_for(data), filename="IMG_0001.JPG")

    detail = assert_error(response, 415, "unsupported_media_type")
    assert "JPEG" in detail and "HEIC" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_corrupt_bytes_behind_a_jpeg_header_are_refused_as_undecodable(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40

    response = post_still(client, camera.token, data, meta_for(data))

    detail = assert_error(response, 422, "undecodable")
    assert "does not decode" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_truncated_jpeg_is_refused_as_undecodable(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    whole = jpeg_bytes(1600, 1200)
    data = whole[: len(whole) * 3 // 4]

    response = post_still(client, camera.token, data, meta_for(data))

    detail = assert_error(response, 422, "undecodable")
    assert "cut short" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_truncated_heic_is_refused_as_undecodable(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    whole = heic_bytes()
    data = whole[: len(whole) // 2]

    response = post_still(client, camera.token, data, meta_for(data), filename="x.heic")

    assert_error(response, 422, "undecodable")
    _nothing_left(media)


@pytest.mark.django_db
def test_a_sha256_that_does_not_match_the_bytes_is_a_checksum_mismatch(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, sha256="ab" * 32))

    detail = assert_error(response, 422, "checksum_mismatch")
    assert sha256(data) in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_file_past_the_limit_is_cut_off_while_streaming_with_413(
    client: Client, camera: Any, media: dict[str, Path], settings: Any
) -> None:
    data = jpeg_bytes()
    settings.MOTIONMIX_STILL_MAX_BYTES = limit = len(data) // 2
    assert len(data) < limit + 128 * 1024  # so the declared length alone does not refuse it

    response = post_still(client, camera.token, data, meta_for(data))

    detail = assert_error(response, 413, "too_large")
    assert f"limit of {limit} bytes" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_read(
    client: Client, camera: Any, media: dict[str, Path], settings: Any
) -> None:
    settings.MOTIONMIX_STILL_MAX_BYTES = 1_000
    data = jpeg_bytes(1600, 1200)
    assert len(data) > 1_000 + 128 * 1024

    response = post_still(client, camera.token, data, meta_for(data))

    detail = assert_error(response, 413, "too_large")
    assert "a still may be 1000 at most" in detail
    _nothing_left(media)


@pytest.mark.django_db
@pytest.mark.parametrize("missing", ["file", "meta"])
def test_a_missing_part_is_refused_with_400(
    client: Client, camera: Any, media: dict[str, Path], missing: str
) -> None:
    data = jpeg_bytes()
    response = post_still(
        client,
        camera.token,
        None if missing == "file" else data,
        None if missing == "meta" else meta_for(data),
    )

    detail = assert_error(response, 400, "invalid")
    assert f"no {missing} part" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_file_sent_without_a_filename_is_refused_with_how_to_send_it(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()
    body = {"file": "not a file part", "meta": json.dumps(meta_for(data))}

    response = client.post("/api/v1/stills", body, HTTP_AUTHORIZATION=f"Bearer {camera.token}")

    detail = assert_error(response, 400, "invalid")
    assert "filename=" in detail
    _nothing_left(media)


@pytest.mark.django_db
@pytest.mark.parametrize("meta", ['{"lens": "wide",', "[1, 2]", ""], ids=["cut", "list", "empty"])
def test_a_meta_that_is_not_a_json_object_is_bad_json(
    client: Client, camera: Any, media: dict[str, Path], meta: str
) -> None:
    response = post_still(client, camera.token, jpeg_bytes(), meta)

    assert_error(response, 400, "bad_json")
    _nothing_left(media)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"zoom": "1.0"}, "meta.zoom"),
        ({"flip": {"horizontal": True}}, "meta.flip.vertical"),
        ({"orientation": "sideways"}, "meta.orientation"),
        ({"captured_at": 12}, "meta.captured_at"),
        ({"sha256": "not-hex"}, "meta.sha256"),
        ({"command_id": "nope"}, "meta.command_id"),
    ],
)
def test_a_meta_that_breaks_the_schema_is_invalid_and_says_where(
    client: Client, camera: Any, media: dict[str, Path], override: dict[str, Any], where: str
) -> None:
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, **override))

    detail = assert_error(response, 400, "invalid")
    assert where in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_nul_character_anywhere_in_the_meta_is_invalid(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, app={"note": "a\u0000b"}))

    detail = assert_error(response, 400, "invalid")
    assert "NUL" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_lens_the_camera_does_not_have_is_invalid(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, lens="periscope"))

    detail = assert_error(response, 400, "invalid")
    assert "'periscope'" in detail and "ultra_wide, wide, tele" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_an_unknown_command_is_refused_with_404(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    data = jpeg_bytes()
    meta = meta_for(data, command_id="6b0e8a5e-0000-4000-8000-000000000000")

    detail = assert_error(post_still(client, camera.token, data, meta), 404, "not_found")

    assert "not a command sent to this device" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_another_cameras_command_is_refused_as_unknown(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    other = register_device("install-2", name="Cam 2")
    (command,) = device_services.commands_issue_capture(device_ids=[other.device.pk])
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, command_id=str(command.pk)))

    assert_error(response, 404, "not_found")
    _nothing_left(media)


@pytest.mark.django_db
def test_a_command_that_is_not_a_capture_is_a_conflict(
    client: Client, camera: Any, media: dict[str, Path]
) -> None:
    command = device_services.command_issue(
        device_id=camera.device.pk, type=DeviceCommand.Type.TALLY, args={"state": "live"}
    )
    data = jpeg_bytes()

    response = post_still(client, camera.token, data, meta_for(data, command_id=str(command.pk)))

    detail = assert_error(response, 409, "conflict")
    assert "not capture_still" in detail
    _nothing_left(media)


@pytest.mark.django_db
def test_a_get_is_answered_405_in_the_contract_body(client: Client, camera: Any) -> None:
    response = client.get("/api/v1/stills", HTTP_AUTHORIZATION=f"Bearer {camera.token}")

    assert_error(response, 405, "method_not_allowed")


# --- Races and the document -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_same_bytes_uploaded_twice_at_once_end_in_one_still_named_by_both(
    media: dict[str, Path],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite's in-memory test database locks whole tables between "
            "threads, so two uploads cannot race; runs in the scaled pass"
        )
    camera = register_device("install-1", name="Cam 1")
    data = jpeg_bytes(1600, 1200)
    meta = meta_for(data)
    start = threading.Barrier(2)
    answers: list[Any] = []

    def upload() -> None:
        try:
            start.wait(5)
            answers.append(post_still(Client(), camera.token, data, meta))
        finally:
            connection.close()

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(a.status_code for a in answers) == [200, 201], [a.content for a in answers]
    assert answers[0].json() == answers[1].json()
    still = Still.objects.get()
    assert str(still.pk) == answers[0].json()["still_id"]
    assert stored_files(media["media"]) == sorted([still.file.name, still.thumbnail.name])
    assert stored_files(media["uploads"]) == []


@pytest.mark.django_db
def test_the_openapi_document_lists_the_multipart_still_upload(client: Client) -> None:
    document = client.get("/api/v1/openapi.json").json()

    upload = document["paths"]["/api/v1/stills"]["post"]

    assert set(upload["responses"]) >= {"200", "201", "400", "401", "404", "409", "413", "415"}
    assert "422" in upload["responses"]
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["required"]) == {"file", "meta"}
    assert upload["security"] == [{"DeviceToken": []}]
