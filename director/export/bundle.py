"""A session written as a self-describing folder, the only thing the training pipeline reads.

The format is documented in docs/session-bundle.md; `FORMAT_VERSION` changes whenever a field
changes meaning. Exporting the same recorded session twice gives identical bytes: every file is
written from the database in a fixed order, JSON with sorted keys, and nothing in it says when
or where it was exported.

The folder appears whole or not at all: it is written under a temporary name next to the
target and renamed at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID

from django.core.files.storage import default_storage
from django.db.models import Q

from devices import clock
from devices.models import ClockSample, Device, DeviceCommand, PoseBatch
from director.export.clockmap import MARGIN_S, ClockMap
from director.export.pose import BatchRow, PoseStats, write_pose
from director.models import PhotoshootSession, Still
from director.music.selectors import session_music
from ledger.models import ProductionEvent

FORMAT = "motionmix.session-bundle"
FORMAT_VERSION = 1
CHECKSUMS = "checksums.sha256"
CUES = "cues.ndjson"

Progress = Callable[[str, float], None]


class ExportRefused(Exception):
    """The session cannot be exported; the message says why and what to do."""


@dataclass
class ExportResult:
    path: Path
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (path, sha256, bytes)
    pose_frames: int = 0
    events: int = 0
    stills: int = 0

    @property
    def bytes(self) -> int:
        return sum(size for _, _, size in self.files)


def dumps(value: object) -> str:
    """The bundle's JSON: sorted keys, no spaces, UTF-8 as is (one spelling for one value)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _unix(at: datetime | None) -> float | None:
    return None if at is None else round(at.timestamp(), 6)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)


# --- Reads ----------------------------------------------------------------------------------


def _span(session: PhotoshootSession) -> tuple[float, float]:
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


def _device_ids(session: PhotoshootSession) -> list[UUID]:
    ids: set[UUID] = set(session.devices.values_list("pk", flat=True))
    ids.update(PoseBatch.objects.filter(session_id=session.pk).values_list("device_id", flat=True))
    ids.update(Still.objects.filter(session_id=session.pk).values_list("device_id", flat=True))
    ids.update(
        ProductionEvent.objects.filter(stream=str(session.pk), device_id__isnull=False)
        .values_list("device_id", flat=True)
        .distinct()
    )
    return sorted(ids, key=str)


def _placements(device_id: UUID, start: float, end: float) -> list[dict[str, object]]:
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
            "at": _iso(at),
            "at_unix": _unix(at),
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


def _lens_history(device_id: UUID, start: float, end: float) -> list[dict[str, object]]:
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
            "at": _iso(at),
            "at_unix": _unix(at),
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


def _clock_samples(device_id: UUID, start: float, end: float) -> list[clock.Sample]:
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


def _pose_batches(
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


def _session_json_base(session: PhotoshootSession, span: tuple[float, float]) -> dict[str, Any]:
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
            "created_at": _iso(session.created_at),
            "started_at": _iso(session.started_at),
            "ended_at": _iso(session.ended_at),
            "span": {"start": round(span[0], 6), "end": round(span[1], 6)},
        },
    }


def _device_json(device: Device) -> dict[str, Any]:
    return {
        "id": str(device.pk),
        "name": device.name,
        "kind": device.kind,
        "model": device.model,
        "os_version": device.os_version,
        "app_version": device.app_version,
        "lenses": device.lenses,
    }


def _event_line(event: ProductionEvent) -> str:
    return dumps(
        {
            "seq": event.seq,
            "event_id": str(event.event_id),
            "type": event.type,
            "occurred_at": _iso(event.occurred_at),
            "occurred_at_unix": _unix(event.occurred_at),
            "device_id": _str(event.device_id),
            "payload": event.payload,
        }
    )


def _still_name(still: Still) -> str:
    suffix = PurePosixPath(still.file.name).suffix.lower() or ".bin"
    return f"stills/{still.device_id}/{still.seq:05d}-{still.sha256[:12]}{suffix}"


def _still_line(still: Still, copied: str | None) -> str:
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
            "captured_at": _iso(still.captured_at),
            "captured_at_unix": _unix(still.captured_at),
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
            "command_id": _str(still.command_id),
            "batch": _str(still.batch),
            "source": still.file.name,
            "file": copied,
        }
    )


def _write_audio(writer: _Writer, session: PhotoshootSession) -> dict[str, Any] | None:
    """Each track the session used, byte for byte, and every cue; None without music."""
    music = session_music(session.pk)
    if not music.tracks:
        return None
    tracks = []
    used: set[str] = set()
    for number, track in enumerate(music.tracks, start=1):
        name = f"audio/{track.file_name}"
        if name in used or name == f"audio/{CUES}":
            name = f"audio/{number}-{track.file_name}"
        used.add(name)
        with track.open() as source, writer.path(name).open("wb") as target:
            shutil.copyfileobj(source, target)
        if _sha256(writer.root / name) != track.sha256:
            raise ExportRefused(
                f"Music track {track.original_name!r} no longer matches its sha256."
            )
        tracks.append({**track.as_json(), "file": name})
    count = writer.lines(f"audio/{CUES}", (dumps(cue.as_json()) for cue in music.cues))
    return {"tracks": tracks, "cues": {"file": f"audio/{CUES}", "count": count}}


# --- Writing --------------------------------------------------------------------------------


