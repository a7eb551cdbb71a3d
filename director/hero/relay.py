"""The hero relay: every WebRTC peer of the hero feed, in one registry.

- Cameras publish with WHIP; each publish is an aiortc peer whose video is decoded and read
  continuously into the camera's `FrameHub`, so no queue grows whoever watches.
- Each live session has one `HeroOutput`, pointed at its hero's hub. Viewers (WHEP) get the
  output through the one `MediaRelay`: one read of the output, one encode per viewer.
- A switch repoints the output between two frames; nothing is renegotiated.
- Once a second each publishing camera's latest frame goes to its card as a small JPEG.
- Publishers that fail, go silent or never connect are closed; everything is closed on
  shutdown. What the rest of the system should know goes through the services.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import io
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import OperationalError, connections

from director.hero import records
from director.hero.broadcast import HERO_GROUP, HeroPreview, HeroSwitch, hero_preview_send
from director.hero.sdp import BadOffer, answer_codec, prefer_codec
from director.hero.tracks import FrameHub, HeroOutput, SwitchMark, ViewerTrack

logger = logging.getLogger(__name__)
T = TypeVar("T")

WATCHDOG_S = 0.5
FPS_WINDOW_S = 2.0
LISTEN_RETRY_S = 1.0
DB_TRIES = 5


class RelayRefused(Exception):
    """The relay will not take this peer now; `status` is the HTTP answer (409, 503)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(eq=False)
class Publisher:
    publish_id: str
    device_id: str
    session_id: str | None
    pc: RTCPeerConnection
    hub: FrameHub
    codec: str = ""
    created_at: float = field(default_factory=time.monotonic)
    frames: int = 0
    width: int = 0
    height: int = 0
    last_frame_at: float | None = None
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=240))
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    preview_seq: int = 0
    measured: tuple[int, int, float] | None = None
    closing: bool = False

    def fps(self, now: float) -> float:
        """Frames received per second over the last FPS_WINDOW_S (a burst after a stall
        counts as what it is, not as a high rate)."""
        recent = [t for t in self.frame_times if now - t <= FPS_WINDOW_S]
        window = min(FPS_WINDOW_S, now - self.created_at)
        if len(recent) < 2 or window <= 0:
            return 0.0
        return len(recent) / window


@dataclass(eq=False)
class Viewer:
    viewer_id: str
    session_id: str
    user: str
    pc: RTCPeerConnection
    track: MediaStreamTrack
    codec: str = ""
    # The operator's user id: only they may end this view (DELETE on its Location).
    owner_id: int | None = None
    created_at: float = field(default_factory=time.monotonic)
    closing: bool = False


@dataclass(frozen=True)
class RelaySettings:
    configuration: RTCConfiguration
    no_media_s: float = 5.0
    connect_s: float = 15.0
    preview_s: float = 1.0
    preview_width: int = 320
    max_viewers: int = 8
    max_publishers: int = 32
    viewer_codec: str = ""


