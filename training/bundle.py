"""A session bundle (docs/session-bundle.md, format version 1) read for the training pipeline.

`read_bundle` takes the exported folder or its zip download (one top-level folder
`motionmix-session-<id>/`). It refuses an unknown format or version, verifies every file that
`checksums.sha256` lists, and reads every pose file once to validate it and to compare the
server times it recomputes from the device's clock segments with the exporter's `t_server`.

Motion: one `MotionSource` per camera with a pose file, streamed line by line in chunks, on
the server's clock (unix s). Music: one `Take` per uninterrupted stretch of playback, from
the cues; audio time = server time + `shift_s`.

A zip is read in place: pose and cues are streamed from its members; the audio tracks, which
the decoder needs as files, are extracted once to `<cache_dir>/bundles/<zip sha256>/<path>`
(checked against their sha256 and reused when already there).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from training.bundle_clock import DeviceClock, read_clock
from training.bundle_store import BundleStore, get_field, get_number, loads_json
from training.skeleton import MEDIAPIPE33_TO_COCO17
from training.timeline import JOINTS, InputError, MotionChunk, MotionSource

FORMAT = "motionmix.session-bundle"
FORMAT_VERSION = 1
CHECKSUMS = "checksums.sha256"
CHUNK_FRAMES = 1024
MIN_TAKE_S = 1.0
_READ = 1 << 20
# Keypoint formats mapped onto COCO-17 (index of each COCO joint in the format's order).
# vision19 is refused: the bundle does not say Apple Vision's joint order.
_TO_COCO: dict[str, tuple[int, ...]] = {
    "coco17": tuple(range(17)),
    "mediapipe33": MEDIAPIPE33_TO_COCO17,
}
_SIZES = {"coco17": 17, "mediapipe33": 33}


@dataclass(frozen=True)
class Take:
    """One uninterrupted stretch of playback of one track: audio time = server time + shift_s."""

    track_id: str
    audio_path: Path
    audio_sha256: str
    track_start_s: float
    track_end_s: float
    server_start_s: float
    shift_s: float


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. `devices`: per device {id, name, kind, member, deleted, pose_file,
    pose_frames, pose_formats, clock_method, skipped}; `clock_report`: per device id {method,
    segments, offset_s (at the middle of its segments), drift_ppm, uncertainty_s (the largest
    segment's), frames, dropped_not_increasing, max_t_server_disagreement_s}."""

    path: Path
    session_id: str
    session_name: str
    span: tuple[float, float]
    files: list[tuple[str, Path]]
    devices: list[dict[str, Any]]
    takes: list[Take]
    motion: list[MotionSource]
    clock_report: dict[str, dict[str, Any]]


# --- Pose --------------------------------------------------------------------------------------


def _pose_line(text: str, where: str) -> tuple[float, float, list[list[float]]]:
    """(t_device, t_server, 17 [x, y, c]) of one pose line, in COCO-17 order."""
    line = loads_json(text, where)
    fmt = get_field(line, "format", str, where)
    if fmt not in _TO_COCO:
        raise InputError(f"{where}: keypoint format {fmt!r} cannot be mapped to COCO-17")
    points = get_field(line, "keypoints", list, where)
    if len(points) != _SIZES[fmt] or any(not isinstance(p, list) or len(p) != 3 for p in points):
        raise InputError(f"{where}: {fmt} needs {_SIZES[fmt]} keypoints of [x, y, c]")
    return (
        get_number(line, "t_device", where),
        get_number(line, "t_server", where),
        [points[i] for i in _TO_COCO[fmt]],
    )


def _chunk(times: list[float], points: list[list[list[float]]], where: str) -> MotionChunk:
    try:
        values = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: keypoints are not numbers") from exc
    n = len(times)
    joints = np.zeros((n, JOINTS, 3), dtype=np.float32)
    joints[:, :, :2] = values[:, :, :2]
    conf = np.clip(values[:, :, 2], 0.0, 1.0).astype(np.float32)
    return MotionChunk(
        t=np.asarray(times, dtype=np.float64),
        joints=joints,
        conf=conf,
        present=conf.max(axis=1) > 0,
    )


def _frames(
    store: BundleStore, name: str, clock: DeviceClock, stats: dict[str, Any]
) -> Iterator[tuple[float, list[list[float]], str]]:
    """(server time, COCO-17 keypoints, line label) per frame, streamed; a frame not strictly
    later than the one before is dropped. `stats` gathers drops and the largest
    |recomputed - exported| t_server."""
    last = -np.inf
    for number, text in store.lines(name):
        where = f"{store.label(name)}:{number}"
        t_device, t_server, keypoints = _pose_line(text, where)
        server = clock.to_server(t_device)
        stats["max_t_server_disagreement_s"] = max(
            stats["max_t_server_disagreement_s"], abs(server - t_server)
        )
        if server <= last:
            stats["dropped_not_increasing"] += 1
            continue
        last = server
        yield server, keypoints, where


