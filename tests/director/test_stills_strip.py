from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.test import Client
from PIL import Image

from devices import services as device_services
from devices.models import Device
from director.models import Still
from director.stills import selectors
from director.stills.fragments import strip_fragment
from tests.director.stills_support import heic_bytes, ingest, jpeg_bytes
from tests.support.api import register_device
from tests.support.sockets import operator_socket, receive_until

T0 = 1_750_000_000.0


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return tmp_path / "media"


def _ingest(device: Device, data: bytes, **overrides: Any) -> Still:
    overrides.setdefault("captured_at", T0)
    return ingest(device, data, **overrides).still


def _capture_all(names: list[str], offsets_ms: list[float]) -> list[Still]:
    """A capture-all of several cameras, each still fired `offset` ms after the first."""
    devices = [register_device(f"cap-{name}", name=name).device for name in names]
    commands = device_services.commands_issue_capture(device_ids=[d.pk for d in devices])
    by_device = {c.device_id: c for c in commands}
    return [
        _ingest(
            device,
            jpeg_bytes(seed=index + 10),
            captured_at=T0 + offset / 1000,
            command_id=by_device[device.pk].pk,
        )
        for index, (device, offset) in enumerate(zip(devices, offsets_ms, strict=True))
    ]


def _capture_all_committed_together(names: list[str], offsets_ms: list[float]) -> list[Still]:
    # One commit for the lot, so every push is queued before the socket renders the first.
    with transaction.atomic():
        return _capture_all(names, offsets_ms)


# --- The strip ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_capture_all_is_grouped_with_its_spread_in_ms() -> None:
    stills = _capture_all(["Cam A", "Cam B", "Cam C"], [0, 12.5, 41])

    html = strip_fragment(oob=False)

    group_html = re.search(r'data-testid="capture-group">(.*?)</p>', html, re.S)
    assert group_html, html
    assert re.sub(r"<[^>]+>", "", group_html.group(1)).strip() == "3 cameras · spread 41 ms"
    for still in stills:
        assert f'data-still-id="{still.pk}"' in html
        assert f'data-device-id="{still.device_id}"' in html
    (group,) = selectors.stills_strip()
    assert group.is_capture_all and group.cameras == 3
    assert group.spread_ms == pytest.approx(41, abs=0.01)
    assert [s.device.name for s in group.stills] == ["Cam A", "Cam B", "Cam C"]


@pytest.mark.django_db
def test_the_strip_shows_the_newest_first_and_at_most_its_limit() -> None:
    camera = register_device("install-1", name="Cam 1").device
    stills = [_ingest(camera, jpeg_bytes(96, 72, seed=i)) for i in range(selectors.STRIP_LIMIT + 2)]

    html = strip_fragment(oob=True)

    shown = re.findall(r'data-still-id="([0-9a-f-]+)"', html)
    assert shown == [str(s.pk) for s in reversed(stills)][: selectors.STRIP_LIMIT]
    assert re.search(r'<section id="stills-strip"[^>]*hx-swap-oob="true"', html)


@pytest.mark.django_db
def test_a_flipped_still_is_shown_flipped_and_a_plain_one_is_not() -> None:
    camera = register_device("install-1", name="Cam 1").device
    flipped = _ingest(camera, jpeg_bytes(seed=1), flip_horizontal=True)
    upside = _ingest(camera, jpeg_bytes(seed=2), flip_vertical=True)
    plain = _ingest(camera, jpeg_bytes(seed=3))

    html = strip_fragment(oob=False)

    def img_class(still: Still) -> str:
        match = re.search(rf'data-still-id="{still.pk}".*?<img class="([^"]*)"', html, re.S)
        assert match, html
        return match.group(1)

    assert img_class(flipped) == "flip-h"
    assert img_class(upside) == "flip-v"
    assert img_class(plain) == ""


@pytest.mark.django_db
def test_an_empty_strip_says_what_will_appear() -> None:
    assert "No stills yet" in strip_fragment(oob=False)


# --- Operator pages and files ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_registry_page_includes_the_strip(operator_client: Client) -> None:
    camera = register_device("install-1", name="Cam 1").device
    still = _ingest(camera, jpeg_bytes())

    html = operator_client.get("/registry/").content.decode()

    assert 'id="stills-strip"' in html
    assert f'data-still-id="{still.pk}"' in html