class HeroRelay:
    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.media = MediaRelay()
        self.hubs: dict[str, FrameHub] = {}
        self.publishers: dict[str, Publisher] = {}  # by device id
        self.viewers: dict[str, Viewer] = {}
        self.outputs: dict[str, HeroOutput] = {}
        self.on_air: deque[dict[str, Any]] = deque(maxlen=100)  # recent switches, newest last
        self._taps: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._output_lock = asyncio.Lock()
        # The relay's reads and writes run one at a time, in order, on a thread of its own:
        # a publish is recorded started before it is recorded stopped, and no request's
        # thread (busy answering that request) is ever waited on.
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hero-db")
        self.closed = False

    def _db(self, func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        call = database_sync_to_async(func, thread_sensitive=False, executor=self._db_thread)

        async def retrying(*args: Any, **kwargs: Any) -> T:
            # SQLite lets one writer in at a time; a write that finds the database busy
            # tries again shortly rather than losing the record.
            for attempt in range(DB_TRIES):
                try:
                    return await call(*args, **kwargs)
                except OperationalError as exc:
                    if "locked" not in str(exc) or attempt == DB_TRIES - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
            raise AssertionError("unreachable")

        return retrying

    # -- life cycle -------------------------------------------------------------------------

    def start(self, *, listen: bool = True) -> None:
        self._loops.append(_detached(self._watchdog(), name="hero-watchdog"))
        self._loops.append(_detached(self._previews(), name="hero-previews"))
        if listen:
            self._loops.append(_detached(self._listen(), name="hero-listen"))

    async def end_lost_publishes(self) -> list[str]:
        """Called once at start: end the publishes the database shows running that this relay
        does not hold (a relay before it was killed with them) and ask their cameras to
        publish again (director.services.hero_relay_started). Returns their devices' ids."""
        recorded = await self._db(records.publishes_open)()
        # Read after the database, on the one thread that records publishes in order: a publish
        # of this relay's is in `publishers` before it is written, so it is never taken as lost.
        held = {publisher.publish_id for publisher in self.publishers.values()}
        lost = [
            (device_id, publish_id) for device_id, publish_id in recorded if publish_id not in held
        ]
        if not lost:
            return []
        return await self._db(records.relay_started)(lost=lost)

    async def close(self) -> None:
        """Close every peer (publishes are recorded as stopped: shutdown) and every task."""
        if self.closed:
            return
        self.closed = True
        for task in self._loops:
            task.cancel()
        for viewer in list(self.viewers.values()):
            await self.unwatch(viewer)
        for publisher in list(self.publishers.values()):
            await self.unpublish(publisher, reason="shutdown")
        for session_id in list(self.outputs):
            self._close_output(session_id)
        tasks = [*self._loops, *self._tasks]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._db(connections.close_all)()
        self._db_thread.shutdown(wait=False)

    def _spawn(self, work: Awaitable[Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hero relay: %s failed", what)

        task = _detached(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hub(self, device_id: str) -> FrameHub:
        hub = self.hubs.get(device_id)
        if hub is None:
            hub = self.hubs[device_id] = FrameHub(device_id)
        return hub

    # -- publishers (WHIP) ------------------------------------------------------------------

    async def publish(
        self, *, device_id: str, offer: str, session_id: str | None
    ) -> tuple[Publisher, str]:
        """Answer a camera's offer. A camera that was publishing is replaced by this one."""
        return await _detached(
            self._publish(device_id=device_id, offer=offer, session_id=session_id)
        )

    async def _publish(
        self, *, device_id: str, offer: str, session_id: str | None
    ) -> tuple[Publisher, str]:
        if self.closed:
            raise RelayRefused("The relay is shutting down; publish again shortly.", status=503)
        if device_id not in self.publishers and len(self.publishers) >= (
            self.settings.max_publishers
        ):
            raise RelayRefused(
                f"The relay already takes {self.settings.max_publishers} cameras; stop one "
                "first (MOTIONMIX_HERO_MAX_PUBLISHERS).",
                status=503,
            )
        pc = RTCPeerConnection(self.settings.configuration)
        publisher = Publisher(
            publish_id=secrets.token_hex(12),
            device_id=device_id,
            session_id=session_id,
            pc=pc,
            hub=self.hub(device_id),
        )

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            publisher.readers.append(asyncio.create_task(self._read(publisher, track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not publisher.closing:
                await self.unpublish(publisher, reason="ice_failed")

        try:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            publisher.closing = True
            await pc.close()
            raise BadOffer(f"The offer could not be answered: {exc}") from None
        publisher.codec = answer_codec(pc.localDescription.sdp)
        previous = self.publishers.get(device_id)
        self.publishers[device_id] = publisher
        try:
            await self._db(records.publish_started)(
                device_id=device_id,
                publish_id=publisher.publish_id,
                codec=publisher.codec,
                session_id=session_id,
            )
        except BaseException:
            publisher.closing = True
            if previous is not None:
                self.publishers[device_id] = previous
            else:
                self.publishers.pop(device_id, None)
            await pc.close()
            raise
        if previous is not None:
            # The service recorded the old one as replaced; close it without a second record.
            await self.unpublish(previous, reason="replaced", record=False)
        logger.info("hero relay: %s publishes (%s)", device_id, publisher.codec)
        return publisher, pc.localDescription.sdp

    def publisher_by_id(self, publish_id: str) -> Publisher | None:
        for publisher in self.publishers.values():
            if publisher.publish_id == publish_id:
                return publisher
        return None

    async def unpublish(self, publisher: Publisher, *, reason: str, record: bool = True) -> None:
        if publisher.closing and reason != "shutdown":
            return
        publisher.closing = True
        if self.publishers.get(publisher.device_id) is publisher:
            del self.publishers[publisher.device_id]
        for task in publisher.readers:
            task.cancel()
        await publisher.pc.close()
        if record:
            try:
                await self._db(records.publish_stopped)(
                    device_id=publisher.device_id,
                    publish_id=publisher.publish_id,
                    reason=reason,
                    frames=publisher.frames,
                    session_id=publisher.session_id,
                )
            except Exception:
                # The database is away: the card keeps "publishing" until the next publish or
                # the device's next state change corrects it; the peer is closed regardless.
                logger.exception("hero relay: could not record the end of %s", publisher.device_id)
        logger.info("hero relay: %s stopped publishing (%s)", publisher.device_id, reason)

    async def _read(self, publisher: Publisher, track: MediaStreamTrack) -> None:
        """Read a received track for as long as it lives: audio is drained, video decoded
        frames go to the camera's hub."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, VideoFrame):
                continue
            now = time.monotonic()
            publisher.frames += 1
            publisher.last_frame_at = now
            publisher.frame_times.append(now)
            publisher.width, publisher.height = frame.width, frame.height
            if self.publishers.get(publisher.device_id) is publisher:
                publisher.hub.put(frame)

    # -- outputs and viewers (WHEP) ---------------------------------------------------------

    async def output(self, session_id: str) -> HeroOutput:
        """The session's output, made on first need from what the database says is on air."""
        async with self._output_lock:
            output = self.outputs.get(session_id)
            if output is not None:
                return output
            status, hero_id = await self._db(records.session_on_air)(session_id=session_id)
            if status == "missing":
                raise RelayRefused("There is no such session.", status=404)
            if status != "live":
                raise RelayRefused(
                    "The session is not live; its hero can be watched while it runs.",
                    status=409,
                )
            output = HeroOutput(session_id, on_air=self._on_air)
            if hero_id is not None:
                output.switch(self.hub(hero_id))
            self.outputs[session_id] = output
            self._taps[session_id] = asyncio.create_task(self._tap(output))
            return output

    async def _tap(self, output: HeroOutput) -> None:
        """Keep the output running with or without viewers, so every switch takes effect (and
        is timed) at once, and a viewer who joins gets the current frame."""
        tap = self.media.subscribe(output, buffered=False)
        with contextlib.suppress(MediaStreamError):
            while True:
                await tap.recv()

    async def watch(
        self, *, session_id: str, offer: str, user: str, owner_id: int | None = None
    ) -> tuple[Viewer, str]:
        return await _detached(
            self._watch(session_id=session_id, offer=offer, user=user, owner_id=owner_id)
        )

    async def _watch(
        self, *, session_id: str, offer: str, user: str, owner_id: int | None
    ) -> tuple[Viewer, str]:
        if self.closed:
            raise RelayRefused("The relay is shutting down; reconnect shortly.", status=503)
        if len(self.viewers) >= self.settings.max_viewers:
            raise RelayRefused(
                f"The relay already serves {self.settings.max_viewers} viewers, each one a "
                "video encode; close another hero view first (MOTIONMIX_HERO_MAX_VIEWERS).",
                status=503,
            )
        output = await self.output(session_id)
        pc = RTCPeerConnection(self.settings.configuration)
        track = ViewerTrack(self.media.subscribe(output, buffered=False))
        viewer = Viewer(
            viewer_id=secrets.token_hex(12),
            session_id=session_id,
            user=user,
            pc=pc,
            track=track,
            owner_id=owner_id,
        )

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not viewer.closing:
                await self.unwatch(viewer)

        try:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            prefer_codec(transceiver, self.settings.viewer_codec)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            viewer.closing = True
            track.stop()
            await pc.close()
            raise BadOffer(f"The offer could not be answered: {exc}") from None
        viewer.codec = answer_codec(pc.localDescription.sdp)
        self.viewers[viewer.viewer_id] = viewer
        return viewer, pc.localDescription.sdp

    async def unwatch(self, viewer: Viewer) -> None:
        if viewer.closing:
            return
        viewer.closing = True
        self.viewers.pop(viewer.viewer_id, None)
        viewer.track.stop()
        await viewer.pc.close()

    def _close_output(self, session_id: str) -> None:
        output = self.outputs.pop(session_id, None)
        if output is not None:
            output.stop()
        tap = self._taps.pop(session_id, None)
        if tap is not None:
            tap.cancel()

    # -- switching --------------------------------------------------------------------------

    async def switch(self, message: HeroSwitch) -> None:
        session_id, device_id = message["session_id"], message["device_id"]
        if device_id is None:
            for viewer in [v for v in self.viewers.values() if v.session_id == session_id]:
                await self.unwatch(viewer)
            self._close_output(session_id)
            return
        try:
            output = await self.output(session_id)
        except RelayRefused:
            return  # the session ended meanwhile
        mark = SwitchMark(
            session_id=session_id,
            device_id=device_id,
            cause=message["cause"],
            switched_at=message["switched_at"],
            reached_at=time.monotonic(),
        )
        output.switch(self.hub(device_id), mark)

    def _on_air(self, mark: SwitchMark, first_frame_at: float, relay_ms: float) -> None:
        after_ms = max(0.0, (first_frame_at - mark.switched_at) * 1000.0)
        entry = {
            "session_id": mark.session_id,
            "to": mark.device_id,
            "cause": mark.cause,
            "first_frame_at": first_frame_at,
            "after_ms": round(after_ms, 1),
            "relay_ms": round(relay_ms, 1),
        }
        self.on_air.append(entry)
        self._spawn(self._db(records.on_air)(**entry), what=f"on-air record of {mark.cause}")

    async def _listen(self) -> None:
        """Take switches from the channel layer, whoever recorded them. If the layer fails
        (Redis restarting), the listener leaves its old channel, joins again and puts every
        output back on the hero the database holds, so a switch sent meanwhile is not lost."""
        layer = get_channel_layer()
        if layer is None:
            return
        rejoined = False
        while True:
            channel = None
            try:
                # The default prefix: channels_redis receives every process-specific channel
                # of a prefix through one shared read, and a second prefix would hold that
                # read's lock on its own key, starving the consumers of this process.
                channel = await layer.new_channel()
                await layer.group_add(HERO_GROUP, channel)
                if rejoined:
                    await self.resync()
                while True:
                    message = await layer.receive(channel)
                    if message.get("type") == "hero.switch":
                        await self.switch(message)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                if channel is not None:
                    with contextlib.suppress(Exception):
                        await layer.group_discard(HERO_GROUP, channel)
                raise
            except Exception:
                logger.exception("hero relay: the switch listener failed; retrying")
                if channel is not None:
                    with contextlib.suppress(Exception):
                        await layer.group_discard(HERO_GROUP, channel)
                rejoined = True
                await asyncio.sleep(LISTEN_RETRY_S)

    async def resync(self) -> None:
        """Point every output at the hero the database holds now; close ended sessions'."""
        for session_id, output in list(self.outputs.items()):
            status, hero_id = await self._db(records.session_on_air)(session_id=session_id)
            if status != "live":
                await self.switch(
                    HeroSwitch(
                        type="hero.switch",
                        session_id=session_id,
                        device_id=None,
                        cause="resync",
                        switched_at=time.time(),
                    )
                )
            elif hero_id is not None and (
                output.source is None or output.source.device_id != hero_id
            ):
                output.switch(self.hub(hero_id))

    # -- housekeeping -----------------------------------------------------------------------

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_S)
            now = time.monotonic()
            for publisher in list(self.publishers.values()):
                if publisher.last_frame_at is None:
                    if now - publisher.created_at > self.settings.connect_s:
                        await self.unpublish(publisher, reason="no_media")
                    continue
                if now - publisher.last_frame_at > self.settings.no_media_s:
                    await self.unpublish(publisher, reason="no_media")
                    continue
                await self._measure(publisher, now)

    async def _measure(self, publisher: Publisher, now: float) -> None:
        fps = round(publisher.fps(now), 1)
        last = publisher.measured
        size = (publisher.width, publisher.height)
        if last is not None and (last[0], last[1]) == size and abs(last[2] - fps) < 1.0:
            return
        if now - publisher.created_at < FPS_WINDOW_S and last is not None:
            return
        publisher.measured = (publisher.width, publisher.height, fps)
        self._spawn(
            self._db(records.publish_measured)(
                device_id=publisher.device_id,
                publish_id=publisher.publish_id,
                width=publisher.width,
                height=publisher.height,
                fps=fps,
            ),
            what=f"measure of {publisher.device_id}",
        )

    async def _previews(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.preview_s)
            now = time.monotonic()
            for publisher in list(self.publishers.values()):
                hub = publisher.hub
                frame = hub.frame
                if frame is None or hub.seq == publisher.preview_seq:
                    continue
                publisher.preview_seq = hub.seq
                image = await loop.run_in_executor(
                    None, preview_jpeg, frame, self.settings.preview_width
                )
                await hero_preview_send(
                    HeroPreview(
                        type="hero.preview",
                        device_id=publisher.device_id,
                        image=image,
                        width=frame.width,
                        height=frame.height,
                        fps=round(publisher.fps(now), 1),
                        sent_at=time.time(),
                    )
                )


def _detached(work: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """A task outside the request that started it. Peers, their callbacks and the relay's
    loops outlive requests; in the request's context their database calls would go to the
    request's own thread, which is gone once it has answered."""
    return asyncio.create_task(work, name=name, context=contextvars.Context())


def preview_jpeg(frame: VideoFrame, width: int) -> str:
    """A small JPEG of a frame, as a data: URL (scaled while converting, in one pass)."""
    height = max(2, round(width * frame.height / frame.width / 2) * 2)
    image = frame.to_image(width=width, height=height)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
