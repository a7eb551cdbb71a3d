"""Body-size-free motion features of one window of 30 fps frames.

Positions are made comparable across people, cameras and units: y is turned up for 2D image
keypoints (y → −y), the window's first present mid-hip becomes the origin, and everything is
divided by the window's median torso length (mid-shoulder to mid-hip) over present frames, so
positions are in torso lengths and velocities in torso lengths per second. Missing frames get
0 everywhere. Velocities are central differences `(p[i+1] − p[i−1]) · FPS / 2`, one-sided
`(p[1] − p[0]) · FPS` and `(p[n−1] − p[n−2]) · FPS` at the window's ends, and 0 where the frame
or a neighbour it needs is missing. Kinetic energy is `0.5 · Σ_j |v_j|²` (unit mass per joint);
speed is the mean joint speed, which motion beats are found from.

All arithmetic is float64 with fixed reduction order, stored as float32: bit-identical runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.skeleton import mid_hip, torso_length
from training.timeline import FPS, JOINTS

# A window whose median torso is shorter than this (no present frame, or a degenerate
# skeleton) keeps scale 1 instead of dividing by almost nothing.
MIN_TORSO = 1e-6


@dataclass(frozen=True)
class MotionFeatures:
    positions: np.ndarray  # (n, 17, 3) float32, torso lengths, origin at the first mid-hip
    velocities: np.ndarray  # (n, 17, 3) float32, torso lengths per second
    kinetic: np.ndarray  # (n,) float32, 0.5 · Σ_j |v_j|²
    speed: np.ndarray  # (n,) float32, mean over joints of |v_j|
    scale: float  # the torso length that positions were divided by, in source units


def motion_features(joints: np.ndarray, missing: np.ndarray, dims: int) -> MotionFeatures:
    """Normalised positions, velocities, kinetic energy and speed for frames `(n, 17, 3)`."""
    if joints.ndim != 3 or joints.shape[1:] != (JOINTS, 3) or missing.shape != joints.shape[:1]:
        raise ValueError("expected joints (n, 17, 3) and missing (n,)")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    present = ~np.asarray(missing, dtype=bool)
    positions, scale = _normalise(np.asarray(joints, dtype=np.float64), present, dims)
    velocities = _velocities(positions, present)
    squared = np.sum(velocities * velocities, axis=2)  # (n, 17)
    kinetic = 0.5 * np.sum(squared, axis=1)
    speed = np.mean(np.sqrt(squared), axis=1)
    return MotionFeatures(
        positions=positions.astype(np.float32),
        velocities=velocities.astype(np.float32),
        kinetic=kinetic.astype(np.float32),
        speed=speed.astype(np.float32),
        scale=scale,
    )


def _normalise(joints: np.ndarray, present: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """Positions (float64) with y up, origin at the first present mid-hip, in torso lengths."""
    points = joints.copy()
    if dims == 2:
        points[..., 1] = -points[..., 1]
        points[..., 2] = 0.0
    out = np.zeros_like(points)
    if not present.any():
        return out, 1.0
    origin = mid_hip(points[int(np.argmax(present))])
    median = float(np.median(torso_length(points[present])))
    scale = median if median >= MIN_TORSO else 1.0
    out[present] = (points[present] - origin) / scale
    return out, scale


def _velocities(positions: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Central differences inside, one-sided at the ends, 0 where a frame needed is missing."""
    count = positions.shape[0]
    velocities = np.zeros_like(positions)
    if count < 2:
        return velocities
    inner = present[1:-1] & present[:-2] & present[2:]
    central = (positions[2:] - positions[:-2]) * (FPS / 2.0)
    velocities[1:-1][inner] = central[inner]
    if present[0] and present[1]:
        velocities[0] = (positions[1] - positions[0]) * FPS
    if present[-1] and present[-2]:
        velocities[-1] = (positions[-1] - positions[-2]) * FPS
    return velocities