def _new_stats() -> dict[str, Any]:
    return {"frames": 0, "dropped_not_increasing": 0, "max_t_server_disagreement_s": 0.0}


def _pose_stream(store: BundleStore, name: str, clock: DeviceClock) -> Iterator[MotionChunk]:
    """The pose file as MotionChunks of up to CHUNK_FRAMES frames on the server's clock."""
    times: list[float] = []
    points: list[list[list[float]]] = []
    for server, keypoints, where in _frames(store, name, clock, _new_stats()):
        times.append(server)
        points.append(keypoints)
        if len(times) == CHUNK_FRAMES:
            yield _chunk(times, points, where)
            times, points = [], []
    if times:
        yield _chunk(times, points, store.label(name))


def _check_pose(store: BundleStore, name: str, clock: DeviceClock) -> tuple[dict[str, Any], float]:
    """Validate every line once: the pose statistics and the mean frame rate."""
    stats = _new_stats()
    first = last = 0.0
    for server, _, _ in _frames(store, name, clock, stats):
        first = server if stats["frames"] == 0 else first
        last = server
        stats["frames"] += 1
    fps = (stats["frames"] - 1) / (last - first) if last > first else 0.0
    return stats, fps


def _source(
    store: BundleStore, device_id: str, name: str, clock: DeviceClock, fps: float
) -> MotionSource:
    def chunks() -> Iterator[MotionChunk]:
        return _pose_stream(store, name, clock)

    return MotionSource(name=device_id, format="bundle-pose", dims=2, fps=fps, chunks=chunks)


# --- Music -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Track:
    track_id: str
    file: str
    sha256: str
    duration_s: float
    replaced_unix: float


