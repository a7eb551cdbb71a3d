"""A virtual iPhone's live video: a synthetic camera feed, published over WHIP (RFC 9725).

The picture (`render_frame`) is what that phone's camera would see of one shared scene: a
figure walking slowly round a circle in a studio, seen from the camera's azimuth, so cameras
on different stands show different views of the same step at the same moment. Lens and zoom
set the framing; the tally draws a red (live) or green (preview) border; the caption (name,
lens, flip, the device clock) and the frame code that says which phone made the frame and when
(`devices.video_code`) go on top. Flip is not applied to the pixels: like a still, the video is
sent as the camera sees it and every view mirrors it (the caption says how). The background is
drawn once per framing; a frame costs a few ms at 640x480.

`WhipPublisher` sends one such track to the server: an offer with every ICE candidate in it
(aiortc gathers before it returns; no trickle), POSTed with the device token; the answer and
the resource's Location come back in a 201, and a DELETE on the Location ends it. While
publishing is wanted, a connection that fails or closes (not by us) is published again with
backoff, with the phone's token as it is then.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import av
import httpx
from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from av.frame import Frame
from av.packet import Packet
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from devices import video_code
from devices.simulator_camera import (
    SUBJECT_DISTANCE_M,
    _gradient,
    effective_hfov_deg,
    parse_size,
)

if TYPE_CHECKING:
    from devices.simulator import VirtualIPhone

logger = logging.getLogger("motionmix.simulator")

WHIP_PATH = "/api/v1/whip"
DEFAULT_VIDEO_SIZE = (640, 480)
DEFAULT_VIDEO_FPS = 30
VIDEO_CODECS = ("vp8", "h264")
VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
# A track this far behind its schedule (a stalled loop) skips the frames it missed rather than
# sending them in a burst.
RESYNC_AFTER_S = 0.5
REPUBLISH_FIRST_S = 1.0
REPUBLISH_MAX_S = 10.0
# A connection that stayed up this long was healthy: the next republish starts from 1 s again.
HEALTHY_S = 30.0
DELETE_TIMEOUT_S = 5.0

# The scene, in metres, seen from above: x to the subject's right, y to its front; azimuth 0
# is the front, counted clockwise. The subject walks round a circle, one lap per period.
WALK_RADIUS_M = 0.7
WALK_PERIOD_S = 24.0
STEPS_PER_S = 1.6
BACK_WALL_M = 2.8  # radius of the ring of studio props behind the set
PROPS = [  # (world azimuth in degrees, colour): each camera sees its own part of the ring
    (0.0, (246, 196, 120)),
    (60.0, (130, 190, 230)),
    (120.0, (240, 150, 170)),
    (180.0, (160, 220, 150)),
    (240.0, (250, 230, 140)),
    (300.0, (190, 160, 230)),
]
SKIN = (234, 184, 150)
HAIR = (66, 44, 34)
SHIRT = (236, 112, 99)
TROUSERS = (52, 72, 120)
TALLY_COLOURS = {"live": (225, 30, 30), "preview": (40, 190, 70)}

RGB = tuple[int, int, int]


def parse_video_size(text: str) -> tuple[int, int]:
    """'640x480' → (640, 480); a clear ValueError for anything else."""
    size = parse_size(text)
    if (
        size is None
        or not (320 <= size[0] <= 1920 and 240 <= size[1] <= 1080)
        or size[0] % 2
        or size[1] % 2
    ):
        raise ValueError(
            f"{text!r} is not a video size: give WIDTHxHEIGHT, even numbers, from 320x240 "
            "to 1920x1080, e.g. 640x480 or 1280x720."
        )
    return size


# --- The picture ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraLook:
    """What one camera shows at one instant: taken on the loop, rendered off it."""

    name: str
    index: int
    lens: str
    zoom: float
    hfov_deg: float  # after digital zoom
    flip_horizontal: bool
    flip_vertical: bool
    tally: str
    azimuth_deg: float
    distance_m: float
    device_time: float  # the phone's clock, unix s: the caption's clock
    scene_time: float  # the shared true time: every camera sees the same step at once
    size: tuple[int, int]

    @classmethod
    def of(cls, phone: VirtualIPhone, size: tuple[int, int]) -> CameraLook:
        native = next((item for item in phone.lenses if item["id"] == phone.lens), None)
        hfov = 73.0
        if native is not None:
            hfov = effective_hfov_deg(float(native["hfov_deg"]), phone.zoom / float(native["zoom"]))
        return cls(
            name=phone.name,
            index=phone.index,
            lens=phone.lens,
            zoom=phone.zoom,
            hfov_deg=hfov,
            flip_horizontal=phone.flip_horizontal,
            flip_vertical=phone.flip_vertical,
            tally=phone.tally,
            azimuth_deg=float(phone.placement.get("azimuth_deg", 0.0)),
            distance_m=float(phone.placement.get("distance_m", SUBJECT_DISTANCE_M)),
            device_time=phone.device_clock(),
            scene_time=time.time(),
            size=size,
        )


class _Camera:
    """Projects scene points (top-view x, y and height z, metres) to pixels for one stand."""

    def __init__(
        self, size: tuple[int, int], hfov_deg: float, zoom: float, azimuth_deg: float, d: float
    ) -> None:
        width, height = size
        self.cx, self.cy = width / 2, height / 2
        self.focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        a = math.radians(azimuth_deg)
        self.toward = (math.sin(a), math.cos(a))  # from the subject to the camera
        self.right = (-math.cos(a), math.sin(a))  # the camera's right, on the floor
        self.distance = max(0.8, d)
        # Wide framings aim at the middle of the body; long lenses at the face.
        self.aim = min(1.62, 1.0 + 0.2 * zoom)

    def depth(self, x: float, y: float) -> float:
        return self.distance - (x * self.toward[0] + y * self.toward[1])

    def point(self, x: float, y: float, z: float) -> tuple[float, float]:
        depth = max(0.05, self.depth(x, y))
        lateral = x * self.right[0] + y * self.right[1]
        return (
            self.cx + self.focal * lateral / depth,
            self.cy - self.focal * (z - self.aim) / depth,
        )

    def scale(self, x: float, y: float) -> float:
        """Pixels per metre at the depth of (x, y)."""
        return self.focal / max(0.05, self.depth(x, y))


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=32)
def _background(
    size: tuple[int, int], hfov_deg: float, zoom: float, azimuth_deg: float, distance_m: float
) -> Image.Image:
    """The studio without the subject, from one stand with one framing. Shared: copy it."""
    width, height = size
    camera = _Camera(size, hfov_deg, zoom, azimuth_deg, distance_m)
    image = _gradient(size, (88, 128, 184), (226, 218, 206))
    # The floor starts where it meets the ring of props behind the set.
    horizon = camera.cy + camera.focal * camera.aim / (camera.distance + BACK_WALL_M)
    floor_top = max(0, min(height, round(horizon)))
    if floor_top < height:
        image.paste(
            _gradient((width, height - floor_top), (190, 166, 138), (116, 94, 76)), (0, floor_top)
        )
    draw = ImageDraw.Draw(image)
    # The props on the far side of the set: which ones, and where, depend on the azimuth.
    for prop_azimuth, colour in PROPS:
        a = math.radians(prop_azimuth)
        x, y = BACK_WALL_M * math.sin(a), BACK_WALL_M * math.cos(a)
        if x * camera.toward[0] + y * camera.toward[1] > -0.3:
            continue  # on the camera's side of the subject: behind the camera or in its way
        left, top = camera.point(x - 0.45 * camera.right[0], y - 0.45 * camera.right[1], 2.6)
        right, bottom = camera.point(x + 0.45 * camera.right[0], y + 0.45 * camera.right[1], 1.6)
        pole_x, foot_y = camera.point(x, y, 0)
        line = max(1, round(camera.scale(x, y) * 0.03))
        draw.line([(pole_x, bottom), (pole_x, foot_y)], fill=(60, 60, 70), width=line)
        draw.rectangle(
            (min(left, right), top, max(left, right), bottom),
            fill=colour,
            outline=(70, 70, 80),
            width=line,
        )
    # The path the subject walks, taped on the floor.
    path = [
        camera.point(
            WALK_RADIUS_M * math.sin(2 * math.pi * i / 48),
            WALK_RADIUS_M * math.cos(2 * math.pi * i / 48),
            0,
        )
        for i in range(49)
    ]
    draw.line(path, fill=(235, 235, 225), width=max(1, width // 320))
    return image


def _draw_subject(image: Image.Image, look: CameraLook) -> None:
    """The figure as this camera sees it now: where it is on the circle and which way it
    faces (toward the camera, away, or across) follow from the lap and the azimuth."""
    camera = _Camera(look.size, look.hfov_deg, look.zoom, look.azimuth_deg, look.distance_m)
    draw = ImageDraw.Draw(image)
    theta = 2 * math.pi * (look.scene_time % WALK_PERIOD_S) / WALK_PERIOD_S
    x, y = WALK_RADIUS_M * math.sin(theta), WALK_RADIUS_M * math.cos(theta)
    heading = (math.cos(theta), -math.sin(theta))  # clockwise round the circle
    toward = heading[0] * camera.toward[0] + heading[1] * camera.toward[1]  # +1: at the camera
    across = heading[0] * camera.right[0] + heading[1] * camera.right[1]  # +1: to screen right
    step = math.sin(2 * math.pi * STEPS_PER_S * look.scene_time)
    s = camera.scale(x, y)
    base_x, floor_y = camera.point(x, y, 0)

    def at(dx: float, z: float) -> tuple[float, float]:
        return base_x + dx * s, floor_y - z * s

    def width(metres: float) -> int:
        return max(1, round(metres * s))

    draw.ellipse((*at(-0.4, 0.05), *at(0.4, -0.05)), fill=(96, 78, 64))  # shadow
    for side in (-1, 1):  # legs: the stride shows across the picture, the lift from the front
        swing = side * step * 0.22 * across
        lift = max(0.0, side * step) * 0.08
        draw.line([at(side * 0.09 * abs(toward), 0.9), at(swing, lift)], TROUSERS, width(0.13))
    for side in (-1, 1):  # arms, swinging against the legs
        swing = -side * step * 0.18 * across
        shoulder = side * 0.21 * (0.35 + 0.65 * abs(toward))
        draw.line([at(shoulder, 1.42), at(shoulder + swing, 0.86)], SHIRT, width(0.09))
    half = 0.2 * (0.55 + 0.45 * abs(toward))  # narrower seen from the side
    draw.rounded_rectangle((*at(-half, 1.47), *at(half, 0.86)), radius=width(0.07), fill=SHIRT)
    if toward > 0.1:  # the badge on the chest faces the way the subject walks
        cx, cy = at(across * 0.1, 1.25)
        r = 0.05 * s * (0.4 + 0.6 * toward)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 220, 80))
    draw.rectangle((*at(-0.045, 1.54), *at(0.045, 1.44)), fill=SKIN)  # neck
    head = (*at(-0.11, 1.78), *at(0.11, 1.5))
    if toward < -0.3:  # from behind: hair only
        draw.ellipse(head, fill=HAIR)
        return
    draw.ellipse(head, fill=SKIN)
    draw.chord((*at(-0.115, 1.8), *at(0.115, 1.58)), start=180, end=360, fill=HAIR)
    face = across * 0.06  # the face turns toward where the subject is going
    spacing = 0.04 * max(0.0, toward)
    eye = max(1.5, 0.014 * s)
    for dx in {face - spacing, face + spacing}:
        ex, ey = at(dx, 1.65)
        draw.ellipse((ex - eye, ey - eye, ex + eye, ey + eye), fill=(40, 30, 30))
    mx, my = at(face + across * 0.02, 1.58)
    draw.line([(mx - 0.025 * s, my), (mx + 0.025 * s, my)], fill=(150, 60, 60), width=width(0.01))


def _clock_text(device_time: float) -> str:
    moment = datetime.fromtimestamp(device_time, UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _draw_overlay(image: Image.Image, look: CameraLook) -> None:
    """Tally border and label, and the caption."""
    width, height = look.size
    draw = ImageDraw.Draw(image)
    small = _font(max(10, width // 48))
    colour = TALLY_COLOURS.get(look.tally)
    if colour is not None:
        border = max(4, width // 80)
        draw.rectangle((0, 0, width - 1, height - 1), outline=colour, width=border)
        label = "LIVE" if look.tally == "live" else "PREVIEW"
        pad = border
        text_width = round(small.getlength(label))
        box = (width - 2 * border - text_width - 2 * pad, 2 * border)
        draw.rectangle((*box, width - 2 * border, box[1] + small.size + 2 * pad), fill=colour)
        draw.text((box[0] + pad, box[1] + pad), label, font=small, fill=(255, 255, 255))
    big = _font(max(12, width // 24))
    flip = (
        f"flip H {'on' if look.flip_horizontal else 'off'}"
        f" · V {'on' if look.flip_vertical else 'off'}"
    )
    lines = [
        (look.name, big),
        (f"{look.lens} {look.zoom:g}x · {look.azimuth_deg:.0f}°", small),
        (flip, small),
        (_clock_text(look.device_time), small),
    ]
    margin, pad, gap = max(8, width // 40), max(4, width // 100), max(2, width // 200)
    heights = [font.size for _, font in lines]
    box_width = max(round(font.getlength(text)) for text, font in lines) + 2 * pad
    box_height = sum(heights) + gap * (len(lines) - 1) + 2 * pad
    draw.rectangle((margin, margin, margin + box_width, margin + box_height), fill=(20, 20, 28))
    y = margin + pad
    for (text, font), line_height in zip(lines, heights, strict=True):
        draw.text((margin + pad, y), text, font=font, fill=(255, 255, 255))
        y += line_height + gap


def render_picture(look: CameraLook, code: video_code.FrameCode) -> Image.Image:
    """The RGB picture for one frame. CPU-bound (a few ms at 640x480)."""
    image = _background(
        look.size,
        round(look.hfov_deg, 2),
        look.zoom,
        round(look.azimuth_deg, 1),
        round(look.distance_m, 2),
    ).copy()
    _draw_subject(image, look)
    _draw_overlay(image, look)
    video_code.draw(image, code)
    return image


def render_frame(
    look: CameraLook, code: video_code.FrameCode, reformatter: VideoReformatter | None = None
) -> av.VideoFrame:
    """The yuv420p video frame for one instant, without timing (pts) yet. A reformatter kept
    from frame to frame (one per thread at a time) saves setting up the conversion each time,
    about a third of a frame's cost."""
    frame = av.VideoFrame.from_image(render_picture(look, code))
    if reformatter is None:
        return frame.reformat(format="yuv420p")
    return reformatter.reformat(frame, format="yuv420p")


