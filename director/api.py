"""The director's calls in Device API v1: `POST /api/v1/stills`.

A ninja Router mounted into the devices app's NinjaAPI by `motionmix/api_urls.py` (devices
must not import director). Errors use the contract's body and statuses.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone
from ninja import Router, Schema, Status
from pydantic import Field, ValidationError

from devices.api import ERRORS, FlipIn, Orientation, StrictSchema, device_auth, error_response
from devices.models import Device
from director.stills import services
from director.stills.upload import (
    FILE_FIELD,
    META_FIELD,
    DiskFull,
    ReceivedStill,
    StillUploadHandler,
)

# Room in the request, beyond the file itself, for the meta part and the multipart framing.
MULTIPART_OVERHEAD_BYTES = 128 * 1024

router = Router(tags=["stills"])


class StillMetaIn(StrictSchema):
    command_id: UUID | None = Field(
        default=None, description="The capture_still command this still answers, if any."
    )
    captured_at: float = Field(
        ge=1e9, le=4.1e9, allow_inf_nan=False, description="Device clock, unix seconds."
    )
    lens: str = Field(min_length=1, max_length=32)
    zoom: float = Field(gt=0, le=100, allow_inf_nan=False)
    flip: FlipIn
    orientation: Orientation
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="Of the file's bytes, hex.")


class StillOut(Schema):
    still_id: str


REFUSALS: dict[type[services.StillRefused], tuple[int, str]] = {
    services.StillChecksumMismatch: (422, "checksum_mismatch"),
    services.StillUndecodable: (422, "undecodable"),
    services.StillUnsupportedMedia: (415, "unsupported_media_type"),
    services.StillInvalid: (400, "invalid"),
    services.StillCommandNotFound: (404, "not_found"),
    services.StillCommandConflict: (409, "conflict"),
}

MULTIPART_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "meta"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "The still as the camera wrote it: JPEG or HEIC.",
                    },
                    "meta": {
                        "type": "string",
                        "description": "JSON: {command_id?, captured_at (device clock, unix s), "
                        "lens, zoom, flip: {horizontal, vertical}, orientation, sha256}.",
                    },
                },
            },
            "encoding": {"meta": {"contentType": "application/json"}},
        }
    },
}


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in ("meta", *error.get("loc", ())))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _parse_meta(text: str) -> services.StillMeta | HttpResponse:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return error_response(400, "bad_json", f"The meta part is not valid JSON: {exc}.")
    if not isinstance(raw, dict):
        return error_response(400, "bad_json", "The meta part must be a JSON object.")
    if _holds_nul(raw):
        # The meta is kept as sent, and PostgreSQL's jsonb cannot hold NUL: a 400, not a 500.
        return error_response(400, "invalid", "The meta part must not contain NUL characters.")
    try:
        # JSON mode: strict types still, but a command_id may be written as a string.
        meta = StillMetaIn.model_validate_json(text)
    except ValidationError as exc:
        return error_response(400, "invalid", _format_errors(exc))
    return services.StillMeta(
        command_id=meta.command_id,
        captured_at=meta.captured_at,
        lens=meta.lens,
        zoom=meta.zoom,
        flip_horizontal=meta.flip.horizontal,
        flip_vertical=meta.flip.vertical,
        orientation=meta.orientation,
        sha256=meta.sha256,
        raw=raw,
    )


def _too_large(detail: str) -> HttpResponse:
    return error_response(413, "too_large", detail)


def _disk_full(exc: DiskFull) -> HttpResponse:
    return error_response(507, "insufficient_storage", str(exc))


def _read_parts(
    request: HttpRequest, handler: StillUploadHandler
) -> tuple[ReceivedStill, str] | HttpResponse:
    """Parse the multipart body through `handler`: the file (on disk, hashed) and the meta."""
    try:
        fields = request.POST
    except RequestDataTooBig:
        return _too_large(
            "A part without a filename is larger than the server takes as text; send the still "
            'as a file part (Content-Disposition: form-data; name="file"; filename="…").'
        )
    except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent) as exc:
        return error_response(400, "bad_request", f"The multipart body is malformed: {exc}.")
    if handler.disk_full is not None:
        return _disk_full(handler.disk_full)
    if handler.too_large:
        return _too_large(f"The file is larger than the limit of {handler.max_bytes} bytes.")
    if handler.received is None and FILE_FIELD in fields:
        return error_response(
            400,
            "invalid",
            "The file part has no filename, so it arrived as text; send it as a file part "
            '(Content-Disposition: form-data; name="file"; filename="IMG_0001.HEIC").',
        )
    meta_text = fields.get(META_FIELD, handler.meta_text)
    missing = [n for n, part in (("file", handler.received), ("meta", meta_text)) if part is None]
    if handler.received is None or meta_text is None:
        return error_response(
            400, "invalid", f"The multipart body has no {' and no '.join(missing)} part."
        )
    return handler.received, meta_text


@router.post(
    "/stills",
    auth=device_auth,
    response={200: StillOut, 201: StillOut, **ERRORS, 507: ERRORS[413]},
    summary="Upload a full-resolution still (multipart: file and meta)",
    description="201 for a new still; 200 with the same still_id when this device already "
    "sent these bytes (by sha256), whatever the meta says. The file is judged by its bytes: "
    "JPEG or HEIC, else 415; it must match meta.sha256 (else 422 checksum_mismatch) and decode "
    "(else 422 undecodable). 507 insufficient_storage when the server's disk is full: "
    "nothing was kept, so keep the file and upload it again later.",
    openapi_extra={"requestBody": MULTIPART_BODY},
)
def still_upload(request: HttpRequest) -> Status[dict[str, Any]] | HttpResponse:
    received_at = timezone.now()
    device = request.auth  # type: ignore[attr-defined]
    assert isinstance(device, Device)
    if request.content_type != "multipart/form-data":
        return error_response(
            415,
            "unsupported_media_type",
            "Send the still as multipart/form-data with a file part and a meta part, not "
            f"{request.content_type or 'nothing'}.",
        )
    max_bytes = settings.MOTIONMIX_STILL_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes + MULTIPART_OVERHEAD_BYTES:
        return _too_large(f"The upload is {declared} bytes; a still may be {max_bytes} at most.")
    # Set before anything reads the body: the file streams to disk through this handler alone.
    handler = StillUploadHandler(request, max_bytes=max_bytes)
    request.upload_handlers = [handler]
    try:
        parts = _read_parts(request, handler)
        if isinstance(parts, HttpResponse):
            return parts
        upload, meta_text = parts
        meta = _parse_meta(meta_text)
        if isinstance(meta, HttpResponse):
            return meta
        try:
            result = services.still_ingest(
                device_id=device.pk, upload=upload, meta=meta, received_at=received_at
            )
        except services.StillRefused as exc:
            status, code = REFUSALS[type(exc)]
            return error_response(status, code, str(exc))
        except DiskFull as exc:
            return _disk_full(exc)
        return Status(201 if result.created else 200, {"still_id": str(result.still.pk)})
    finally:
        # The temporary file is gone once stored (moved) or refused; this removes any remains.
        handler.discard_all()
