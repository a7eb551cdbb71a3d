"""Biovision Hierarchy (BVH) motion files: a parser and forward kinematics.

A BVH file has two parts. HIERARCHY is a tree of joints: one ROOT, JOINTs inside it, and an
`End Site` closing each chain; each joint has an OFFSET from its parent (in the rest pose) and
the CHANNELS the MOTION part animates, in the file's own order (`Xposition Yposition Zposition
Zrotation Yrotation Xrotation`, say). MOTION gives `Frames: N`, `Frame Time: S` and N lines of
numbers, one per channel, in the order the channels were declared walking the tree.

Forward kinematics follows the usual reading of the format:

- Rotations are in degrees and compose in the order listed, each about the joint's own
  (rotated) axes: `Zrotation Xrotation Yrotation` is `Rz · Rx · Ry` acting on column vectors.
- A joint's position channels give its translation from its parent in place of its OFFSET
  (the root's OFFSET is almost always zero, and the root is the joint that has them).
- World positions come out in the file's units with its axes (Y up, for every common
  exporter). `Bvh.positions(scale=...)` converts; the CMU "scaled" release is already in
  metres.

Malformed files raise `BvhError` (a ValueError) naming the line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")
CHANNEL_NAMES = frozenset(POSITION_CHANNELS + ROTATION_CHANNELS)
# Writers print the frame time with 6 decimals (0.008333 for 120 fps): a rate this close to a
# whole number of frames a second is taken to be that number.
WHOLE_FPS_TOLERANCE = 5e-4


class BvhError(ValueError):
    """A malformed BVH file; the message names the source and the line."""

    def __init__(self, message: str, *, line: int | None = None, source: str = "") -> None:
        where = source or "BVH"
        if line is not None:
            where = f"{where}, line {line}"
        super().__init__(f"{where}: {message}")
        self.line = line
        self.source = source


@dataclass(frozen=True)
class BvhJoint:
    """One joint of the hierarchy. An End Site is a joint without channels whose name is its
    parent's name + "_end"; `is_end` tells them apart."""

    name: str
    parent: int  # index into Bvh.joints; -1 for the root
    offset: tuple[float, float, float]
    channels: tuple[str, ...]
    channel_start: int  # where its channels start in a MOTION line
    is_end: bool = False


@dataclass(frozen=True)
class Bvh:
    joints: tuple[BvhJoint, ...]  # parents before children, End Sites included
    frame_time: float  # seconds, as written
    motion: FloatArray  # (frames, channels)
    source: str = ""

    @property
    def frame_count(self) -> int:
        return int(self.motion.shape[0])

    @property
    def fps(self) -> float:
        """Frames a second: the whole number the writer meant when the printed frame time is
        a rounded one (0.008333 s is 120 fps), else 1 / frame_time."""
        rate = 1.0 / self.frame_time
        whole = round(rate)
        if whole > 0 and abs(rate - whole) <= WHOLE_FPS_TOLERANCE * whole:
            return float(whole)
        return rate

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    @property
    def joint_names(self) -> list[str]:
        """The named joints (ROOT and JOINT), in file order; End Sites left out."""
        return [joint.name for joint in self.joints if not joint.is_end]

    def index(self, name: str) -> int:
        for i, joint in enumerate(self.joints):
            if joint.name == name:
                return i
        raise KeyError(f"{self.source or 'the BVH'} has no joint {name!r}")

    def world(
        self, frames: Sequence[int] | npt.NDArray[np.integer] | None = None, *, scale: float = 1.0
    ) -> tuple[FloatArray, FloatArray]:
        """Forward kinematics: `(positions (F, J, 3), rotations (F, J, 3, 3))` in world space
        for the given frame indices (all by default), End Sites included, positions times
        `scale`. A rotation maps the joint's local axes to world axes."""
        values = self.motion if frames is None else self.motion[np.asarray(frames, dtype=int)]
        count = values.shape[0]
        positions = np.empty((count, len(self.joints), 3))
        rotations = np.empty((count, len(self.joints), 3, 3))
        for j, joint in enumerate(self.joints):
            local = np.broadcast_to(np.asarray(joint.offset, dtype=float), (count, 3)).copy()
            rotation = np.broadcast_to(np.eye(3), (count, 3, 3)).copy()
            for c, channel in enumerate(joint.channels):
                column = values[:, joint.channel_start + c]
                if channel in POSITION_CHANNELS:
                    local[:, POSITION_CHANNELS.index(channel)] = column
                else:
                    rotation = rotation @ _axis_rotation(channel[0], column)
            if joint.parent < 0:
                positions[:, j] = local
                rotations[:, j] = rotation
            else:
                parent_rotation = rotations[:, joint.parent]
                positions[:, j] = positions[:, joint.parent] + np.einsum(
                    "fij,fj->fi", parent_rotation, local
                )
                rotations[:, j] = parent_rotation @ rotation
        return positions * scale, rotations

    def positions(
        self, frames: Sequence[int] | npt.NDArray[np.integer] | None = None, *, scale: float = 1.0
    ) -> FloatArray:
        """World positions `(F, J, 3)` of every joint, End Sites included (see `world`)."""
        return self.world(frames, scale=scale)[0]


