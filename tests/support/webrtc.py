"""Real aiortc peers for the hero feed's tests: a coded publisher, a viewer that reads every
frame's code, and the WHIP/WHEP exchanges. Every wait here is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import (
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    MediaStreamError,
    MediaStreamTrack,
)
from av import VideoFrame
from django.db import OperationalError

from devices.video_code import FrameCode, coded_frame, read, stamp_now
from director.hero.sdp import prefer_codec

Post = Callable[[str], Awaitable[tuple[int, dict[str, str], str]]]


class CodedTrack(MediaStreamTrack):
    """Plain frames carrying FrameCode(source, now) at `fps`, paced on the monotonic clock."""

    kind = "video"

    def __init__(self, source: int, *, fps: int = 30, size: tuple[int, int] = (320, 240)) -> None:
        super().__init__()
        self.source = source
        self.fps = fps
        self.size = size
        self.sent = 0
        self.paused = False
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.sent / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        while self.paused:
            await asyncio.sleep(0.05)
            if self.readyState != "live":
                raise MediaStreamError
        frame = coded_frame(
            *self.size, FrameCode(source=self.source, stamp_ms=stamp_now()), shade=self.source
        )
        frame.pts = int(self.sent * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.sent += 1
        return frame


@dataclass
class Sink:
    """Reads a received track continuously; keeps (arrival monotonic, code) per frame."""

    frames: list[tuple[float, FrameCode | None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                self.frames.append((time.monotonic(), read(frame)))

    def sources(self, since: float = 0.0) -> list[int | None]:
        return [code.source if code else None for at, code in self.frames if at >= since]

    async def wait_for(
        self,
        predicate: Callable[[Sink], bool],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline, not a cancellation scope
        what: str = "",
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def offer_publish(track: MediaStreamTrack, *, codec: str = "") -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(track, direction="sendonly")
    prefer_codec(transceiver, codec)
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def offer_watch(sink: Sink, *, codec: str = "") -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")
    prefer_codec(transceiver, codec)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        sink.start(track)

    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def answer(pc: RTCPeerConnection, sdp: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


async def wait_state(
    pc: RTCPeerConnection,
    states: set[str],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline, not a cancellation scope
) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"connection is {pc.connectionState}, not one of {states}")
        await asyncio.sleep(0.02)


async def unlocked(read: Callable[[], Awaitable[Any]], *, tries: int = 20) -> Any:
    """A read that the SQLite test database may refuse while the relay's thread writes (its
    shared-cache tables lock instead of waiting), tried again; anything else is raised."""
    for attempt in range(tries):
        try:
            return await read()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            await asyncio.sleep(0.05)
    return None


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline, not a cancellation scope
) -> Any:
    """Await `check()` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await unlocked(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {timeout} s")
        await asyncio.sleep(0.05)
