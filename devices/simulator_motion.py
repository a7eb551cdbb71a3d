"""The performer a virtual iPhone sees: a real motion-capture take (`BvhMotion`, from a BVH
file) or the built-in `ProceduralDancer` (a salsa basic step).

Either gives the 17 COCO keypoints in metres at any motion time, in the set's coordinates: x
and y on the floor, z up, the subject's front towards +y (azimuth 0), azimuths counted
clockwise seen from above, as the coverage map and the simulated video count them. The
cameras that see them, and the stream that sends what they see, are in
devices/simulator_pose.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from devices.bvh import Bvh, load_bvh

FloatArray = npt.NDArray[np.float64]

COCO17_NAMES = (
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

# BVH (Y up, the rest pose facing +Z, its left +X) to the set (z up, front +y, left -x).
_BVH_TO_SET = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
# Where the face sits from the midpoint of the eyes, in metres along the head's
# (left, up, forward) axes.
_NOSE_FROM_EYES = (0.0, -0.035, 0.025)
_EAR_FROM_EYES = (0.07, -0.015, -0.08)
_EYES_FROM_HEAD = (0.0, 0.065, 0.065)  # when the skeleton has no eye joints
_HALF_EYE_SPAN_M = 0.031
# Joint names per COCO joint, tried in turn: the CMU Daz-style release (`lShldr`) and the
# CMU/ASF-style one (`LeftArm`); matched without regard to case.
_BVH_NAMES: dict[str, tuple[str, ...]] = {
    "hips": ("hip", "hips"),
    "head": ("head",),
    "left_eye": ("leftEye", "LeftEye"),
    "right_eye": ("rightEye", "RightEye"),
    "left_shoulder": ("lShldr", "LeftArm", "LeftShoulder"),
    "right_shoulder": ("rShldr", "RightArm", "RightShoulder"),
    "left_elbow": ("lForeArm", "LeftForeArm"),
    "right_elbow": ("rForeArm", "RightForeArm"),
    "left_wrist": ("lHand", "LeftHand"),
    "right_wrist": ("rHand", "RightHand"),
    "left_hip": ("lThigh", "LeftUpLeg"),
    "right_hip": ("rThigh", "RightUpLeg"),
    "left_knee": ("lShin", "LeftLeg"),
    "right_knee": ("rShin", "RightLeg"),
    "left_ankle": ("lFoot", "LeftFoot"),
    "right_ankle": ("rFoot", "RightFoot"),
}
_OPTIONAL = frozenset({"left_eye", "right_eye"})


class MotionSource(Protocol):
    """A performer: COCO-17 keypoints in set metres at any motion time (seconds)."""

    name: str

    def joints_at_many(self, times_s: FloatArray) -> FloatArray:
        """`(len(times_s), 17, 3)` keypoints, in COCO17_NAMES order."""
        ...

    def joints_at(self, t_s: float) -> FloatArray:
        """`(17, 3)` keypoints at one motion time."""
        ...


def unit_vectors(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-9))


def _face(
    eyes_mid: FloatArray, left: FloatArray, up: FloatArray, forward: FloatArray
) -> FloatArray:
    """Nose and ears `(n, 3, 3)` from the eyes' midpoint and the head's axes (each (n, 3))."""

    def at(offset: tuple[float, float, float], side: float = 1.0) -> FloatArray:
        a, b, c = offset
        return np.asarray(eyes_mid + side * a * left + b * up + c * forward)

    return np.stack([at(_NOSE_FROM_EYES), at(_EAR_FROM_EYES), at(_EAR_FROM_EYES, -1.0)], axis=1)


def _coco(
    face: FloatArray, eyes: tuple[FloatArray, FloatArray], body: Sequence[FloatArray]
) -> FloatArray:
    """Assemble `(n, 17, 3)`: face is nose, left ear, right ear; body is shoulders to ankles
    (12 arrays, left before right)."""
    nose, left_ear, right_ear = face[:, 0], face[:, 1], face[:, 2]
    return np.stack([nose, eyes[0], eyes[1], left_ear, right_ear, *body], axis=1)


# --- A real take ------------------------------------------------------------------------------


class BvhMotion:
    """A motion-capture take as COCO-17 keypoints on the set.

    The take is turned so that its rest pose faces the set's front (BVH +Z → +y, Y up → z up)
    and shifted so that its mean root position (over the whole take) is at the set's centre on
    the floor; the root's own path is kept, so the dancer moves about the set as recorded.
    Eyes come from eye joints when the skeleton has them; nose and ears are placed from the
    eyes and the head joint's orientation. At the end the take loops (a 120 fps take at 30 fps
    uses every fourth frame; between frames positions are interpolated linearly).
    `scale` converts the file's units to metres (the CMU "scaled" release is in metres).
    """

    def __init__(self, bvh: Bvh, *, scale: float = 1.0, centre: bool = True) -> None:
        self.bvh = bvh
        self.name = Path(bvh.source).name or "bvh"
        self.fps = bvh.fps
        self.frame_count = bvh.frame_count
        self.keypoints = self._keypoints(bvh, scale)  # (frames, 17, 3), set coordinates
        hips = bvh.positions(scale=scale)[:, 0] @ _BVH_TO_SET.T
        self.root = hips
        if centre:
            shift = np.array([*hips[:, :2].mean(axis=0), 0.0])
            self.keypoints -= shift
            self.root = hips - shift

    @classmethod
    def load(cls, path: str | Path, *, scale: float = 1.0, centre: bool = True) -> BvhMotion:
        return cls(load_bvh(path), scale=scale, centre=centre)

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    @staticmethod
    def _keypoints(bvh: Bvh, scale: float) -> FloatArray:
        lower = {joint.name.lower(): i for i, joint in enumerate(bvh.joints) if not joint.is_end}
        found: dict[str, int] = {}
        for coco, candidates in _BVH_NAMES.items():
            index = next((lower[n.lower()] for n in candidates if n.lower() in lower), None)
            if index is not None:
                found[coco] = index
        missing = [name for name in _BVH_NAMES if name not in found and name not in _OPTIONAL]
        if missing:
            wanted = "; ".join(f"{name}: {' or '.join(_BVH_NAMES[name])}" for name in missing)
            raise ValueError(f"{bvh.source or 'the BVH'} lacks joints the pose needs ({wanted})")
        positions, rotations = bvh.world(scale=scale)
        points = positions @ _BVH_TO_SET.T  # (frames, joints, 3)

        # The head's axes in its rest pose, read off the skeleton itself: left from the right
        # hip to the left one, up from the hips to the head.
        zero = Bvh(
            joints=bvh.joints, frame_time=bvh.frame_time, motion=np.zeros((1, bvh.motion.shape[1]))
        )
        rest = zero.positions()[0]
        rest_left = unit_vectors(rest[found["left_hip"]] - rest[found["right_hip"]])
        rest_up = rest[found["head"]] - rest[found["hips"]]
        rest_up = unit_vectors(rest_up - rest_left * float(rest_up @ rest_left))
        rest_forward = np.cross(rest_left, rest_up)
        head_rotation = rotations[:, found["head"]]

        def head_axis(rest_axis: FloatArray) -> FloatArray:
            return np.asarray(np.einsum("fij,j->fi", head_rotation, rest_axis) @ _BVH_TO_SET.T)

        left, up, forward = head_axis(rest_left), head_axis(rest_up), head_axis(rest_forward)
        if "left_eye" in found and "right_eye" in found:
            eyes = (points[:, found["left_eye"]], points[:, found["right_eye"]])
        else:
            a, b, c = _EYES_FROM_HEAD
            mid = points[:, found["head"]] + a * left + b * up + c * forward
            eyes = (mid + _HALF_EYE_SPAN_M * left, mid - _HALF_EYE_SPAN_M * left)
        face = _face((eyes[0] + eyes[1]) / 2, left, up, forward)
        body_names = list(COCO17_NAMES[5:])
        return _coco(face, eyes, [points[:, found[name]] for name in body_names])

    def joints_at_many(self, times_s: FloatArray) -> FloatArray:
        position = np.asarray(times_s, dtype=float) * self.fps
        nearest = np.rint(position)
        # k / fps * fps is not always exactly k: a frame time that is a whole frame is one.
        position = np.where(np.abs(position - nearest) < 1e-6, nearest, position)
        position = np.mod(position, self.frame_count)
        first = np.floor(position).astype(int)
        weight = (position - first)[:, None, None]
        second = (first + 1) % self.frame_count
        return np.asarray(self.keypoints[first] * (1 - weight) + self.keypoints[second] * weight)

    def joints_at(self, t_s: float) -> FloatArray:
        return self.joints_at_many(np.array([t_s]))[0]


# --- The built-in dancer ----------------------------------------------------------------------


def _smoothstep(x: FloatArray) -> FloatArray:
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x * x * (3 - 2 * x))


def _step(beat: FloatArray, start: float) -> tuple[FloatArray, FloatArray]:
    """A foot's break step over beats start..start+3: out over the first beat, held, back
    over the third. Returns (how far out 0..1, how high the foot is lifted 0..1)."""
    out = _smoothstep(beat - start) - _smoothstep(beat - start - 2)
    moving = ((beat >= start) & (beat < start + 1)) | ((beat >= start + 2) & (beat < start + 3))
    lift = np.where(moving, np.sin(np.pi * np.mod(beat - start, 1.0)), 0.0)
    return out, lift


# Where the weight is on each count of the 8-count bar (1 left, -1 right); the pauses (4, 8)
# keep it where it was.
_WEIGHT = np.array([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0])


class ProceduralDancer:
    """A salsa basic step, deterministic in t: forward break with the left foot on 1-2-3,
    back break with the right on 5-6-7, pauses on 4 and 8, Cuban hip motion, arms swinging
    against the hips, a slow turn (every side faces every camera in turn) and a drift round a
    small circle centred on the set's centre (so the mean root position is the centre).

    A 1.74 m figure whose bones keep their lengths: legs by two-bone IK from the feet.
    """

    name = "procedural salsa"
    BPM = 180.0
    TURN_PERIOD_S = 24.0
    DRIFT_PERIOD_S = 16.0
    DRIFT_RADIUS_M = 0.3
    THIGH_M, SHIN_M, ANKLE_M = 0.44, 0.43, 0.08
    PELVIS_M = 0.90
    TORSO_M, NECK_M, HEAD_M = 0.50, 0.06, 0.16
    HIP_HALF_M, SHOULDER_HALF_M, STANCE_HALF_M = 0.09, 0.19, 0.11
    UPPER_ARM_M, FOREARM_M = 0.30, 0.26
    STEP_M = 0.24

    def joints_at(self, t_s: float) -> FloatArray:
        return self.joints_at_many(np.array([t_s]))[0]

    def joints_at_many(self, times_s: FloatArray) -> FloatArray:
        t = np.asarray(times_s, dtype=float)
        beat = np.mod(t * self.BPM / 60.0, 8.0)
        up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (t.size, 3))

        # The body's heading (the azimuth it faces) and where it stands.
        heading = 2 * np.pi * t / self.TURN_PERIOD_S + 0.35 * np.sin(2 * np.pi * t / 7.0)
        drift = 2 * np.pi * t / self.DRIFT_PERIOD_S
        base = np.stack(
            [self.DRIFT_RADIUS_M * np.sin(drift), self.DRIFT_RADIUS_M * np.cos(drift), 0 * t],
            axis=1,
        )

        def frame(angle: FloatArray) -> tuple[FloatArray, FloatArray]:
            forward = np.stack([np.sin(angle), np.cos(angle), 0 * angle], axis=1)
            right = np.stack([np.cos(angle), -np.sin(angle), 0 * angle], axis=1)
            return forward, right

        forward, right = frame(heading)
        weight = np.interp(beat, np.arange(9.0), _WEIGHT)
        weight = np.sin(np.pi / 2 * weight)  # eased between counts

        # Feet: the left breaks forward on 1-2-3, the right back on 5-6-7.
        left_out, left_lift = _step(beat, 0.0)
        right_out, right_lift = _step(beat, 4.0)
        left_f, right_f = self.STEP_M * left_out, -self.STEP_M * right_out
        col = np.newaxis
        left_ankle = (
            base
            - self.STANCE_HALF_M * right
            + left_f[:, col] * forward
            + (self.ANKLE_M + 0.05 * left_lift)[:, col] * up
        )
        right_ankle = (
            base
            + self.STANCE_HALF_M * right
            + right_f[:, col] * forward
            + (self.ANKLE_M + 0.05 * right_lift)[:, col] * up
        )

        # Pelvis: over the weighted foot, bobbing on each count, the hips turning to it.
        pelvis_f = 0.8 * (left_f * (1 + weight) + right_f * (1 - weight)) / 2
        bob = 0.025 * (1 - np.cos(2 * np.pi * beat)) / 2
        pelvis = (
            base
            + (-0.04 * weight)[:, col] * right
            + pelvis_f[:, col] * forward
            + (self.PELVIS_M - bob)[:, col] * up
        )
        hip_yaw = np.radians(10.0) * weight
        _, hip_right = frame(heading + hip_yaw)
        left_hip = pelvis - self.HIP_HALF_M * hip_right
        right_hip = pelvis + self.HIP_HALF_M * hip_right
        left_knee, left_ankle = self._leg(left_hip, left_ankle, forward)
        right_knee, right_ankle = self._leg(right_hip, right_ankle, forward)

        # Torso and shoulders, turned a little against the hips.
        shoulder_forward, shoulder_right = frame(heading - 0.4 * hip_yaw)
        chest = pelvis + self.TORSO_M * up + 0.02 * shoulder_forward
        left_shoulder = chest - self.SHOULDER_HALF_M * shoulder_right
        right_shoulder = chest + self.SHOULDER_HALF_M * shoulder_right

        # Arms: elbows bent, hands swinging in front against the hips; on every other bar the
        # right hand rises in a styling flourish.
        swing = np.sin(np.pi * beat / 2)
        flourish = np.where(np.mod(np.floor(t * self.BPM / 60.0 / 8.0), 2) == 1, 1.0, 0.0)
        flourish = flourish * np.sin(np.pi * np.clip((beat - 4) / 4, 0, 1))
        arms = []
        for side, phase in ((-1.0, 1.0), (1.0, -1.0)):
            shoulder = left_shoulder if side < 0 else right_shoulder
            raise_ = flourish if side > 0 else 0 * flourish
            lift = np.radians(20 + 12 * phase * swing + 110 * raise_)
            upper = unit_vectors(
                -np.cos(lift)[:, col] * up
                + np.sin(lift)[:, col] * shoulder_forward
                + 0.25 * side * shoulder_right
            )
            elbow = shoulder + self.UPPER_ARM_M * upper
            bend = np.radians(70 + 20 * phase * swing)
            lower = unit_vectors(
                np.cos(bend)[:, col] * upper
                + np.sin(bend)[:, col] * (shoulder_forward + 0.6 * raise_[:, col] * up)
                - 0.2 * side * shoulder_right
            )
            arms.append((elbow, elbow + self.FOREARM_M * lower))
        (left_elbow, left_wrist), (right_elbow, right_wrist) = arms

        # Head: above the shoulders, looking where the shoulders face.
        neck = chest + self.NECK_M * up
        eyes_mid = neck + self.HEAD_M * up + 0.08 * shoulder_forward
        left_axis = -shoulder_right
        eyes = (eyes_mid + _HALF_EYE_SPAN_M * left_axis, eyes_mid - _HALF_EYE_SPAN_M * left_axis)
        face = _face(eyes_mid, left_axis, up, shoulder_forward)
        body = [
            left_shoulder,
            right_shoulder,
            left_elbow,
            right_elbow,
            left_wrist,
            right_wrist,
            left_hip,
            right_hip,
            left_knee,
            right_knee,
            left_ankle,
            right_ankle,
        ]
        return _coco(face, eyes, body)

    def _leg(
        self, hip: FloatArray, ankle: FloatArray, forward: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """(knee, ankle) by two-bone IK, the knee bending forward; an ankle out of reach is
        pulled in along the leg so the bones keep their lengths."""
        thigh, shin = self.THIGH_M, self.SHIN_M
        reach = ankle - hip
        distance = np.linalg.norm(reach, axis=1)
        along = reach / distance[:, None]
        distance = np.minimum(distance, thigh + shin - 1e-4)
        ankle = hip + along * distance[:, None]
        a = (thigh**2 - shin**2 + distance**2) / (2 * distance)
        h = np.sqrt(np.maximum(thigh**2 - a**2, 0.0))
        bend = unit_vectors(forward - along * np.sum(forward * along, axis=1, keepdims=True))
        knee = hip + along * a[:, None] + bend * h[:, None]
        return knee, ankle


def load_motions(paths: Sequence[str | Path]) -> list[MotionSource]:
    """The performers for `--motion` paths (BVH files), or the procedural dancer when none are
    given. Raises OSError or ValueError (BvhError) naming the file."""
    if not paths:
        return [ProceduralDancer()]
    return [BvhMotion.load(path) for path in paths]