def _axis_rotation(axis: str, degrees: FloatArray) -> FloatArray:
    """Rotation matrices `(F, 3, 3)` about X, Y or Z by the given angles."""
    radians = np.radians(degrees)
    c, s = np.cos(radians), np.sin(radians)
    one, zero = np.ones_like(c), np.zeros_like(c)
    if axis == "X":
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == "Y":
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


class _Tokens:
    """Whitespace-separated tokens with their line numbers, for the HIERARCHY part."""

    def __init__(self, lines: list[str], source: str) -> None:
        self.source = source
        self._items: Iterator[tuple[str, int]] = (
            (token, number) for number, line in enumerate(lines, start=1) for token in line.split()
        )
        self._peeked: tuple[str, int] | None = None
        self.line = 0

    def peek(self) -> str | None:
        if self._peeked is None:
            self._peeked = next(self._items, None)
        return None if self._peeked is None else self._peeked[0]

    def next(self, what: str) -> str:
        token = self.peek()
        if token is None or self._peeked is None:
            raise BvhError(
                f"the file ends where {what} should be", line=self.line, source=self.source
            )
        self.line = self._peeked[1]
        self._peeked = None
        return token

    def expect(self, wanted: str) -> None:
        token = self.next(repr(wanted))
        if token != wanted:
            raise self.error(f"expected {wanted!r}, found {token!r}")

    def number(self, what: str) -> float:
        token = self.next(what)
        try:
            value = float(token)
        except ValueError:
            raise self.error(f"{what} must be a number, found {token!r}") from None
        if not math.isfinite(value):
            raise self.error(f"{what} must be finite, found {token!r}")
        return value

    def error(self, message: str) -> BvhError:
        return BvhError(message, line=self.line, source=self.source)


class _Hierarchy:
    def __init__(self, tokens: _Tokens) -> None:
        self.tokens = tokens
        self.joints: list[BvhJoint] = []
        self.channel_count = 0

    def joint(self, parent: int, *, is_end: bool = False) -> None:
        tokens = self.tokens
        if is_end:
            tokens.expect("Site")
            name = self.joints[parent].name + "_end"
        else:
            name = tokens.next("a joint name")
            if name in ("{", "}"):
                raise tokens.error(f"a joint needs a name before {name!r}")
        tokens.expect("{")
        tokens.expect("OFFSET")
        offset = (
            tokens.number("OFFSET x"),
            tokens.number("OFFSET y"),
            tokens.number("OFFSET z"),
        )
        channels: tuple[str, ...] = ()
        if not is_end and tokens.peek() == "CHANNELS":
            tokens.next("CHANNELS")
            channels = self._channels(name)
        index = len(self.joints)
        self.joints.append(
            BvhJoint(
                name=name,
                parent=parent,
                offset=offset,
                channels=channels,
                channel_start=self.channel_count,
                is_end=is_end,
            )
        )
        self.channel_count += len(channels)
        while True:
            word = tokens.next(f"the end of joint {name!r} ('}}')")
            if word == "}":
                return
            if is_end:
                raise tokens.error(f"an End Site holds only an OFFSET, found {word!r}")
            if word == "JOINT":
                self.joint(index)
            elif word == "End":
                self.joint(index, is_end=True)
            else:
                raise tokens.error(f"expected JOINT, End Site or '}}' in {name!r}, found {word!r}")

    def _channels(self, name: str) -> tuple[str, ...]:
        tokens = self.tokens
        count_token = tokens.next("the channel count")
        if not count_token.isdigit():
            raise tokens.error(f"CHANNELS of {name!r} needs a count, found {count_token!r}")
        channels = tuple(tokens.next("a channel name") for _ in range(int(count_token)))
        for channel in channels:
            if channel not in CHANNEL_NAMES:
                known = ", ".join(sorted(CHANNEL_NAMES))
                raise tokens.error(f"{name!r} has an unknown channel {channel!r}; known: {known}")
        if len(set(channels)) != len(channels):
            raise tokens.error(f"{name!r} lists a channel twice: {' '.join(channels)}")
        return channels


