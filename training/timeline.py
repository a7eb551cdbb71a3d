"""The shapes every stage of the pipeline hands to the next.

A motion source is read as a stream of `MotionChunk`s on its own clock (seconds). A pair maps
that clock onto its audio track's (`audio time = source time + shift_s`), and the resampler
turns the chunks into `FrameBlock`s on the audio's 30 fps grid: frame `k` is audio time
`k / FPS`, the same instant as audio feature frame `k` (sample `k × HOP_LENGTH` at
`SAMPLE_RATE`).

Every skeleton is COCO-17 (`training.skeleton.COCO17`). Mocap is 3D in metres with y up; 2D
keypoints are image coordinates (x right, y down) with z = 0; `MotionSource.dims` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

FPS = 30
SAMPLE_RATE = 15360
HOP_LENGTH = 512
JOINTS = 17

assert SAMPLE_RATE == FPS * HOP_LENGTH


class InputError(ValueError):
    """An input the pipeline cannot use: the message names the file and what is wrong."""


@dataclass(frozen=True)
class MotionChunk:
    """Consecutive frames of one source, in time order, on the source's clock."""

    t: np.ndarray  # (n,) float64 seconds, strictly increasing across a source's chunks
    joints: np.ndarray  # (n, 17, 3) float32; undefined where not present
    conf: np.ndarray  # (n, 17) float32 in [0, 1]; 0 = the joint was not seen
    present: np.ndarray  # (n,) bool: a pose was found in this frame

    def __len__(self) -> int:
        return int(self.t.shape[0])


@dataclass(frozen=True)
class MotionSource:
    """One stream of poses: a BVH take, a MediaPipe file, an NDJSON file, a bundle's camera."""

    name: str  # unique within its input, e.g. "60_10_scaled" or a device id
    format: str  # "bvh" | "mediapipe" | "ndjson" | "bundle-pose"
    dims: int  # 3 for mocap in metres, 2 for image keypoints
    fps: float  # nominal frame rate of the source
    chunks: Callable[[], Iterator[MotionChunk]]  # a fresh stream on every call


@dataclass(frozen=True)
class FrameBlock:
    """Motion resampled onto the audio's 30 fps grid: frames `start … start + n − 1`."""

    start: int  # index of the first frame on the audio's grid
    joints: np.ndarray  # (n, 17, 3) float32; 0 where missing
    conf: np.ndarray  # (n, 17) float32; 0 where missing
    missing: np.ndarray  # (n,) bool: no pose within the gap limit

    def __len__(self) -> int:
        return int(self.missing.shape[0])
