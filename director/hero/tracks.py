"""The relay's frames: one hub per camera, one switchable output per live session.

A hub holds the latest decoded frame of a camera's publish and wakes whoever waits for the
next. It outlives the publish, so an output pointed at a camera keeps pointing at it when the
camera republishes (a new peer connection) and its frames simply resume.

An output is the session's hero as one continuous track. Its timestamps are its own, taken
from the monotonic clock, so a switch is invisible to the encoders downstream: they see one
track whose pictures change, never a jump in time or a new stream to negotiate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.mediastreams import (
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    MediaStreamError,
    MediaStreamTrack,
)
from av import VideoFrame

# A switch shows the new camera's latest frame at once if it is this fresh; otherwise the
# output waits for the camera's next frame rather than show a stale picture.
FRESH_FRAME_S = 0.25
# The output runs at up to aiortc's encoder rate, with timestamps on its grid.
OUTPUT_FPS = 30
FRAME_TICKS = VIDEO_CLOCK_RATE // OUTPUT_FPS
MIN_GAP_S = 0.5 / OUTPUT_FPS


class FrameHub:
    """The latest frame of one camera, numbered, and the events of those waiting for more."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.frame: VideoFrame | None = None
        self.seq = 0
        self.received_at = 0.0  # monotonic
        self._listeners: set[asyncio.Event] = set()

    def put(self, frame: VideoFrame) -> None:
        self.frame = frame
        self.seq += 1
        self.received_at = time.monotonic()
        for event in self._listeners:
            event.set()

    def listen(self, event: asyncio.Event) -> None:
        self._listeners.add(event)

    def unlisten(self, event: asyncio.Event) -> None:
        self._listeners.discard(event)

    @property
    def fresh(self) -> bool:
        return self.frame is not None and time.monotonic() - self.received_at <= FRESH_FRAME_S


@dataclass(frozen=True)
class SwitchMark:
    """Why the output changed source: the ledger event that chose the camera, and when."""

    session_id: str
    device_id: str
    cause: str  # event id of the hero.switched or session.started
    switched_at: float  # unix s, server clock, when the switch was recorded
    reached_at: float  # monotonic, when the relay took it


OnAir = Callable[[SwitchMark, float, float], None]  # mark, first frame unix s, after ms


class HeroOutput(MediaStreamTrack):
    """The hero of one session as a single video track.

    `recv()` returns the current source's next frame, restamped. `switch()` changes the source
    between two frames: the next `recv()` returns the new camera's latest frame if it is
    fresh, else its next one. The first frame after each marked switch is reported through
    `on_air`, with the time it went out.
    """

    kind = "video"

    def __init__(self, session_id: str, *, on_air: OnAir | None = None) -> None:
        super().__init__()
        self.session_id = session_id
        self.source: FrameHub | None = None
        self._wake = asyncio.Event()
        self._last_seq = 0
        self._mark: SwitchMark | None = None
        self._on_air = on_air
        self._start: float | None = None
        self._last_pts = -FRAME_TICKS
        self.frames_out = 0
        self.last_out_at = 0.0  # monotonic

    def switch(self, source: FrameHub | None, mark: SwitchMark | None = None) -> None:
        if source is self.source and mark is None:
            return
        if self.source is not None:
            self.source.unlisten(self._wake)
        self.source = source
        self._mark = mark if source is not None else None
        if source is not None:
            source.listen(self._wake)
            # Show what the camera has now if it is current; a stale frame waits for a new one.
            self._last_seq = source.seq - 1 if source.fresh else source.seq
        self._wake.set()

    def stop(self) -> None:
        if self.source is not None:
            self.source.unlisten(self._wake)
        super().stop()
        self._wake.set()

    async def recv(self) -> VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self.source
            if source is not None and source.frame is not None and source.seq != self._last_seq:
                # Not two frames within half a frame interval: the encoders downstream count
                # in 1/30 s and would see the same timestamp twice.
                early = MIN_GAP_S - (time.monotonic() - self.last_out_at)
                if early > 0:
                    await asyncio.sleep(early)
                    continue
                self._last_seq = source.seq
                frame = source.frame
                break
            self._wake.clear()
            await self._wake.wait()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        # On the 1/30 s grid, strictly increasing: exact in the encoders' own time base.
        grid = round((now - self._start) * OUTPUT_FPS) * FRAME_TICKS
        pts = max(grid, self._last_pts + FRAME_TICKS)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        self.frames_out += 1
        self.last_out_at = now
        mark, self._mark = self._mark, None
        if mark is not None and self._on_air is not None:
            self._on_air(mark, time.time(), (now - mark.reached_at) * 1000.0)
        return frame


class ViewerTrack(MediaStreamTrack):
    """One viewer's copy of the output. Encoders change the frames they are given (PyAV
    rebases the timestamp in place, aiortc's H.264 encoder sets the picture type), and each
    viewer has its own encoder in its own thread: sharing one frame object between them
    corrupts their pictures. A copy is about 0.2 ms at 640x480."""

    kind = "video"

    def __init__(self, proxy: MediaStreamTrack) -> None:
        super().__init__()
        self._proxy = proxy

    async def recv(self) -> VideoFrame:
        frame = await self._proxy.recv()
        assert isinstance(frame, VideoFrame)
        return frame_copy(frame)

    def stop(self) -> None:
        self._proxy.stop()
        super().stop()


def frame_copy(frame: VideoFrame) -> VideoFrame:
    """A new frame with the same pixels and timing."""
    copy = VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        if source.line_size == target.line_size and source.buffer_size == target.buffer_size:
            target.update(source)
            continue
        # Rows padded differently (decoders align them): copy row by row.
        row = min(source.line_size, target.line_size)
        pixels = memoryview(source)
        rows = bytearray(target.buffer_size)
        for y in range(target.height):
            rows[y * target.line_size : y * target.line_size + row] = pixels[
                y * source.line_size : y * source.line_size + row
            ]
        target.update(rows)
    copy.pts = frame.pts
    copy.time_base = frame.time_base
    return copy
