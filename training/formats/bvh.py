"""A streaming BVH reader that turns a mocap take into COCO-17 positions in 3D.

The HIERARCHY (joints, OFFSETs, CHANNELS in any order, End Sites) is parsed when the source is
opened; MOTION lines are read `CHUNK_FRAMES` at a time on every `chunks()` call and forward
kinematics runs vectorised over each chunk, so memory does not grow with the take's length.
Motion lines are checked while they stream: a bad line raises `InputError` from `chunks()`.

Angles are degrees; a joint's rotation is the product of its rotation channels in file order;
position channels replace the OFFSET (the root's translation). Positions keep the file's units
(metres for MotionMix's takes) and axes (y up).

COCO mapping (names in `training.skeleton.mocap_names`): limbs are named joints; nose, eyes and
ears are fixed points on the head joint, `FACE_OFFSETS` (left, up, forward) scaled by the
take's rest torso length / `NOMINAL_TORSO_M` and turned with the head. The axes come from the
rest pose: left = right→left shoulder, up = mid-hip→mid-shoulder. Confidence is 1 everywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from training import skeleton
from training.timeline import JOINTS, InputError, MotionChunk, MotionSource

CHUNK_FRAMES = 2048
# Writers print the frame time with 6 decimals (0.008333 s for 120 fps): a rate this close to
# a whole number is taken to be that number, so frame i is at exactly i / 120 s.
WHOLE_FPS_TOLERANCE = 5e-4
_POSITION = {"Xposition": 0, "Yposition": 1, "Zposition": 2}
_ROTATION = {"Xrotation": "x", "Yrotation": "y", "Zrotation": "z"}


@dataclass(frozen=True)
class _Joint:
    name: str
    parent: int  # index into the joint list; -1 for the root
    offset: tuple[float, float, float]
    channels: tuple[str, ...]
    start: int  # column of its first channel in a MOTION line


@dataclass(frozen=True)
class _Header:
    joints: tuple[_Joint, ...]  # parents before children; End Sites left out
    channel_count: int
    frames: int
    frame_time: float
    first_motion_line: int  # 1-based line number of the first frame


def read_bvh(path: Path, fps: float | None = None, name: str | None = None) -> MotionSource:
    """Open a BVH take as a 3D COCO-17 source; `fps` overrides the file's Frame Time."""
    header = _read_header(path)
    rate = _rate(path, header.frame_time, fps)
    rig = _Rig.build(path, header)

    def chunks() -> Iterator[MotionChunk]:
        return _stream(path, header, rig, rate)

    label = name or path.name.removesuffix(".bvh")
    return MotionSource(name=label, format="bvh", dims=3, fps=rate, chunks=chunks)


def _rate(path: Path, frame_time: float, fps: float | None) -> float:
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise InputError(f"{path}: the frame rate must be a positive number, got {fps!r}")
        return float(fps)
    rate = 1.0 / frame_time
    whole = round(rate)
    if whole > 0 and abs(rate - whole) <= WHOLE_FPS_TOLERANCE * whole:
        return float(whole)
    return rate


# --- HIERARCHY and MOTION header ----------------------------------------------------------------


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the BVH file ({exc.strerror})") from None


@contextlib.contextmanager
def _utf8(path: Path) -> Iterator[None]:
    """Turn a decoding failure while reading into an InputError naming the file."""
    try:
        yield
    except UnicodeDecodeError:
        raise InputError(f"{path}: the BVH file is not UTF-8 text") from None


def _read_header(path: Path) -> _Header:
    tokens: list[tuple[str, int]] = []
    number = 0
    with _open(path) as handle, _utf8(path):
        for number, line in enumerate(handle, start=1):
            if line.strip() == "MOTION":
                break
            tokens.extend((token, number) for token in line.split())
        else:
            raise InputError(f"{path}, line {number}: the file ends before MOTION")
        joints = _Hierarchy(path, tokens).parse()
        frames_line, frames = _field(path, handle, number + 1, "Frames")
        time_line, frame_time = _field(path, handle, number + 2, "Frame Time")
    if frames != int(frames) or frames < 0:
        raise InputError(f"{path}, line {frames_line}: Frames must be a whole number")
    if frame_time <= 0:
        raise InputError(f"{path}, line {time_line}: Frame Time must be positive")
    count = sum(len(joint.channels) for joint in joints)
    return _Header(tuple(joints), count, int(frames), frame_time, time_line + 1)


def _field(path: Path, handle: TextIO, number: int, label: str) -> tuple[int, float]:
    line = handle.readline()
    key, _, value = line.partition(":")
    if " ".join(key.split()) != label:
        raise InputError(f"{path}, line {number}: expected '{label}:', found {line.strip()!r}")
    try:
        parsed = float(value)
    except ValueError:
        raise InputError(f"{path}, line {number}: {label} must be a number") from None
    if not math.isfinite(parsed):
        raise InputError(f"{path}, line {number}: {label} must be finite")
    return number, parsed


