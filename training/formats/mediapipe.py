"""A reader for MotionMix's MediaPipe Pose JSON: 2D COCO-17 keypoints from a video.

The file (gzip or plain) is one JSON document per video:
`{source, fps, model, frames: [{frame, t?, kp2d?: [[x, y, z, visibility] x 33], kp3d_world?}]}`.
`kp2d` x and y are normalised image coordinates (fractions of the frame's width and height,
x right, y down; MediaPipe may report points slightly outside 0…1), and they stay so here:
the pose features divide by the torso length, so the unit does not matter. MediaPipe's z is
dropped (z = 0, dims = 2) and confidence is the landmark's visibility, clipped to 0…1. A frame
without `kp2d` is a frame with no pose (present = False). `kp3d_world` is not used.

Time is the frame's `t` when given, else `frame / fps` (`fps` argument, else the file's).
Being one JSON document, the file is loaded whole once, then kept as compact arrays
(about 300 bytes a frame) and yielded `CHUNK_FRAMES` frames at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from training.jsonfile import read_json_object
from training.skeleton import MEDIAPIPE33_TO_COCO17, MEDIAPIPE_LANDMARKS
from training.timeline import JOINTS, InputError, MotionChunk, MotionSource

CHUNK_FRAMES = 2048


def read_mediapipe(path: Path, fps: float | None = None, name: str | None = None) -> MotionSource:
    """Open a MediaPipe Pose JSON file as a 2D COCO-17 source."""
    document = _load(path)
    rate = _rate(path, document, fps)
    frames = document.get("frames")
    if not isinstance(frames, list):
        raise InputError(f"{path}: 'frames' must be a list of frames")
    t, joints, conf, present = _arrays(path, frames, rate)
    del document, frames

    def chunks() -> Iterator[MotionChunk]:
        for start in range(0, t.shape[0], CHUNK_FRAMES):
            end = start + CHUNK_FRAMES
            yield MotionChunk(
                t=t[start:end].copy(),
                joints=joints[start:end].copy(),
                conf=conf[start:end].copy(),
                present=present[start:end].copy(),
            )

    label = name or path.name.removesuffix(".gz").removesuffix(".json")
    return MotionSource(name=label, format="mediapipe", dims=2, fps=rate, chunks=chunks)


def _load(path: Path) -> dict[str, Any]:
    return read_json_object(path, "the MediaPipe file")


def _rate(path: Path, document: dict[str, Any], fps: float | None) -> float:
    value = document.get("fps") if fps is None else fps
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{path}: no frame rate: give 'fps' in the file or as an argument")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{path}: the frame rate must be a positive number, got {value!r}")
    return float(value)


def _arrays(
    path: Path, frames: list[Any], fps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    count = len(frames)
    t = np.empty(count, dtype=np.float64)
    joints = np.zeros((count, JOINTS, 3), dtype=np.float32)
    conf = np.zeros((count, JOINTS), dtype=np.float32)
    present = np.zeros(count, dtype=bool)
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise InputError(f"{path}: frames[{i}] is not an object")
        t[i] = _time(path, i, frame, fps)
        if i and t[i] <= t[i - 1]:
            raise InputError(f"{path}: frames[{i}] time {t[i]} s does not follow {t[i - 1]} s")
        landmarks = frame.get("kp2d")
        if landmarks is None:
            continue
        points = _landmarks(path, i, landmarks)
        joints[i, :, :2] = points[:, :2]
        conf[i] = np.clip(points[:, 3], 0.0, 1.0)
        present[i] = True
    return t, joints, conf, present


def _time(path: Path, i: int, frame: dict[str, Any], fps: float) -> float:
    value = frame.get("t")
    if value is None:
        value = frame.get("frame")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{path}: frames[{i}] has neither 't' nor a whole 'frame' number")
        return value / fps
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{path}: frames[{i}] 't' must be a number of seconds")
    return float(value)


def _landmarks(path: Path, i: int, landmarks: Any) -> np.ndarray:
    """The 17 COCO rows `(x, y, z, visibility)` of one frame's 33 MediaPipe landmarks."""
    try:
        points = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.shape != (MEDIAPIPE_LANDMARKS, 4):
        raise InputError(
            f"{path}: frames[{i}] 'kp2d' must be {MEDIAPIPE_LANDMARKS} rows of [x, y, z, vis]"
        )
    coco = points[list(MEDIAPIPE33_TO_COCO17)]
    if not np.isfinite(coco).all():
        raise InputError(f"{path}: frames[{i}] 'kp2d' holds a value that is not finite")
    return coco
