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
from pathlib import Path
from typing import Any
from uuid import UUID

from django.core.files.storage import default_storage
from django.db.models import Q

from devices.models import Device, PoseBatch
from director.export import reads
from director.export.clockmap import ClockMap
from director.export.pose import PoseStats, write_pose
from director.export.reads import FORMAT, FORMAT_VERSION
from director.models import PhotoshootSession, Still
from director.music.selectors import session_music
from ledger.models import ProductionEvent

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ExportRefused",
    "ExportResult",
    "export_session",
    "file_sha256",
]

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
        if file_sha256(writer.root / name) != track.sha256:
            raise ExportRefused(
                f"Music track {track.original_name!r} no longer matches its sha256."
            )
        tracks.append({**track.as_json(), "file": name})
    count = writer.lines(f"audio/{CUES}", (reads.dumps(cue.as_json()) for cue in music.cues))
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


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksums(root: Path) -> list[tuple[str, str, int]]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [(name, file_sha256(root / name), (root / name).stat().st_size) for name in files]


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
    span = reads.span(session)
    start, end = span
    document = reads.session_json_base(session, span)

    writer.say("events", 0.0)
    events = ProductionEvent.objects.filter(stream=str(session.pk)).order_by("seq")
    result.events = writer.lines(
        "events.ndjson", (reads.event_line(e) for e in events.iterator(chunk_size=500))
    )

    device_ids = reads.device_ids(session)
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
        samples = reads.clock_samples(pk, start, end)
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
                out, reads.pose_batches(session, pk, clock_map, span), clock_map, span=span
            )
        done_batches += batch_counts[pk]
        if stats.frames == 0:
            (root / pose_name).unlink()
        result.pose_frames += stats.frames
        entry = (
            reads.device_json(device) if device is not None else {"id": str(pk), "deleted": True}
        )
        entry.update(
            {
                "member": pk in members,
                "placements": reads.placements(pk, start, end),
                "lens_history": reads.lens_history(pk, start, end),
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
            copied = reads.still_name(still)
            with (
                default_storage.open(still.file.name, "rb") as source,
                writer.path(copied).open("wb") as target,
            ):
                shutil.copyfileobj(source, target)
            if file_sha256(root / copied) != still.sha256:
                raise ExportRefused(f"Still {still.pk}'s file no longer matches its sha256.")
        still_lines.append(reads.still_line(still, copied))
    result.stills = writer.lines("stills.ndjson", iter(still_lines))
    document["stills"] = {"file": "stills.ndjson", "count": result.stills, "copied": copy_stills}
    document["events"] = {"file": "events.ndjson", "count": result.events}

    writer.say("audio", 0.93)
    document["audio"] = _write_audio(writer, session)

    writer.say("checksums", 0.95)
    writer.text(
        "session.json",
        json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n",
    )
    result.files = _checksums(root)
    writer.text(CHECKSUMS, "".join(f"{sha}  {name}\n" for name, sha, _ in result.files))
    writer.say("done", 1.0)
    return result