class _Hierarchy:
    """Parses the HIERARCHY tokens (each with its line number) into joints, depth first."""

    def __init__(self, path: Path, tokens: list[tuple[str, int]]) -> None:
        self.path = path
        self.tokens = tokens
        self.pos = 0
        self.joints: list[_Joint] = []
        self.columns = 0

    def parse(self) -> list[_Joint]:
        self.expect("HIERARCHY")
        self.expect("ROOT")
        self.joint(-1)
        if self.pos < len(self.tokens):
            raise self.error(f"expected MOTION after the root joint, found {self.peek()!r}")
        return self.joints

    def joint(self, parent: int) -> None:
        name = self.take("a joint name")
        self.expect("{")
        offset = self.offset()
        channels: tuple[str, ...] = ()
        if self.peek() == "CHANNELS":
            channels = self.channels()
        index = len(self.joints)
        self.joints.append(_Joint(name, parent, offset, channels, self.columns))
        self.columns += len(channels)
        while (word := self.take("'}'")) != "}":
            if word == "JOINT":
                self.joint(index)
            elif word == "End":
                self.end_site()
            else:
                raise self.error(f"unknown keyword {word!r} in joint {name!r}")

    def end_site(self) -> None:
        self.expect("Site")
        self.expect("{")
        self.offset()
        self.expect("}")

    def offset(self) -> tuple[float, float, float]:
        self.expect("OFFSET")
        return (self.number(), self.number(), self.number())

    def channels(self) -> tuple[str, ...]:
        self.expect("CHANNELS")
        count = self.number()
        if count != int(count) or not 0 <= count <= 6:
            raise self.error(f"CHANNELS count must be 0 to 6, found {count:g}")
        names = tuple(self.take("a channel name") for _ in range(int(count)))
        for channel in names:
            if channel not in _POSITION and channel not in _ROTATION:
                raise self.error(f"unknown channel {channel!r}")
        return names

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, what: str) -> str:
        if self.pos >= len(self.tokens):
            raise self.error(f"the hierarchy ends where {what} should be")
        self.pos += 1
        return self.tokens[self.pos - 1][0]

    def expect(self, wanted: str) -> None:
        found = self.take(repr(wanted))
        if found != wanted:
            raise self.error(f"expected {wanted!r}, found {found!r}")

    def number(self) -> float:
        token = self.take("a number")
        try:
            value = float(token)
        except ValueError:
            raise self.error(f"expected a number, found {token!r}") from None
        if not math.isfinite(value):
            raise self.error(f"expected a finite number, found {token!r}")
        return value

    def error(self, message: str) -> InputError:
        at = self.tokens[max(min(self.pos, len(self.tokens)), 1) - 1][1] if self.tokens else 1
        return InputError(f"{self.path}, line {at}: {message}")


# --- COCO mapping and forward kinematics ---------------------------------------------------------


@dataclass(frozen=True)
class _Rig:
    """Which joints to solve, which of them are COCO joints, and the face offsets per take."""

    joints: tuple[_Joint, ...]
    needed: tuple[int, ...]  # joint indices to solve, parents first
    limbs: tuple[tuple[int, int], ...]  # (COCO index, joint index)
    head: int
    face: np.ndarray  # (5, 3): FACE_OFFSETS turned into the rest pose's axes, scaled

    @staticmethod
    def build(path: Path, header: _Header) -> _Rig:
        by_name = {
            skeleton.plain_joint_name(joint.name): i for i, joint in enumerate(header.joints)
        }
        limbs = tuple(
            (skeleton.COCO_INDEX[coco], _find(path, by_name, coco)) for coco in skeleton.MOCAP_LIMBS
        )
        head = by_name.get("head")
        if head is None:
            raise InputError(f"{path}: no 'head' joint to place the nose, eyes and ears")
        needed = _ancestors(header.joints, [j for _, j in limbs] + [head])
        rig = _Rig(header.joints, needed, limbs, head, np.zeros((0, 3)))
        rest = rig.solve(np.zeros((1, header.channel_count)))[0]
        return _Rig(header.joints, needed, limbs, head, _face(path, rest))

    def solve(self, values: np.ndarray) -> np.ndarray:
        """COCO-17 positions `(n, 17, 3)` float64 for MOTION rows `(n, channels)`."""
        count = values.shape[0]
        positions: dict[int, np.ndarray] = {}
        rotations: dict[int, np.ndarray] = {}
        for j in self.needed:
            joint = self.joints[j]
            local, turn = _local(joint, values)
            if joint.parent < 0:
                positions[j], rotations[j] = local, turn
            else:
                parent = rotations[joint.parent]
                positions[j] = positions[joint.parent] + (parent @ local[:, :, None])[:, :, 0]
                rotations[j] = parent @ turn
        out = np.zeros((count, JOINTS, 3))
        for coco, j in self.limbs:
            out[:, coco] = positions[j]
        face = [skeleton.COCO_INDEX[name] for name in skeleton.FACE_OFFSETS][: len(self.face)]
        turned = np.swapaxes(rotations[self.head] @ self.face.T, 1, 2)  # (n, 5, 3)
        out[:, face] = positions[self.head][:, None] + turned
        return out


