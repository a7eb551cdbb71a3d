"""Real pictures and meta parts for the stills tests, made with Pillow and pillow-heif."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pillow_heif
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import ExifTags, Image, ImageChops

pillow_heif.register_heif_opener()


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A gradient under noise: photo-like entropy, different for every seed."""
    gradient = Image.linear_gradient("L").resize((width, height))
    channels = []
    for index in range(3):
        noise = Image.effect_noise((width, height), 12 + seed % 7 + index)
        channels.append(ImageChops.add(gradient.rotate(90 * index), noise, 1, -100 + seed))
    return Image.merge("RGB", channels)


def jpeg_bytes(
    width: int = 640, height: int = 480, seed: int = 0, orientation: int | None = None
) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    picture(width, height, seed).save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def heic_bytes(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    out = io.BytesIO()
    picture(width, height, seed).save(out, format="HEIF", quality=60)
    return out.getvalue()


def png_bytes() -> bytes:
    out = io.BytesIO()
    picture(64, 48).save(out, "PNG")
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_for(data: bytes, **overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "captured_at": time.time(),
        "lens": "wide",
        "zoom": 1.0,
        "flip": {"horizontal": False, "vertical": False},
        "orientation": "landscape_left",
        "sha256": sha256(data),
    }
    meta.update(overrides)
    return meta


def post_still(
    client: Client,
    token: str | None,
    data: bytes | None,
    meta: dict[str, Any] | str | None,
    *,
    filename: str = "IMG_0001.JPG",
    **extra: Any,
) -> Any:
    """POST /api/v1/stills as the capture app does: multipart with `file` and `meta`."""
    body: dict[str, Any] = {}
    if data is not None:
        body["file"] = SimpleUploadedFile(filename, data, content_type="image/jpeg")
    if meta is not None:
        body["meta"] = meta if isinstance(meta, str) else json.dumps(meta)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post("/api/v1/stills", body, **headers, **extra)


def stored_files(root: Path) -> list[str]:
    """Every file under a storage root, as sorted relative paths."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def ingest(
    device: Any,
    data: bytes,
    *,
    captured_at: float,
    raw: dict[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """Store a still through the service, as the API does once the upload has been read."""
    from django.utils import timezone

    from director.stills.services import StillMeta, still_ingest
    from director.stills.upload import ReceivedStill

    fields: dict[str, Any] = {
        "captured_at": captured_at,
        "lens": "wide",
        "zoom": 1.0,
        "flip_horizontal": False,
        "flip_vertical": False,
        "orientation": "portrait",
        "sha256": sha256(data),
    }
    fields.update(overrides)
    upload = ReceivedStill.from_bytes(data)
    try:
        return still_ingest(
            device_id=device.pk,
            upload=upload,
            meta=StillMeta(**fields, **({"raw": raw} if raw is not None else {})),
            received_at=timezone.now(),
        )
    finally:
        upload.close()
