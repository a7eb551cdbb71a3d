"""What a session bundle is made of, read from the database: each function gives one part in
the bundle's own shape (docs/session-bundle.md), in a fixed order, so that the same data gives
the same bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

from django.db.models import Q

from devices import clock
from devices.models import ClockSample, Device, DeviceCommand, PoseBatch
from director.export.clockmap import MARGIN_S, ClockMap
from director.export.pose import BatchRow
from director.models import PhotoshootSession, Still
from ledger.models import ProductionEvent

FORMAT = "motionmix.session-bundle"
FORMAT_VERSION = 1


def dumps(value: object) -> str:
    """The bundle's JSON: sorted keys, no spaces, UTF-8 as is (one spelling for one value)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def unix(at: datetime | None) -> float | None:
    return None if at is None else round(at.timestamp(), 6)


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def id_or_none(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def span(session: PhotoshootSession) -> tuple[float, float]:
    """The session's span on the server's clock. A live session ends, for now, at the latest
    thing recorded for it (so exporting it twice without new data gives the same bytes)."""
    assert session.started_at is not None
    start = session.started_at.timestamp()
    if session.ended_at is not None:
        return start, session.ended_at.timestamp()
    latest = [
        ProductionEvent.objects.filter(stream=str(session.pk))
        .order_by("-seq")
        .values_list("occurred_at", flat=True)
        .first(),
        PoseBatch.objects.filter(session_id=session.pk)
        .order_by("-received_at")
        .values_list("received_at", flat=True)
        .first(),
    ]
    return start, max([start] + [at.timestamp() for at in latest if at is not None])


def device_ids(session: PhotoshootSession) -> list[UUID]:
    ids: set[UUID] = set(session.devices.values_list("pk", flat=True))
    ids.update(PoseBatch.objects.filter(session_id=session.pk).values_list("device_id", flat=True))
    ids.update(Still.objects.filter(session_id=session.pk).values_list("device_id", flat=True))
    ids.update(
        ProductionEvent.objects.filter(stream=str(session.pk), device_id__isnull=False)
        .values_list("device_id", flat=True)
        .distinct()
    )
    return sorted(ids, key=str)


def placements(device_id: UUID, start: float, end: float) -> list[dict[str, object]]:
    """Where the camera stood: its last placement before the session, then every change."""
    rows = (
        ProductionEvent.objects.filter(device_id=device_id, type="device.placed")
        .order_by("occurred_at", "stream", "seq")
        .values_list("occurred_at", "payload")
    )
    before: dict[str, object] | None = None
    during: list[dict[str, object]] = []
    for at, payload in rows:
        entry = {
            "at": iso(at),
            "at_unix": unix(at),
            "azimuth_deg": payload.get("azimuth_deg"),
            "distance_m": payload.get("distance_m"),
            "height_m": payload.get("height_m"),
            "source": payload.get("source"),
        }
        ts = at.timestamp()
        if ts < start:
            before = entry
        elif ts <= end:
            during.append(entry)
    return ([before] if before else []) + during


def lens_history(device_id: UUID, start: float, end: float) -> list[dict[str, object]]:
    """The lens and flip changes the camera carried out: the last of each before the session,
    then every one during it (done commands; the time is when the server had its answer)."""
    rows = (
        DeviceCommand.objects.filter(
            device_id=device_id,
            type__in=(DeviceCommand.Type.SET_LENS, DeviceCommand.Type.SET_FLIP),
            state=DeviceCommand.State.DONE,
            finished_at__isnull=False,
        )
        .order_by("finished_at", "id")
        .values_list("id", "type", "args", "finished_at")
    )
    before: dict[str, dict[str, object]] = {}
    during: list[dict[str, object]] = []
    for pk, type_, args, at in rows:
        entry = {
            "at": iso(at),
            "at_unix": unix(at),
            "command": type_,
            "command_id": str(pk),
            "args": args,
        }
        ts = at.timestamp()
        if ts < start:
            before[type_] = entry
        elif ts <= end:
            during.append(entry)
    return sorted(before.values(), key=lambda e: str(e["at"])) + during


def clock_samples(device_id: UUID, start: float, end: float) -> list[clock.Sample]:
    rows = (
        ClockSample.objects.filter(
            device_id=device_id,
            server_time__gte=start - MARGIN_S,
            server_time__lte=end + MARGIN_S,
        )
        .order_by("server_time", "id")
        .values_list("sent_at", "received_at", "server_time", "returned_at")
    )
    return [clock.Sample(*row) for row in rows]


def pose_batches(
    session: PhotoshootSession, device_id: UUID, clock_map: ClockMap, span: tuple[float, float]
) -> Iterator[BatchRow]:
    """The batches recorded for the session, and those the device sent with no live session
    (late ones, after the stop) whose frames may fall inside its span: by first frame time."""
    device_start = span[0] + clock_map.segment_for(span[0]).offset_s - MARGIN_S
    device_end = span[1] + clock_map.segment_for(span[1]).offset_s + MARGIN_S
    rows = (
        PoseBatch.objects.filter(device_id=device_id)
        .filter(
            Q(session_id=session.pk)
            | Q(session_id__isnull=True, last_t__gte=device_start, first_t__lte=device_end)
        )
        .order_by("first_t", "received_at", "id")
        .values_list("id", "session_id", "format", "first_t", "received_at", "frames")
    )
    for pk, session_id, format, first_t, received_at, frames in rows.iterator(chunk_size=200):
        yield BatchRow(
            received_rank=(received_at.timestamp(), pk),
            format=format,
            first_t=first_t,
            frames_json=frames,
            session_match=session_id == session.pk,
        )


def session_json_base(session: PhotoshootSession, span: tuple[float, float]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "clock": "server",
        "session": {
            "id": str(session.pk),
            "name": session.name,
            "notes": session.notes,
            "status": session.status,
            "operator": session.operator.get_username(),
            "ghost_mode": session.ghost_mode,
            "created_at": iso(session.created_at),
            "started_at": iso(session.started_at),
            "ended_at": iso(session.ended_at),
            "span": {"start": round(span[0], 6), "end": round(span[1], 6)},
        },
    }


def device_json(device: Device) -> dict[str, Any]:
    return {
        "id": str(device.pk),
        "name": device.name,
        "kind": device.kind,
        "model": device.model,
        "os_version": device.os_version,
        "app_version": device.app_version,
        "lenses": device.lenses,
    }


def event_line(event: ProductionEvent) -> str:
    return dumps(
        {
            "seq": event.seq,
            "event_id": str(event.event_id),
            "type": event.type,
            "occurred_at": iso(event.occurred_at),
            "occurred_at_unix": unix(event.occurred_at),
            "device_id": id_or_none(event.device_id),
            "payload": event.payload,
        }
    )


def still_name(still: Still) -> str:
    suffix = PurePosixPath(still.file.name).suffix.lower() or ".bin"
    return f"stills/{still.device_id}/{still.seq:05d}-{still.sha256[:12]}{suffix}"


def still_line(still: Still, copied: str | None) -> str:
    return dumps(
        {
            "id": str(still.pk),
            "device_id": str(still.device_id),
            "seq": still.seq,
            "sha256": still.sha256,
            "content_type": still.content_type,
            "size_bytes": still.size_bytes,
            "width": still.width,
            "height": still.height,
            "captured_at_device": still.captured_at_device,
            "captured_at": iso(still.captured_at),
            "captured_at_unix": unix(still.captured_at),
            "clock_offset_s": still.clock_offset_s,
            "lens": still.lens,
            "zoom": still.zoom,
            "flip": {"horizontal": still.flip_horizontal, "vertical": still.flip_vertical},
            "orientation": still.orientation,
            "placement": {
                "azimuth_deg": still.azimuth_deg,
                "distance_m": still.distance_m,
                "height_m": still.height_m,
            },
            "command_id": id_or_none(still.command_id),
            "batch": id_or_none(still.batch),
            "source": still.file.name,
            "file": copied,
        }
    )