@pytest.mark.django_db
def test_the_files_of_a_still_are_served_to_operators_with_their_types(
    operator_client: Client,
) -> None:
    camera = register_device("install-1", name="Cam 1").device
    data = jpeg_bytes(800, 600)
    still = _ingest(camera, data, flip_horizontal=True)

    original = operator_client.get(f"/stills/{still.pk}/original")
    thumb = operator_client.get(f"/stills/{still.pk}/thumb.jpg")
    page = operator_client.get(f"/stills/{still.pk}/")

    assert original["Content-Type"] == "image/jpeg"
    assert b"".join(original.streaming_content) == data
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    assert "immutable" in thumb["Cache-Control"]
    html = page.content.decode()
    assert page.status_code == 200
    assert f"/stills/{still.pk}/preview.jpg" in html
    assert 'class="flip-h"' in html and still.sha256 in html


@pytest.mark.django_db
def test_a_heic_is_previewed_as_a_jpeg_rendition(operator_client: Client) -> None:
    camera = register_device("install-1", name="Cam 1").device
    data = heic_bytes(320, 240)
    still = _ingest(camera, data)

    preview = operator_client.get(f"/stills/{still.pk}/preview.jpg")
    original = operator_client.get(f"/stills/{still.pk}/original")

    assert preview["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(preview.content)) as image:
        assert image.format == "JPEG" and image.size == (320, 240)
    assert original["Content-Type"] == "image/heic"
    assert b"".join(original.streaming_content) == data


@pytest.mark.django_db
def test_the_detail_page_shows_the_other_stills_of_the_capture(operator_client: Client) -> None:
    first, second = _capture_all(["Cam A", "Cam B"], [0, 5])

    html = operator_client.get(f"/stills/{first.pk}/").content.decode()

    assert "Same capture" in html and f'data-still-id="{second.pk}"' in html


@pytest.mark.django_db
def test_still_files_need_an_operator_login(client: Client) -> None:
    camera = register_device("install-1", name="Cam 1").device
    still = _ingest(camera, jpeg_bytes())

    for suffix in ("", "original", "thumb.jpg", "preview.jpg"):
        response = client.get(f"/stills/{still.pk}/{suffix}")
        assert response.status_code == 302, suffix
        assert "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_an_unknown_still_is_404(operator_client: Client) -> None:
    response = operator_client.get("/stills/6b0e8a5e-0000-4000-8000-000000000000/thumb.jpg")

    assert response.status_code == 404


# --- The operator's socket ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_ingested_still_is_pushed_to_the_operators_strip() -> None:
    camera = await sync_to_async(register_device)("install-1", name="Cam 1")
    communicator = await operator_socket()
    try:
        first = await receive_until(communicator, 'id="stills-strip"')
        assert "No stills yet" in first
        still = await sync_to_async(_ingest)(camera.device, jpeg_bytes())
        pushed = await receive_until(communicator, f'data-still-id="{still.pk}"')
        assert re.search(r'<section id="stills-strip"[^>]*hx-swap-oob="true"', pushed)
        assert f'data-device-id="{camera.device.pk}"' in pushed
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_stills_is_not_rendered_once_per_still() -> None:
    communicator = await operator_socket()
    try:
        await receive_until(communicator, 'id="stills-strip"')
        stills = await sync_to_async(_capture_all_committed_together)(
            ["Cam A", "Cam B", "Cam C", "Cam D", "Cam E", "Cam F"], [0, 1, 2, 3, 4, 5]
        )
        last = f'data-still-id="{stills[-1].pk}"'
        renders = [await receive_until(communicator, last)]
        # Pushes that were queued behind a render which already showed them are dropped.
        try:
            async with asyncio.timeout(1.0):
                while True:
                    message = await communicator.receive_from(timeout=2)
                    if 'id="stills-strip"' in message:
                        renders.append(message)
        except TimeoutError:
            pass
        assert '6 cameras · <span data-testid="spread">spread 5 ms</span>' in renders[-1]
        assert 1 <= len(renders) < len(stills), len(renders)
    finally:
        await communicator.disconnect()