class _Writer:
    def __init__(self, root: Path, progress: Progress | None) -> None:
        self.root = root
        self.progress = progress

    def path(self, relative: str) -> Path:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def text(self, relative: str, content: str) -> None:
        self.path(relative).write_text(content, encoding="utf-8", newline="\n")

    def lines(self, relative: str, lines: Iterator[str]) -> int:
        count = 0
        with self.path(relative).open("w", encoding="utf-8", newline="\n") as out:
            for line in lines:
                out.write(line)
                out.write("\n")
                count += 1
        return count

    def say(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(stage, max(0.0, min(1.0, fraction)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksums(root: Path) -> list[tuple[str, str, int]]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [(name, _sha256(root / name), (root / name).stat().st_size) for name in files]


def session_for_export(session_id: UUID | str) -> PhotoshootSession:
    try:
        session = PhotoshootSession.objects.select_related("operator").get(pk=UUID(str(session_id)))
    except (PhotoshootSession.DoesNotExist, ValueError) as exc:
        raise ExportRefused(f"No session {session_id}.") from exc
    if session.started_at is None:
        raise ExportRefused(
            f"Session {session.name!r} has not started: nothing was recorded to export."
        )
    return session


def export_session(
    *,
    session_id: UUID | str,
    out_dir: Path,
    copy_stills: bool = False,
    replace: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the bundle of one started session to `out_dir` (see docs/session-bundle.md).

    `out_dir` must not exist, or be empty, unless `replace` is given. Raises ExportRefused for
    a session that cannot be exported or a target that is in the way."""
    session = session_for_export(session_id)
    out_dir = Path(out_dir)
    if out_dir.exists() and not replace and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportRefused(
            f"{out_dir} exists and is not empty; choose another folder or replace it."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; the bundle is an ordinary folder
    try:
        result = _write(session, partial, copy_stills=copy_stills, progress=progress)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result.path = out_dir
    return result


def _write(
    session: PhotoshootSession, root: Path, *, copy_stills: bool, progress: Progress | None
) -> ExportResult:
    writer = _Writer(root, progress)
    result = ExportResult(path=root)
    span = _span(session)
    start, end = span
    document = _session_json_base(session, span)

    writer.say("events", 0.0)
    events = ProductionEvent.objects.filter(stream=str(session.pk)).order_by("seq")
    result.events = writer.lines(
        "events.ndjson", (_event_line(e) for e in events.iterator(chunk_size=500))
    )

    device_ids = _device_ids(session)
    devices = {d.pk: d for d in Device.objects.filter(pk__in=device_ids)}
    members = set(session.devices.values_list("pk", flat=True))
    batch_counts = {
        pk: PoseBatch.objects.filter(Q(session_id=session.pk), device_id=pk).count()
        for pk in device_ids
    }
    total_batches = max(1, sum(batch_counts.values()))
    done_batches = 0
    device_docs = []
    for pk in sorted(
        device_ids, key=lambda i: (devices[i].name, str(i)) if i in devices else ("", str(i))
    ):
        device = devices.get(pk)
        samples = _clock_samples(pk, start, end)
        clock_map = ClockMap.build(
            samples,
            start=start,
            end=end,
            device_estimate_s=device.clock_fit_offset_s or device.clock_offset_s
            if device is not None
            else None,
        )
        label = device.name if device is not None else str(pk)
        writer.say(f"pose: {label}", 0.05 + 0.85 * done_batches / total_batches)
        pose_name = f"pose/{pk}.ndjson"
        with writer.path(pose_name).open("w", encoding="utf-8", newline="\n") as out:
            stats: PoseStats = write_pose(
                out, _pose_batches(session, pk, clock_map, span), clock_map, span=span
            )
        done_batches += batch_counts[pk]
        if stats.frames == 0:
            (root / pose_name).unlink()
        result.pose_frames += stats.frames
        entry = _device_json(device) if device is not None else {"id": str(pk), "deleted": True}
        entry.update(
            {
                "member": pk in members,
                "placements": _placements(pk, start, end),
                "lens_history": _lens_history(pk, start, end),
                "clock": {
                    "samples": [
                        {
                            "sent_at": s.sent_at,
                            "received_at": s.received_at,
                            "server_time": s.server_time,
                            "returned_at": s.returned_at,
                            "offset_s": round(s.offset_s, 9),
                            "delay_s": round(s.delay_s, 9),
                        }
                        for s in samples
                    ],
                    "method": clock_map.method,
                    "segments": [segment.as_json() for segment in clock_map.segments],
                },
                "pose": {"file": pose_name if stats.frames else None, **stats.as_json()},
            }
        )
        device_docs.append(entry)
    document["devices"] = device_docs

    writer.say("stills", 0.9)
    stills = Still.objects.filter(session_id=session.pk).order_by("captured_at", "device_id", "seq")
    still_lines = []
    for still in stills:
        copied = None
        if copy_stills:
            copied = _still_name(still)
            with (
                default_storage.open(still.file.name, "rb") as source,
                writer.path(copied).open("wb") as target,
            ):
                shutil.copyfileobj(source, target)
            if _sha256(root / copied) != still.sha256:
                raise ExportRefused(f"Still {still.pk}'s file no longer matches its sha256.")
        still_lines.append(_still_line(still, copied))
    result.stills = writer.lines("stills.ndjson", iter(still_lines))
    document["stills"] = {"file": "stills.ndjson", "count": result.stills, "copied": copy_stills}
    document["events"] = {"file": "events.ndjson", "count": result.events}

    writer.say("audio", 0.93)
    document["audio"] = _write_audio(writer, session)

    writer.say("checksums", 0.95)
    writer.text(
        "session.json", json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    )
    result.files = _checksums(root)
    writer.text(CHECKSUMS, "".join(f"{sha}  {name}\n" for name, sha, _ in result.files))
    writer.say("done", 1.0)
    return result