class SyntheticCameraTrack(MediaStreamTrack):
    """One phone's camera feed at a steady frame rate, each frame showing the phone as it is
    when the frame is made (lens, flip and tally changes show at the next frame).

    Timing: pts count 1/90000 s from the first frame; frames are paced on the monotonic
    clock, and a track that falls more than RESYNC_AFTER_S behind skips ahead."""

    kind = "video"

    def __init__(
        self,
        phone: VirtualIPhone,
        *,
        size: tuple[int, int] = DEFAULT_VIDEO_SIZE,
        fps: int = DEFAULT_VIDEO_FPS,
    ) -> None:
        super().__init__()
        if not 1 <= fps <= 120:
            raise ValueError(f"a camera runs at 1 to 120 fps, not {fps}")
        if size[0] < 320 or size[1] < 240 or size[0] % 2 or size[1] % 2:
            raise ValueError(f"a camera's video is at least 320x240, in even numbers, not {size}")
        self.phone = phone
        self.size = size
        self.fps = fps
        self.frames_made = 0
        self._reformatter = VideoReformatter()  # frames are made one at a time: never shared
        self._start: float | None = None
        self._index = 0

    async def _next_pts(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._index += 1
            due = self._start + self._index / self.fps
            if now - due > RESYNC_AFTER_S:
                self._index = int((now - self._start) * self.fps)
                due = self._start + self._index / self.fps
            if due > now:
                await asyncio.sleep(due - now)
        return self._index * VIDEO_CLOCK_RATE // self.fps

    async def recv(self) -> av.VideoFrame:
        pts = await self._next_pts()
        look = CameraLook.of(self.phone, self.size)
        code = video_code.FrameCode(source=self.phone.index % 256, stamp_ms=video_code.stamp_now())
        # Off the loop: the other phones' shutters and sockets must not wait for the drawing.
        frame = await asyncio.to_thread(render_frame, look, code, self._reformatter)
        if self.readyState != "live":
            raise MediaStreamError
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        self.frames_made += 1
        return frame


# --- Publishing -----------------------------------------------------------------------------


class WhipError(Exception):
    """The WHIP endpoint refused the publish, or answered something that is not WHIP."""

    def __init__(self, status: int, detail: str) -> None:
        if status >= 300:
            message = f"the server refused to publish ({status}): {detail}"
        else:
            message = f"the server accepted the publish ({status}) but its answer is unusable: "
            message += detail
        super().__init__(message)
        self.status = status
        self.detail = detail


class _CountingTrack(MediaStreamTrack):
    """Hands the inner track's frames to the sender, counting them."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack, on_frame: Callable[[], None]) -> None:
        super().__init__()
        self.inner = inner
        self.on_frame = on_frame

    async def recv(self) -> Frame | Packet:
        frame = await self.inner.recv()
        self.on_frame()
        return frame

    def stop(self) -> None:
        super().stop()
        self.inner.stop()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:300]
    return response.text[:300] or response.reason_phrase


def answer_codec(sdp: str) -> str | None:
    """The codec the answer chose for video: the first payload type of its m=video line."""
    formats: list[str] = []
    names: dict[str, str] = {}
    in_video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video") and not formats
            if in_video:
                formats = line.split()[3:]
        elif in_video and line.startswith("a=rtpmap:"):
            payload_type, _, encoding = line.removeprefix("a=rtpmap:").partition(" ")
            names[payload_type] = encoding.split("/")[0].upper()
    for payload_type in formats:
        name = names.get(payload_type)
        if name and name not in ("RTX", "RED", "ULPFEC"):
            return name
    return None


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities for `codec` ("vp8" or "h264"), with retransmission."""
    mime = {"vp8": "video/vp8", "h264": "video/h264"}.get(codec.lower())
    if mime is None:
        raise ValueError(f"the simulator sends vp8 or h264, not {codec!r}")
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in capabilities if c.mimeType.lower() == mime]
    return chosen + [c for c in capabilities if c.mimeType.lower() == "video/rtx"]


