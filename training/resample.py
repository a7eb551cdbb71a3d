"""Puts a motion source onto the audio's 30 fps grid, streaming, by a fixed rule.

Source time `t` is audio time `t + shift_s`; grid frame `k` is audio time `k / FPS`. The rule
for frame `k`, using only the source's present frames:

1. a present frame within `TIME_TOLERANCE_S` of `k / FPS` is taken as it is (so 120 fps → 30 fps
   picks every 4th frame exactly);
2. else, with `a` the last present frame before and `b` the first present frame after, the
   pose is `a + w · (b − a)`, `w = (k / FPS − t_a) / (t_b − t_a)`, for joints and confidence
   alike, but only when `t_b − t_a ≤ max_gap_s + TIME_TOLERANCE_S`;
3. otherwise the frame is missing (joints and confidence 0). Nothing is extrapolated before
   the first or after the last present frame.

Interpolation runs in float64 and is stored as float32, so results are bit-identical between
runs. Chunks are pulled only as far as the current block needs, and the buffer keeps just the
frames a block spans plus one on each side, so memory does not grow with the input's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from training.timeline import FPS, JOINTS, FrameBlock, InputError, MotionChunk

TIME_TOLERANCE_S = 1e-6


def frame_range(first_t: float, last_t: float, shift_s: float) -> tuple[int, int]:
    """`(first_frame, n_frames)` of the grid frames whose audio time lies in
    `[first_t + shift_s, last_t + shift_s]` (± `TIME_TOLERANCE_S`), never before frame 0."""
    first = max(0, math.ceil((first_t + shift_s - TIME_TOLERANCE_S) * FPS))
    last = math.floor((last_t + shift_s + TIME_TOLERANCE_S) * FPS)
    return first, max(0, last - first + 1)


def resample(
    chunks: Iterable[MotionChunk],
    *,
    shift_s: float,
    first_frame: int,
    n_frames: int,
    max_gap_s: float,
    block_frames: int = 1800,
) -> Iterator[FrameBlock]:
    """Frames `first_frame … first_frame + n_frames − 1` of the grid, in blocks of
    `block_frames` (the last one shorter), by the rule in the module docstring."""
    if block_frames <= 0 or n_frames < 0 or not max_gap_s >= 0:
        raise ValueError("block_frames must be positive, n_frames and max_gap_s not negative")
    buffer = _Buffer(iter(chunks), shift_s)
    try:
        end = first_frame + n_frames
        for start in range(first_frame, end, block_frames):
            count = min(block_frames, end - start)
            times = np.arange(start, start + count, dtype=np.float64) / FPS
            buffer.fill(keep_from=times[0] - TIME_TOLERANCE_S, until=times[-1] + TIME_TOLERANCE_S)
            yield _block(start, times, buffer, max_gap_s)
            buffer.trim((start + count) / FPS - TIME_TOLERANCE_S)
    finally:
        buffer.close()


class _Buffer:
    """The present source frames (on the audio clock) that the current block can use."""

    def __init__(self, chunks: Iterator[MotionChunk], shift_s: float) -> None:
        self.chunks = chunks
        self.shift_s = shift_s
        self.times = np.empty(0, dtype=np.float64)
        self.joints = np.empty((0, JOINTS, 3), dtype=np.float32)
        self.conf = np.empty((0, JOINTS), dtype=np.float32)
        self.latest = -math.inf  # last source time seen, present or not
        self.exhausted = False

    def fill(self, *, keep_from: float, until: float) -> None:
        """Pull chunks until a present frame lies after `until` or the source ends."""
        while not self.exhausted and (self.times.size == 0 or self.times[-1] <= until):
            chunk = next(self.chunks, None)
            if chunk is None:
                self.exhausted = True
                break
            self.append(chunk)
            self.trim(keep_from)

    def append(self, chunk: MotionChunk) -> None:
        t = np.asarray(chunk.t, dtype=np.float64)
        if t.size == 0:
            return
        steps = np.diff(t, prepend=self.latest)
        if not (np.isfinite(t).all() and (steps > 0).all()):
            bad = int(np.argmax(~(np.isfinite(t) & (steps > 0))))
            after = self.latest if bad == 0 else t[bad - 1]
            raise InputError(f"motion times must strictly increase: {t[bad]} s after {after} s")
        self.latest = float(t[-1])
        keep = np.asarray(chunk.present, dtype=bool)
        self.times = np.concatenate([self.times, t[keep] + self.shift_s])
        self.joints = np.concatenate([self.joints, np.asarray(chunk.joints, np.float32)[keep]])
        self.conf = np.concatenate([self.conf, np.asarray(chunk.conf, np.float32)[keep]])

    def trim(self, keep_from: float) -> None:
        """Drop frames before `keep_from`, except the last of them (a frame's left neighbour)."""
        first = int(np.searchsorted(self.times, keep_from, side="left")) - 1
        if first > 0:
            self.times = self.times[first:]
            self.joints = self.joints[first:]
            self.conf = self.conf[first:]

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def _block(start: int, times: np.ndarray, buffer: _Buffer, max_gap_s: float) -> FrameBlock:
    count = times.shape[0]
    joints = np.zeros((count, JOINTS, 3), dtype=np.float32)
    conf = np.zeros((count, JOINTS), dtype=np.float32)
    missing = np.ones(count, dtype=bool)
    source = buffer.times
    if source.size:
        after = np.searchsorted(source, times - TIME_TOLERANCE_S, side="left")
        inside = after < source.size
        at = np.zeros(count, dtype=bool)
        at[inside] = source[after[inside]] <= times[inside] + TIME_TOLERANCE_S
        joints[at], conf[at], missing[at] = buffer.joints[after[at]], buffer.conf[after[at]], False
        between = ~at & inside & (after > 0)
        before = after - 1
        between[between] = (
            source[after[between]] - source[before[between]] <= max_gap_s + TIME_TOLERANCE_S
        )
        _interpolate(buffer, times, before, after, between, joints, conf)
        missing[between] = False
    return FrameBlock(start=start, joints=joints, conf=conf, missing=missing)


def _interpolate(
    buffer: _Buffer,
    times: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    mask: np.ndarray,
    joints: np.ndarray,
    conf: np.ndarray,
) -> None:
    """Write `a + w · (b − a)` (float64, stored float32) into the `mask`ed frames."""
    a, b = before[mask], after[mask]
    t_a, t_b = buffer.times[a], buffer.times[b]
    w = (times[mask] - t_a) / (t_b - t_a)
    ja, jb = buffer.joints[a].astype(np.float64), buffer.joints[b].astype(np.float64)
    ca, cb = buffer.conf[a].astype(np.float64), buffer.conf[b].astype(np.float64)
    joints[mask] = (ja + w[:, None, None] * (jb - ja)).astype(np.float32)
    conf[mask] = (ca + w[:, None] * (cb - ca)).astype(np.float32)