def _find(path: Path, by_name: dict[str, int], coco: str) -> int:
    for candidate in skeleton.mocap_names(coco):
        if candidate in by_name:
            return by_name[candidate]
    looked = ", ".join(skeleton.mocap_names(coco))
    raise InputError(f"{path}: no joint for COCO {coco} (looked for {looked})")


def _ancestors(joints: tuple[_Joint, ...], wanted: list[int]) -> tuple[int, ...]:
    keep: set[int] = set()
    for j in wanted:
        while j >= 0 and j not in keep:
            keep.add(j)
            j = joints[j].parent
    return tuple(sorted(keep))


def _face(path: Path, rest: np.ndarray) -> np.ndarray:
    """`FACE_OFFSETS` in file coordinates: (left, up, forward) axes from the rest skeleton."""
    left = rest[skeleton.LEFT_SHOULDER] - rest[skeleton.RIGHT_SHOULDER]
    up = skeleton.mid_shoulder(rest) - skeleton.mid_hip(rest)
    scale = float(skeleton.torso_length(rest)) / skeleton.NOMINAL_TORSO_M
    if np.linalg.norm(left) == 0 or scale == 0:
        raise InputError(f"{path}: the rest pose has no width or no torso to orient the face")
    left = left / np.linalg.norm(left)
    up = up - np.dot(up, left) * left
    if np.linalg.norm(up) == 0:
        raise InputError(f"{path}: the rest pose's shoulders and hips are not one above another")
    up = up / np.linalg.norm(up)
    axes = np.stack([left, up, np.cross(left, up)])  # rows: left, up, forward
    return scale * (np.array(list(skeleton.FACE_OFFSETS.values())) @ axes)


def _local(joint: _Joint, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A joint's translation `(n, 3)` and rotation `(n, 3, 3)` relative to its parent."""
    count = values.shape[0]
    local = np.tile(np.asarray(joint.offset, dtype=np.float64), (count, 1))
    turn = np.tile(np.eye(3), (count, 1, 1))
    for c, channel in enumerate(joint.channels):
        column = values[:, joint.start + c]
        if channel in _POSITION:
            local[:, _POSITION[channel]] = column
        else:
            turn = turn @ _axis(_ROTATION[channel], column)
    return local, turn


def _axis(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotation matrices `(n, 3, 3)` about one axis by angles in degrees."""
    radians = np.radians(degrees)
    c, s = np.cos(radians), np.sin(radians)
    out = np.zeros((degrees.shape[0], 3, 3))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    out[:, 3 - i - j, 3 - i - j] = 1.0
    out[:, i, i] = c
    out[:, j, j] = c
    out[:, i, j] = -s
    out[:, j, i] = s
    return out


# --- MOTION streaming ---------------------------------------------------------------------------


def _stream(path: Path, header: _Header, rig: _Rig, fps: float) -> Iterator[MotionChunk]:
    done = 0
    number = header.first_motion_line - 1
    with _open(path) as handle, _utf8(path):
        lines = itertools.islice(handle, header.first_motion_line - 1, None)
        while True:
            rows, numbers = _next_rows(path, header, lines, number, done)
            if not rows:
                break
            number = numbers[-1]
            values = _parse(path, rows, numbers)
            index = np.arange(done, done + len(rows), dtype=np.float64)
            done += len(rows)
            count = len(rows)
            yield MotionChunk(
                t=index / fps,
                joints=rig.solve(values).astype(np.float32),
                conf=np.ones((count, JOINTS), dtype=np.float32),
                present=np.ones(count, dtype=bool),
            )
    if done < header.frames:
        raise InputError(
            f"{path}, line {number}: the motion is truncated: {done} of {header.frames} frames"
        )


def _next_rows(
    path: Path, header: _Header, lines: Iterator[str], number: int, done: int
) -> tuple[list[list[str]], list[int]]:
    rows: list[list[str]] = []
    numbers: list[int] = []
    for line in lines:
        number += 1
        parts = line.split()
        if not parts:
            continue
        if len(parts) != header.channel_count:
            raise InputError(
                f"{path}, line {number}: expected {header.channel_count} values, found {len(parts)}"
            )
        if done + len(rows) >= header.frames:
            raise InputError(
                f"{path}, line {number}: more motion lines than Frames: {header.frames}"
            )
        rows.append(parts)
        numbers.append(number)
        if len(rows) == CHUNK_FRAMES:
            break
    return rows, numbers


def _parse(path: Path, rows: list[list[str]], numbers: list[int]) -> np.ndarray:
    with contextlib.suppress(ValueError):
        values = np.array(rows, dtype=np.float64)
        if np.isfinite(values).all():
            return values
    for row, number in zip(rows, numbers, strict=True):
        for token in row:
            if not _finite(token):
                raise InputError(f"{path}, line {number}: {token!r} is not a finite number")
    raise AssertionError("unreachable: a bad value was found above")  # pragma: no cover


def _finite(token: str) -> bool:
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False