class WhipPublisher:
    """Publishes one video track to a WHIP endpoint, and keeps it published until `stop()`.

    `start()` returns once the server accepted the offer (201 with an SDP answer and a
    Location), before media flows; it raises WhipError for any other answer and httpx.HTTPError
    when the server does not answer, and then nothing is left behind. After that, a connection
    that fails or closes without `stop()` is published again after 1, 2, 4 … 10 s, each time
    with a new track from `make_track` (aiortc stops a track with its connection) and the token
    `token()` gives then. `stop()` sends the DELETE (a 404 is fine: already gone) and closes
    the connection; calling it again does nothing.
    """

    def __init__(
        self,
        *,
        url: str,
        token: Callable[[], str],
        make_track: Callable[[], MediaStreamTrack],
        size: tuple[int, int],
        fps: int,
        preferred_codec: str | None = None,
        ice_servers: list[RTCIceServer] | None = None,
        client: httpx.AsyncClient | None = None,
        label: str = "WHIP",
    ) -> None:
        if preferred_codec is not None:
            codec_preferences(preferred_codec)  # a clear ValueError now, not at the first offer
        self.url = url
        self.token = token
        self.make_track = make_track
        self.size = size
        self.fps = fps
        self.preferred_codec = preferred_codec
        self.ice_servers = list(ice_servers or [])
        self.label = label
        self.codec: str | None = None  # as negotiated, e.g. "VP8"
        self.resource_url: str | None = None
        self.publishes = 0
        self.wanted = False
        self._client = client
        self._own_client = client is None
        self._pc: RTCPeerConnection | None = None
        self._token_used = ""
        self._frames = 0
        self._down = asyncio.Event()
        self._published_at = 0.0
        self._keeper: asyncio.Task[None] | None = None

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState if self._pc is not None else "closed"

    @property
    def frames_sent(self) -> int:
        return self._frames

    @property
    def description(self) -> str:
        width, height = self.size
        # A multiplication sign, as the operator reads sizes on the card.
        return f"{width}×{height} at {self.fps} fps ({self.codec or 'codec unknown'})"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        return self._client

    async def start(self) -> None:
        if self.wanted:
            return
        self.wanted = True
        try:
            await self._publish()
        except BaseException:
            self.wanted = False
            await self._close_client()
            raise
        self._keeper = asyncio.create_task(self._keep_up())

    async def republish(self) -> None:
        """Publish anew now, dropping the current connection: the server asked, so it holds no
        publish of this camera (its relay restarted, say), however healthy the connection
        looks here; waiting for it to fail would leave the camera dark until ICE consent runs
        out. Raises as `start()` does; the connection is then published again with backoff."""
        if not self.wanted:
            await self.start()
            return
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self._drop()
        try:
            await self._publish()
        except BaseException:
            self._down.set()  # the keeper tries again, with backoff
            raise
        finally:
            self._keeper = asyncio.create_task(self._keep_up())

    async def stop(self) -> None:
        self.wanted = False
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self._drop()
        await self._close_client()

    async def _close_client(self) -> None:
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _counted(self) -> None:
        self._frames += 1

    async def _publish(self) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        token = self.token()
        resource: str | None = None

        @pc.on("connectionstatechange")
        def changed() -> None:
            state = pc.connectionState
            if pc is self._pc and self.wanted and state in ("failed", "closed"):
                self._down.set()

        try:
            track = _CountingTrack(self.make_track(), self._counted)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if self.preferred_codec is not None:
                transceiver.setCodecPreferences(codec_preferences(self.preferred_codec))
            await pc.setLocalDescription(await pc.createOffer())
            response = await self.client.post(
                self.url,
                content=pc.localDescription.sdp.encode(),
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
            )
            if response.status_code != 201:
                raise WhipError(response.status_code, _detail(response))
            location = response.headers.get("Location")
            if location:
                resource = str(httpx.URL(self.url).join(location))
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type != "application/sdp" or not location:
                raise WhipError(201, "it must be application/sdp with a Location")
            try:
                answer = RTCSessionDescription(sdp=response.text, type="answer")
                await pc.setRemoteDescription(answer)
            except (ValueError, InvalidAccessError, InvalidStateError) as exc:
                raise WhipError(201, f"the SDP does not answer the offer ({exc})") from None
        except BaseException:
            await self._teardown(pc, resource, token)
            raise
        self._pc, self.resource_url, self._token_used = pc, resource, token
        self.codec = answer_codec(response.text)
        self.publishes += 1
        self._published_at = time.monotonic()
        self._down.clear()
        if pc.connectionState in ("failed", "closed"):
            self._down.set()  # went down before we were listening for it as the current one
        logger.info("%s: publishing %s to %s", self.label, self.description, resource)

    async def _keep_up(self) -> None:
        backoff = REPUBLISH_FIRST_S
        while self.wanted:
            await self._down.wait()
            self._down.clear()
            if time.monotonic() - self._published_at > HEALTHY_S:
                backoff = REPUBLISH_FIRST_S
            logger.warning(
                "%s: video connection %s; publishing again in %g s",
                self.label,
                self.connection_state,
                backoff,
            )
            await self._drop()
            while self.wanted:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, REPUBLISH_MAX_S)
                try:
                    await self._publish()
                except (WhipError, httpx.HTTPError, OSError, ValueError) as exc:
                    logger.warning(
                        "%s: publishing again failed (%s); next try in %g s",
                        self.label,
                        exc,
                        backoff,
                    )
                else:
                    break

    async def _drop(self) -> None:
        pc, resource, token = self._pc, self.resource_url, self._token_used
        self._pc, self.resource_url = None, None
        if pc is not None:
            await self._teardown(pc, resource, token)

    async def _teardown(self, pc: RTCPeerConnection, resource: str | None, token: str) -> None:
        """DELETE the resource (best effort) and close the connection."""
        try:
            if resource is not None:
                await self._delete(resource, token)
        finally:
            await pc.close()

    async def _delete(self, resource: str, token: str) -> None:
        tokens = [token] + ([self.token()] if self.token() != token else [])
        for bearer in tokens:  # the phone may have registered again since it published
            try:
                response = await self.client.delete(
                    resource,
                    headers={"Authorization": f"Bearer {bearer}"},
                    timeout=DELETE_TIMEOUT_S,
                )
            except httpx.HTTPError as exc:
                logger.info("%s: DELETE %s failed (%s)", self.label, resource, exc)
                return
            if response.status_code != 401:
                break
        if response.status_code >= 300 and response.status_code != 404:
            logger.warning(
                "%s: DELETE %s answered %s %s",
                self.label,
                resource,
                response.status_code,
                _detail(response),
            )


def phone_publisher(
    phone: VirtualIPhone, *, server_url: str, client: httpx.AsyncClient | None = None
) -> WhipPublisher:
    """A publisher of `phone`'s camera at its video size, rate and codec preference."""
    return WhipPublisher(
        url=server_url.rstrip("/") + WHIP_PATH,
        token=lambda: phone.token,
        make_track=lambda: SyntheticCameraTrack(phone, size=phone.video_size, fps=phone.video_fps),
        size=phone.video_size,
        fps=phone.video_fps,
        preferred_codec=phone.video_codec,
        client=client,
        label=phone.name,
    )
