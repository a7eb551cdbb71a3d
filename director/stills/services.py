"""Taking in a still. Nothing else writes `Still` rows or their files."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max

import ledger
from devices.models import Device, DeviceCommand
from director.models import PhotoshootSession, Still
from director.stills import broadcast, images, naming
from director.stills.upload import ReceivedStill, storage_save_whole

logger = logging.getLogger(__name__)


class StillRefused(Exception):
    """The still is not taken; the message says what was wrong and what to do."""


class StillChecksumMismatch(StillRefused):
    """The bytes received do not hash to the sha256 the device sent (422)."""


class StillUnsupportedMedia(StillRefused):
    """The file is neither a JPEG nor a HEIC (415)."""


class StillUndecodable(StillRefused):
    """The file looks like a JPEG or HEIC but is corrupt or truncated (422)."""


class StillInvalid(StillRefused):
    """The meta does not fit this device, such as a lens it does not have (400)."""


class StillCommandNotFound(StillRefused):
    """The still answers a command this device was never sent (404)."""


class StillCommandConflict(StillRefused):
    """The still answers a command that is not a capture (409)."""


@dataclass(frozen=True)
class StillMeta:
    """The `meta` part: what the camera says it was doing when it fired (its clock)."""

    captured_at: float
    lens: str
    zoom: float
    flip_horizontal: bool
    flip_vertical: bool
    orientation: str
    sha256: str
    command_id: UUID | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StillIngested:
    still: Still
    created: bool


def still_ingest(
    *, device_id: UUID, upload: ReceivedStill, meta: StillMeta, received_at: datetime
) -> StillIngested:
    """Check, store and record one uploaded still; idempotent by content, per device.

    The same bytes again from the same device (same sha256) answer the still already stored,
    whatever the meta says: nothing is replaced. The same bytes from another device are that
    device's own still (a device learns nothing of others' stills). Checks and decoding
    happen before the transaction, so the write lock (SQLite takes it at BEGIN) is held only
    for the row, the ledger event and moving the file. The file is saved inside the
    transaction; if the transaction does not commit, the saved files are deleted again. Two
    uploads of the same bytes from one device at once end in one row: the loser of the race
    meets the unique (device, sha256), and answers the winner's row.
    """
    if upload.sha256 != meta.sha256.lower():
        raise StillChecksumMismatch(
            f"The file's sha256 is {upload.sha256}, not {meta.sha256} as the meta says: the "
            f"{upload.size} bytes that arrived differ from those hashed. Upload it again."
        )
    existing = Still.objects.filter(device_id=device_id, sha256=upload.sha256).first()
    if existing is not None:
        return StillIngested(still=existing, created=False)
    media = images.sniff_file(upload.path)
    if media is None:
        raise StillUnsupportedMedia(
            "The file is neither a JPEG nor a HEIC (judged by its first bytes, not its name); "
            "send the camera's JPEG or HEIC as taken."
        )
    device = Device.objects.get(pk=device_id)
    if meta.lens not in device.lens_ids:
        raise StillInvalid(
            f"meta.lens {meta.lens!r} is not one of {device.name}'s lenses "
            f"({', '.join(device.lens_ids) or 'none registered'}); send the lens id it "
            "registered, or register again if its lenses changed."
        )
    command = _answered_command(device, meta.command_id)
    try:
        inspected = images.inspect(upload.path, media)
    except images.Undecodable as exc:
        raise StillUndecodable(str(exc)) from None
    naming.check_template(settings.MOTIONMIX_STILL_NAME_TEMPLATE)

    saved: list[str] = []
    try:
        return _store(
            device_id=device_id,
            upload=upload,
            meta=meta,
            command=command,
            inspected=inspected,
            received_at=received_at,
            saved=saved,
        )
    except IntegrityError:
        _delete_files(saved)
        winner = Still.objects.filter(device_id=device_id, sha256=upload.sha256).first()
        if winner is None:
            raise
        return StillIngested(still=winner, created=False)
    except BaseException:
        _delete_files(saved)
        raise


def _answered_command(device: Device, command_id: UUID | None) -> DeviceCommand | None:
    if command_id is None:
        return None
    # Another device's command is answered as unknown: a device learns nothing of others.
    command = DeviceCommand.objects.filter(pk=command_id, device=device).first()
    if command is None:
        raise StillCommandNotFound(
            f"meta.command_id {command_id} is not a command sent to this device; leave it out "
            "for a still the camera took on its own."
        )
    if command.type != DeviceCommand.Type.CAPTURE_STILL:
        raise StillCommandConflict(
            f"meta.command_id {command_id} is a {command.type} command, not capture_still; a "
            "still can only answer a capture."
        )
    return command


def _session_for(device: Device, command: DeviceCommand | None) -> PhotoshootSession | None:
    if command is not None and command.session_id is not None:
        session = PhotoshootSession.objects.filter(pk=command.session_id).first()
        if session is not None:
            return session
    return (
        PhotoshootSession.objects.filter(status=PhotoshootSession.Status.LIVE, devices=device)
        .order_by("-started_at")
        .first()
    )


@transaction.atomic
def _store(
    *,
    device_id: UUID,
    upload: ReceivedStill,
    meta: StillMeta,
    command: DeviceCommand | None,
    inspected: images.Inspected,
    received_at: datetime,
    saved: list[str],
) -> StillIngested:
    # The device's row is the lock that makes seq gap-free per (session, device).
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    winner = Still.objects.filter(device=device, sha256=upload.sha256).first()
    if winner is not None:
        # The same bytes landed while these were being checked (a retry racing its original).
        return StillIngested(still=winner, created=False)
    session = _session_for(device, command)
    last = (
        Still.objects.filter(session=session, device=device).aggregate(last=Max("seq"))["last"] or 0
    )
    seq = last + 1
    # Device clock to server clock: the offset is device minus server, as the server estimated
    # it from heartbeat round trips. Without an estimate the device's clock is taken as is.
    offset = device.clock_offset_s
    captured_at = datetime.fromtimestamp(meta.captured_at - (offset or 0.0), tz=UTC)
    batch = command.batch if command is not None else None
    name = naming.still_name(
        settings.MOTIONMIX_STILL_NAME_TEMPLATE,
        session_id=session.pk if session else None,
        device_name=device.name,
        device_id=device.pk,
        seq=seq,
        lens=meta.lens,
        ext=inspected.media.ext,
        captured_at=captured_at,
        batch=batch,
    )
    # The original goes through the storage API untouched (a local storage moves the temporary
    # file into place; S3 uploads it), the thumbnail beside it under thumbs/.
    file_name = storage_save_whole(name, upload.file)  # a full disk: DiskFull, nothing left
    saved.append(file_name)
    thumb_name = storage_save_whole(
        naming.thumbnail_name(file_name), ContentFile(inspected.thumbnail)
    )
    saved.append(thumb_name)
    still = Still.objects.create(
        session=session,
        device=device,
        command=command,
        batch=batch,
        seq=seq,
        sha256=upload.sha256,
        file=file_name,
        thumbnail=thumb_name,
        content_type=inspected.media.content_type,
        size_bytes=upload.size,
        width=inspected.width,
        height=inspected.height,
        thumb_width=inspected.thumb_width,
        thumb_height=inspected.thumb_height,
        captured_at_device=meta.captured_at,
        captured_at=captured_at,
        clock_offset_s=offset,
        received_at=received_at,
        lens=meta.lens,
        zoom=meta.zoom,
        flip_horizontal=meta.flip_horizontal,
        flip_vertical=meta.flip_vertical,
        orientation=meta.orientation,
        azimuth_deg=device.azimuth_deg,
        distance_m=device.distance_m,
        height_m=device.height_m,
        meta=meta.raw,
    )
    ledger.record(
        type="still.captured",
        device_id=device.pk,
        session_id=session.pk if session else None,
        payload={
            "still_id": str(still.pk),
            "sha256": still.sha256,
            "size_bytes": still.size_bytes,
            "lens": still.lens,
            "zoom": still.zoom,
            "flip": {"horizontal": still.flip_horizontal, "vertical": still.flip_vertical},
            "captured_at": captured_at.timestamp(),
            "command_id": str(command.pk) if command is not None else None,
            "batch": str(batch) if batch else None,
        },
    )
    transaction.on_commit(
        functools.partial(broadcast.stills_changed, still_id=still.pk, device_id=device.pk),
        robust=True,
    )
    return StillIngested(still=still, created=True)


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:
            # The refusal or failure that brought us here is what the caller must see.
            logger.exception("could not delete %s after a failed still ingest", name)