def _header_value(line: str, label: str, number: int, source: str) -> str:
    head, _, value = line.partition(":")
    if " ".join(head.split()) != label or not value.strip():
        raise BvhError(
            f"expected '{label}: <value>', found {line.strip()!r}", line=number, source=source
        )
    return value.strip()


def parse_bvh(text: str, *, source: str = "") -> Bvh:
    """Parse a BVH document. Raises BvhError (a ValueError) naming the line of the problem."""
    lines = text.splitlines()
    motion_at = next((i for i, line in enumerate(lines) if line.strip() == "MOTION"), None)
    if motion_at is None:
        raise BvhError("no MOTION section: a BVH file has HIERARCHY, then MOTION", source=source)
    tokens = _Tokens(lines[:motion_at], source)
    first = tokens.next("HIERARCHY")
    if first != "HIERARCHY":
        raise tokens.error(f"a BVH file starts with HIERARCHY, found {first!r}")
    tokens.expect("ROOT")
    hierarchy = _Hierarchy(tokens)
    hierarchy.joint(-1)
    extra = tokens.peek()
    if extra is not None:
        tokens.next("")
        raise tokens.error(f"only one ROOT is supported; found {extra!r} after it")
    if hierarchy.channel_count == 0:
        raise BvhError("the hierarchy has no CHANNELS to animate", line=motion_at, source=source)

    number = motion_at + 1  # 1-based line numbers: MOTION is line motion_at + 1
    rest = [(i, line) for i, line in enumerate(lines[motion_at + 1 :], start=number + 1)]
    rest = [(i, line) for i, line in rest if line.strip()]
    if len(rest) < 2:
        raise BvhError("MOTION needs 'Frames:' and 'Frame Time:'", line=number, source=source)
    (frames_line, frames_text), (time_line, time_text) = rest[0], rest[1]
    frames_value = _header_value(frames_text, "Frames", frames_line, source)
    if not frames_value.isdigit():
        raise BvhError(
            f"Frames must be a whole number, found {frames_value!r}",
            line=frames_line,
            source=source,
        )
    frame_count = int(frames_value)
    time_value = _header_value(time_text, "Frame Time", time_line, source)
    try:
        frame_time = float(time_value)
    except ValueError:
        frame_time = math.nan
    if not math.isfinite(frame_time) or frame_time <= 0:
        raise BvhError(
            f"Frame Time must be a positive number of seconds, found {time_value!r}",
            line=time_line,
            source=source,
        )
    data = rest[2:]
    if len(data) != frame_count:
        raise BvhError(
            f"Frames says {frame_count} but {len(data)} frame lines follow",
            line=frames_line,
            source=source,
        )
    width = hierarchy.channel_count
    motion = np.empty((frame_count, width))
    for row, (line_number, line) in enumerate(data):
        fields = line.split()
        if len(fields) != width:
            raise BvhError(
                f"a frame needs {width} values (one per channel), found {len(fields)}",
                line=line_number,
                source=source,
            )
        try:
            motion[row] = [float(field) for field in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise BvhError(f"{bad!r} is not a number", line=line_number, source=source) from None
        if not np.isfinite(motion[row]).all():
            raise BvhError("a frame value is not finite", line=line_number, source=source)
    return Bvh(joints=tuple(hierarchy.joints), frame_time=frame_time, motion=motion, source=source)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_bvh(path: str | Path) -> Bvh:
    """Read and parse a BVH file. Raises OSError if it cannot be read, BvhError if malformed."""
    path = Path(path)
    return parse_bvh(path.read_text(encoding="utf-8", errors="strict"), source=str(path))