def _unix(value: object, where: str) -> float:
    """An ISO 8601 time as unix seconds (UTC when it carries no zone)."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InputError(f"{where}: not an ISO 8601 time") from exc
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _tracks(store: BundleStore, audio: dict[str, Any], where: str) -> dict[str, _Track]:
    tracks = {}
    for i, raw in enumerate(get_field(audio, "tracks", list, where)):
        at = f"{where}.tracks[{i}]"
        replaced = raw.get("replaced_at") if isinstance(raw, dict) else None
        track = _Track(
            get_field(raw, "track_id", str, at),
            get_field(raw, "file", str, at),
            get_field(raw, "sha256", str, at),
            get_number(raw, "duration_s", at),
            float("inf") if replaced is None else _unix(replaced, f"{at}.replaced_at"),
        )
        if not store.has(track.file):
            raise InputError(f"{store.label(track.file)}: named in {at} but missing")
        tracks[track.track_id] = track
    return tracks


def _takes(
    store: BundleStore, audio: dict[str, Any], span: tuple[float, float], where: str
) -> list[Take]:
    """Every stretch of playback: a play (or a seek while playing) starts one; any later cue
    (the player holds one track), the track's replacement or end, or the span's end ends it."""
    tracks = _tracks(store, audio, where)
    cues_name = str(get_field(get_field(audio, "cues", dict, where), "file", str, f"{where}.cues"))
    stretches: list[tuple[_Track, float, float, float]] = []  # track, p0, s0, end
    playing: tuple[_Track, float, float] | None = None
    for number, text in store.lines(cues_name):
        at = f"{store.label(cues_name)}:{number}"
        cue = loads_json(text, at)
        track_id = get_field(cue, "track_id", str, at)
        if track_id not in tracks:
            raise InputError(f"{at}: track {track_id} is not in session.json audio.tracks")
        action = get_field(cue, "action", str, at)
        position, server = get_number(cue, "position_s", at), get_number(cue, "server_time", at)
        still_playing = playing is not None and playing[0].track_id == track_id
        if playing is not None:
            stretches.append((*playing, min(server, playing[0].replaced_unix)))
            still_playing = still_playing and server < playing[0].replaced_unix
        if action == "play" or (action == "seek" and still_playing):
            playing = (tracks[track_id], position, server)
        else:
            playing = None
    if playing is not None:
        stretches.append((*playing, min(span[1], playing[0].replaced_unix)))
    takes = [_take(store, *stretch, span) for stretch in stretches]
    return [take for take in takes if take is not None]


def _take(
    store: BundleStore, track: _Track, p0: float, s0: float, end: float, span: tuple[float, float]
) -> Take | None:
    shift = p0 - s0
    start = max(s0, span[0], -shift)  # not before the session nor the track's start
    end = min(end, span[1], track.duration_s - shift)
    if end - start < MIN_TAKE_S:
        return None
    return Take(
        track_id=track.track_id,
        audio_path=store.local_path(track.file, track.sha256),
        audio_sha256=track.sha256,
        track_start_s=start + shift,
        track_end_s=end + shift,
        server_start_s=start,
        shift_s=shift,
    )


# --- The bundle --------------------------------------------------------------------------------


def _verify_checksums(store: BundleStore) -> None:
    if not store.has(CHECKSUMS):
        raise InputError(f"{store.label(CHECKSUMS)}: missing")
    for number, text in store.lines(CHECKSUMS):
        where = f"{store.label(CHECKSUMS)}:{number}"
        digest, sep, name = text.rstrip("\n").partition("  ")
        path = PurePosixPath(name)
        if not sep or len(digest) != 64 or path.is_absolute() or ".." in path.parts:
            raise InputError(f"{where}: expected '<sha256>  <path>'")
        if not store.has(name):
            raise InputError(f"{store.label(name)}: listed in {CHECKSUMS} but missing")
        if store.sha256(name) != digest.lower():
            raise InputError(f"{store.label(name)}: sha256 does not match {CHECKSUMS}")


def _session_json(store: BundleStore) -> dict[str, Any]:
    if not store.has("session.json"):
        raise InputError(f"{store.label('session.json')}: missing: not a session bundle")
    with store.open("session.json") as handle:
        document = loads_json(handle.read(), store.label("session.json"))
    where = store.label("session.json")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{where}: format is not {FORMAT!r}")
    if document.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{where}: format_version {document.get('format_version')!r} is not supported "
            f"(this reader knows {FORMAT_VERSION})"
        )
    return document


def _device(
    store: BundleStore, device: dict[str, Any], at: str
) -> tuple[dict[str, Any], MotionSource | None, dict[str, Any]]:
    """One device's summary, its motion (None without a usable pose file) and clock report."""
    device_id = get_field(device, "id", str, at)
    clock, report = read_clock(device, at)
    pose = device.get("pose") if isinstance(device.get("pose"), dict) else {}
    pose_file = pose.get("file")
    formats = sorted(str(f) for f in pose.get("formats") or [])
    unknown = [f for f in formats if f not in _TO_COCO]
    skipped = f"keypoint format {unknown[0]} has no COCO-17 mapping" if unknown else None
    checked: dict[str, Any] = {"frames": 0, "max_t_server_disagreement_s": None}
    source = None
    if pose_file is not None and skipped is None:
        checked, fps = _check_pose(store, str(pose_file), clock)
        source = _source(store, device_id, str(pose_file), clock, fps)
    report.update(checked)
    summary = {
        "id": device_id,
        "name": str(device.get("name", "")),
        "kind": str(device.get("kind", "")),
        "member": bool(device.get("member", False)),
        "deleted": bool(device.get("deleted", False)),
        "pose_file": None if pose_file is None else str(pose_file),
        "pose_frames": int(checked["frames"]),
        "pose_formats": formats,
        "clock_method": report["method"],
        "skipped": skipped,
    }
    return summary, source, report


def read_bundle(path: Path, cache_dir: Path) -> Bundle:
    """Read and verify a bundle folder or zip; raises InputError naming the file at fault."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such bundle")
    store = BundleStore(path, Path(cache_dir))
    document = _session_json(store)
    _verify_checksums(store)
    where = store.label("session.json")
    session = get_field(document, "session", dict, where)
    raw_span = get_field(session, "span", dict, f"{where}.session")
    span = (
        get_number(raw_span, "start", f"{where}.span"),
        get_number(raw_span, "end", f"{where}.span"),
    )
    devices, motion, report = [], [], {}
    for i, device in enumerate(get_field(document, "devices", list, where)):
        summary, source, clock = _device(store, device, f"{where}.devices[{i}]")
        report[summary["id"]] = clock
        devices.append(summary)
        if source is not None:
            motion.append(source)
    audio = document.get("audio")
    takes = [] if audio is None else _takes(store, audio, span, f"{where}.audio")
    return Bundle(
        path=path,
        session_id=str(get_field(session, "id", str, f"{where}.session")),
        session_name=str(session.get("name", "")),
        span=span,
        files=store.files(),
        devices=devices,
        takes=takes,
        motion=motion,
        clock_report=report,
    )
