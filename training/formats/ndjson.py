"""A streaming reader for NDJSON keypoints: one JSON object per line, one frame per object.

A line is `{"t": seconds, "format": "coco17", "keypoints": [[x, y, c] x 17]}` (2D image
coordinates, dims = 2) or `[[x, y, z, c] x 17]` (3D, dims = 3); the time field may be named
by `time_key` (e.g. "t_server", "t_device"); "format", when given, must be "coco17".
`"keypoints": null` or `[]` (or no keypoints) is a frame with no pose. Confidence is clipped
to 0…1. Blank lines are skipped.

Lines are read one at a time and yielded `CHUNK_FRAMES` frames per chunk. Times must strictly
increase: a stream is never sorted, so a line out of order is refused with its line number.
Opening the source reads ahead only until the first pose (to learn dims) and the first
`SURVEY_LINES` lines; without an `fps` argument the nominal rate is 1 / the median time step
of those lines (30 fps if the file has a single frame).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from training.timeline import FPS, JOINTS, InputError, MotionChunk, MotionSource

CHUNK_FRAMES = 2048
SURVEY_LINES = 256

_Frame = tuple[float, np.ndarray | None]  # time, keypoints (17, 3 or 4) or no pose


def read_ndjson(
    path: Path, fps: float | None = None, name: str | None = None, time_key: str = "t"
) -> MotionSource:
    """Open an NDJSON keypoint file as a COCO-17 source (2D or 3D, from its first pose)."""
    dims, rate = _survey(path, time_key)
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise InputError(f"{path}: the frame rate must be a positive number, got {fps!r}")
        rate = float(fps)

    def chunks() -> Iterator[MotionChunk]:
        return _stream(path, time_key, dims)

    label = name or path.name.removesuffix(".ndjson").removesuffix(".jsonl")
    return MotionSource(name=label, format="ndjson", dims=dims, fps=rate, chunks=chunks)


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the NDJSON file ({exc.strerror})") from None


def _frames(path: Path, time_key: str) -> Iterator[tuple[int, float, np.ndarray | None]]:
    """(line number, time, keypoints or None) for each non-blank line, checked, in order."""
    previous = -math.inf
    with _open(path) as handle:
        number = 0
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                t, points = _parse(path, number, line, time_key)
                if t <= previous:
                    raise InputError(
                        f"{path}, line {number}: time {t} s does not follow {previous} s "
                        "(frames must be in increasing time order)"
                    )
                previous = t
                yield number, t, points
        except UnicodeDecodeError:
            raise InputError(f"{path}, line {number + 1}: not UTF-8 text") from None


def _parse(path: Path, number: int, line: str, time_key: str) -> _Frame:
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: malformed JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object")
    t = record.get(time_key)
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise InputError(f"{where}: {time_key!r} must be a number of seconds")
    if record.get("format", "coco17") != "coco17":
        raise InputError(f"{where}: format {record['format']!r} is not 'coco17'")
    return float(t), _keypoints(where, record.get("keypoints"))


def _keypoints(where: str, value: Any) -> np.ndarray | None:
    if value is None or (isinstance(value, list) and not value):
        return None
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] not in (3, 4):
        raise InputError(f"{where}: keypoints must be rows of [x, y, c] or [x, y, z, c]")
    if points.shape[0] != JOINTS:
        raise InputError(f"{where}: expected {JOINTS} keypoints, found {points.shape[0]}")
    if not np.isfinite(points).all():
        raise InputError(f"{where}: a keypoint value is not finite")
    return points


def _survey(path: Path, time_key: str) -> tuple[int, float]:
    """Dims from the first pose, nominal rate from the first `SURVEY_LINES` frames."""
    times: list[float] = []
    dims: int | None = None
    frames = _frames(path, time_key)
    try:
        for _, t, points in frames:
            if len(times) < SURVEY_LINES:
                times.append(t)
            if dims is None and points is not None:
                dims = points.shape[1] - 1
            if dims is not None and len(times) >= SURVEY_LINES:
                break
    finally:
        frames.close()
    if not times:
        raise InputError(f"{path}: the file holds no frames")
    rate = float(FPS) if len(times) < 2 else 1.0 / float(np.median(np.diff(times)))
    return dims or 2, rate


def _stream(path: Path, time_key: str, dims: int) -> Iterator[MotionChunk]:
    t = np.empty(CHUNK_FRAMES, dtype=np.float64)
    joints = np.zeros((CHUNK_FRAMES, JOINTS, 3), dtype=np.float32)
    conf = np.zeros((CHUNK_FRAMES, JOINTS), dtype=np.float32)
    present = np.zeros(CHUNK_FRAMES, dtype=bool)
    filled = 0
    for number, time, points in _frames(path, time_key):
        t[filled] = time
        joints[filled] = 0.0
        conf[filled] = 0.0
        present[filled] = points is not None
        if points is not None:
            if points.shape[1] - 1 != dims:
                raise InputError(
                    f"{path}, line {number}: a {points.shape[1] - 1}D pose in a {dims}D stream"
                )
            joints[filled, :, :dims] = points[:, :dims]
            conf[filled] = np.clip(points[:, -1], 0.0, 1.0)
        filled += 1
        if filled == CHUNK_FRAMES:
            yield _chunk(t, joints, conf, present, filled)
            filled = 0
    if filled:
        yield _chunk(t, joints, conf, present, filled)


def _chunk(
    t: np.ndarray, joints: np.ndarray, conf: np.ndarray, present: np.ndarray, count: int
) -> MotionChunk:
    return MotionChunk(
        t=t[:count].copy(),
        joints=joints[:count].copy(),
        conf=conf[:count].copy(),
        present=present[:count].copy(),
    )
