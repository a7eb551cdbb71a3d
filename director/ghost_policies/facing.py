"""Which way the subject's torso faces, on the floor plan, from the cameras' 2D poses.

Each placed camera that sees the subject gives a relative yaw: how far the torso is turned away
from facing that camera, positive clockwise seen from above (as azimuths grow). The camera's
azimuth plus that yaw is a world direction; the directions of all cameras are fused in a
confidence-weighted circular mean. Pure functions, no database.

Geometry (seen from above, the camera at azimuth `a`, the torso facing `φ`, yaw θ = φ - a):
- the shoulders span W; in the image the subject's left shoulder minus the right one is
  W·cos θ along x: positive when the subject faces the camera, negative from behind;
- the nose stands D·W in front of the shoulder line; in the image it sits -D·W·sin θ along x
  from the shoulders' midpoint, so θ = atan2(-nose offset / D, shoulder span). Only image x
  enters this, so neither the frame's size nor its aspect ratio matters;
- from behind there is no nose: the shoulder span against the torso height (shoulders to
  hips, which yaw does not change) gives |cos θ|, and the ear the camera still sees gives the
  side. That ratio assumes x and y share one unit (pixels), so it counts for less.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from director.ghost_policies.snapshot import CameraState, PoseFrame

# Measured on the metric world landmarks MediaPipe found in real footage (the shared pose
# data): the nose stands about 0.58 shoulder widths in front of the shoulder line, and the
# shoulders span about 0.65 torso heights. Rounded; they only scale an angle.
NOSE_DEPTH_OVER_SHOULDERS = 0.55
SHOULDERS_OVER_TORSO = 0.7
MIN_KEYPOINT_CONFIDENCE = 0.3
# Without a nose the side the subject turned to is unknown; close to square-on (or square
# away) the side hardly matters, further round it does and the frame says nothing.
MAX_UNSIGNED_SIN = 0.5
BACK_VIEW_WEIGHT = 0.5


@dataclass(frozen=True)
class Layout:
    """Where the joints the estimator needs sit in one keypoint format."""

    size: int
    nose: int
    left_eyes: tuple[int, ...]
    right_eyes: tuple[int, ...]
    left_ear: int
    right_ear: int
    left_shoulder: int
    right_shoulder: int
    left_hip: int
    right_hip: int


LAYOUTS: dict[str, Layout] = {
    # COCO: nose, eyes L/R, ears L/R, shoulders L/R, elbows, wrists, hips L/R, knees, ankles.
    "coco17": Layout(
        size=17,
        nose=0,
        left_eyes=(1,),
        right_eyes=(2,),
        left_ear=3,
        right_ear=4,
        left_shoulder=5,
        right_shoulder=6,
        left_hip=11,
        right_hip=12,
    ),
    # BlazePose: nose, left eye inner/centre/outer, right eye inner/centre/outer, ears L/R,
    # mouth L/R, shoulders L/R (11, 12), ... hips L/R (23, 24), ...
    "mediapipe33": Layout(
        size=33,
        nose=0,
        left_eyes=(1, 2, 3),
        right_eyes=(4, 5, 6),
        left_ear=7,
        right_ear=8,
        left_shoulder=11,
        right_shoulder=12,
        left_hip=23,
        right_hip=24,
    ),
    # vision19 is refused on purpose: Apple Vision hands joints over by name
    # (VNHumanBodyPoseObservation.JointName), with no index order of its own, and the device
    # contract does not fix one yet. Guessing an order would silently mirror or scramble the
    # estimate; add its layout here once the capture app documents the order it sends.
}


class UnsupportedPoseFormat(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    confidence: float


@dataclass(frozen=True)
class RelativeYaw:
    yaw_deg: float  # 0: the torso faces the camera; positive: turned clockwise from above
    confidence: float


@dataclass(frozen=True)
class FacingEstimate:
    azimuth_deg: float  # the world direction the torso faces, 0..360
    confidence: float  # 0..1: the cameras' confidence times how well they agree
    cameras: int


def layout_for(format: str) -> Layout:
    layout = LAYOUTS.get(format)
    if layout is None:
        raise UnsupportedPoseFormat(
            f"Pose format {format!r} has no known keypoint order; "
            f"Ghost reads {', '.join(sorted(LAYOUTS))}."
        )
    return layout


def _point(keypoints: Sequence[Sequence[float]], index: int) -> Point | None:
    if index >= len(keypoints) or len(keypoints[index]) < 3:
        return None
    x, y, confidence = (float(v) for v in keypoints[index][:3])
    if not all(math.isfinite(v) for v in (x, y, confidence)):
        return None
    return Point(x, y, confidence) if confidence >= MIN_KEYPOINT_CONFIDENCE else None


def relative_yaw(frame: PoseFrame) -> RelativeYaw | None:
    """How far the subject's torso is turned from facing the camera that took `frame`; None
    when the frame does not show enough of the body (or says nothing about the side)."""
    layout = layout_for(frame.format)
    kp = frame.keypoints
    if len(kp) < layout.size:
        return None
    left, right = _point(kp, layout.left_shoulder), _point(kp, layout.right_shoulder)
    if left is None or right is None:
        return None
    span = left.x - right.x
    mid_x, mid_y = (left.x + right.x) / 2, (left.y + right.y) / 2
    shoulders_conf = min(left.confidence, right.confidence)
    nose = _point(kp, layout.nose)
    if nose is not None:
        if span == 0 and nose.x == mid_x:
            return None  # every point on one spot: nothing to read
        yaw = math.atan2(-(nose.x - mid_x) / NOSE_DEPTH_OVER_SHOULDERS, span)
        return RelativeYaw(math.degrees(yaw), min(shoulders_conf, nose.confidence))
    # From behind (or the face hidden): the torso's proportions and the ears.
    hips = [p for p in (_point(kp, layout.left_hip), _point(kp, layout.right_hip)) if p]
    if not hips:
        return None
    hip_x = sum(p.x for p in hips) / len(hips)
    hip_y = sum(p.y for p in hips) / len(hips)
    torso = math.hypot(mid_x - hip_x, mid_y - hip_y)
    if torso <= 0:
        return None
    cos_yaw = max(-1.0, min(1.0, span / (SHOULDERS_OVER_TORSO * torso)))
    face_seen = any(_point(kp, i) for i in (*layout.left_eyes, *layout.right_eyes))
    if not face_seen:
        # Shoulder order can read "front" on a back view when the subject is side-on; with
        # no face visible the torso is turned away.
        cos_yaw = -abs(cos_yaw)
    sin_abs = math.sqrt(max(0.0, 1 - cos_yaw * cos_yaw))
    left_ear, right_ear = _point(kp, layout.left_ear), _point(kp, layout.right_ear)
    if left_ear and not right_ear:
        side = 1.0  # the subject's left side faces the camera: turned clockwise
    elif right_ear and not left_ear:
        side = -1.0
    elif sin_abs <= MAX_UNSIGNED_SIN:
        side = 1.0
    else:
        return None
    confidence = BACK_VIEW_WEIGHT * min(shoulders_conf, *(p.confidence for p in hips))
    return RelativeYaw(math.degrees(math.atan2(side * sin_abs, cos_yaw)), confidence)


def angle_between(a: float, b: float) -> float:
    """The unsigned angle between two azimuths, 0..180."""
    diff = abs(a - b) % 360.0
    return 360.0 - diff if diff > 180 else diff


def _circular_mean(directions: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """(mean azimuth, resultant length 0..1, total weight) of (azimuth, weight) pairs."""
    total = sum(w for _, w in directions)
    if total <= 0:
        return 0.0, 0.0, 0.0
    x = sum(w * math.cos(math.radians(a)) for a, w in directions)
    y = sum(w * math.sin(math.radians(a)) for a, w in directions)
    length = math.hypot(x, y) / total
    return math.degrees(math.atan2(y, x)) % 360.0, length, total


def estimate_facing(
    cameras: Sequence[CameraState],
    pose: Mapping[UUID, Sequence[PoseFrame]],
    *,
    now_ts: float,
    max_age_s: float,
) -> FacingEstimate | None:
    """The torso's world direction from the fresh frames of the placed online cameras. Each
    camera's frames are averaged first, so a camera that sends more frames does not count
    more; frames older than `max_age_s` (or in an unknown format) are left out."""
    per_camera: list[tuple[float, float]] = []
    for camera in cameras:
        if not camera.online or camera.azimuth_deg is None:
            continue
        directions: list[tuple[float, float]] = []
        for frame in pose.get(camera.id, ()):
            if now_ts - frame.t > max_age_s or frame.format not in LAYOUTS:
                continue
            yaw = relative_yaw(frame)
            if yaw is not None and yaw.confidence > 0:
                directions.append((camera.azimuth_deg + yaw.yaw_deg, min(1.0, yaw.confidence)))
        if directions:
            azimuth, agreement, total = _circular_mean(directions)
            per_camera.append((azimuth, agreement * total / len(directions)))
    if not per_camera:
        return None
    azimuth, agreement, total = _circular_mean(per_camera)
    return FacingEstimate(
        azimuth_deg=azimuth,
        confidence=max(0.0, min(1.0, agreement * total / len(per_camera))),
        cameras=len(per_camera),
    )
