"""The COCO-17 skeleton every MotionMix training stage speaks, and small helpers on it.

Joint order is the COCO keypoint order, so index `i` means the same body point in a BVH take,
a MediaPipe file and an NDJSON stream. MediaPipe Pose's 33 landmarks map onto it by index.
"""

from __future__ import annotations

import numpy as np

COCO17: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_INDEX: dict[str, int] = {name: i for i, name in enumerate(COCO17)}

LEFT_SHOULDER = COCO_INDEX["left_shoulder"]
RIGHT_SHOULDER = COCO_INDEX["right_shoulder"]
LEFT_HIP = COCO_INDEX["left_hip"]
RIGHT_HIP = COCO_INDEX["right_hip"]

# MediaPipe Pose landmark index for each COCO-17 joint, in COCO order (MediaPipe numbers:
# 0 nose, 2/5 eye centres, 7/8 ears, 11-16 arms, 23-28 legs).
MEDIAPIPE33_TO_COCO17: tuple[int, ...] = (
    0,
    2,
    5,
    7,
    8,
    11,
    12,
    13,
    14,
    15,
    16,
    23,
    24,
    25,
    26,
    27,
    28,
)
MEDIAPIPE_LANDMARKS = 33


# Mocap joint names (lower case) for each COCO limb joint, tried in order: Daz (lShldr, lThigh,
# ...) then ASF style (LeftArm, LeftUpLeg, ...). "{s}" is "l"/"r", "{side}" "left"/"right".
_MOCAP_PATTERNS: dict[str, tuple[str, ...]] = {
    "shoulder": ("{s}shldr", "{s}shldrbend", "{side}arm"),
    "elbow": ("{s}forearm", "{s}forearmbend", "{side}forearm"),
    "wrist": ("{s}hand", "{side}hand"),
    "hip": ("{s}thigh", "{s}thighbend", "{side}upleg"),
    "knee": ("{s}shin", "{side}leg"),
    "ankle": ("{s}foot", "{side}foot"),
}
# Mocap has no face joints: nose, eyes and ears sit at these (left, up, forward) offsets in
# metres from the head joint (the top of the neck) of a body whose torso is NOMINAL_TORSO_M.
NOMINAL_TORSO_M = 0.5
FACE_OFFSETS: dict[str, tuple[float, float, float]] = {
    "nose": (0.0, 0.06, 0.11),
    "left_eye": (0.033, 0.09, 0.09),
    "right_eye": (-0.033, 0.09, 0.09),
    "left_ear": (0.075, 0.07, 0.0),
    "right_ear": (-0.075, 0.07, 0.0),
}
MOCAP_LIMBS: tuple[str, ...] = tuple(name for name in COCO17 if name not in FACE_OFFSETS)


def plain_joint_name(name: str) -> str:
    """A mocap joint name compared case-insensitively, without a "namespace:" prefix."""
    return name.rsplit(":", 1)[-1].lower()


def mocap_names(coco: str) -> tuple[str, ...]:
    """The plain mocap joint names that stand for a COCO limb joint, best first."""
    side, part = coco.split("_")
    return tuple(p.format(s=side[0], side=side) for p in _MOCAP_PATTERNS[part])


def mid_hip(joints: np.ndarray) -> np.ndarray:
    """The root: the midpoint of the two hips, shape `joints.shape[:-2] + (3,)`."""
    return 0.5 * (joints[..., LEFT_HIP, :] + joints[..., RIGHT_HIP, :])


def mid_shoulder(joints: np.ndarray) -> np.ndarray:
    """The midpoint of the two shoulders, shape `joints.shape[:-2] + (3,)`."""
    return 0.5 * (joints[..., LEFT_SHOULDER, :] + joints[..., RIGHT_SHOULDER, :])


def torso_length(joints: np.ndarray) -> np.ndarray:
    """Distance from mid-shoulder to mid-hip per pose: the body-size unit of the features."""
    return np.sqrt(np.sum((mid_shoulder(joints) - mid_hip(joints)) ** 2, axis=-1))
