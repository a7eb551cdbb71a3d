"""Virtual iPhones that use the public device API only, as the capture app does.

Each one pairs with the current code, registers, then heartbeats at the interval the server
asks for. Batteries drain (and charge once plugged in), phones warm up and cool down, and each
phone's clock is off from the server's by a few hundred ms, as real phones' clocks are.

They take commands as the capture app does: odd-numbered phones over the device WebSocket,
even-numbered ones by long poll, so both delivery paths run (a phone whose socket cannot
connect falls back to the long poll). They change lens and flip, keep the tally, capture
real JPEG stills, which they upload before acknowledging, and publish synthetic video over
WHIP while the server wants it (devices/simulator_video.py). All the while they stream the
pose of one performer (a BVH take or the procedural dancer) as each sees it from its stand
(devices/simulator_motion.py, devices/simulator_pose.py), stamped on their own clocks.

Clocks: a phone knows only its own clock (`device_clock()`, the true time plus its offset).
Every time it sends (`sent_at`, `returned_at`, `captured_at`, `done_at`) is on that clock, and
a server time (`fire_at`, `expires_at`) is mapped onto it with the server's estimate of the
offset (`clock_offset_s`, learnt from the heartbeat round trips the phone reports), never with
the simulation's true offset. A capture-all therefore lines up only as well as that estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from devices import clock
from devices.lenses import LensRefused, lens_plan
from devices.simulator_camera import DEFAULT_STILL_SIZE, StillSpec, effective_hfov_deg
from devices.simulator_link import (
    RETRY_FIRST_S,
    RETRY_MAX_S,
    Capture,
    Command,
    KeptStill,
    PhoneLink,
)
from devices.simulator_motion import MotionSource, ProceduralDancer
from devices.simulator_pose import DEFAULT_POSE_FPS, MAX_POSE_FPS, PoseStream
from devices.simulator_video import DEFAULT_VIDEO_FPS, DEFAULT_VIDEO_SIZE, WhipPublisher

logger = logging.getLogger("motionmix.simulator")

MODELS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "iPhone 15 Pro",
        [
            {"id": "ultra_wide", "zoom": 0.5, "hfov_deg": 106.0},
            {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
            {"id": "tele", "zoom": 3.0, "hfov_deg": 27.0},
        ],
    ),
    (
        "iPhone 16 Pro Max",
        [
            {"id": "ultra_wide", "zoom": 0.5, "hfov_deg": 106.0},
            {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
            {"id": "tele", "zoom": 5.0, "hfov_deg": 16.0},
        ],
    ),
]
# Where the crew puts the stands, in order: (azimuth, distance in m). Not evenly spread, so the
# coverage map has gaps worth closing.
STANDS = [(0.0, 3.0), (65.0, 2.6), (150.0, 3.4), (290.0, 2.2), (215.0, 4.2), (330.0, 1.6)]
THERMAL_STATES = ["nominal", "fair", "serious", "critical"]

SOCKET_PATH = "/ws/v1/device/"
# How long the simulator waits, when it stops, for its phones to unpublish their video.
UNPUBLISH_TIMEOUT_S = 10.0

CodeSource = Callable[[], Awaitable[str]]


def _on_off(value: bool) -> str:
    return "on" if value else "off"


@dataclass
class VirtualIPhone:
    index: int
    install_prefix: str
    rng: random.Random
    name: str = ""
    model: str = ""
    lenses: list[dict[str, Any]] = field(default_factory=list)
    battery: float = 1.0
    charging: bool = False
    thermal: int = 0
    lens: str = "wide"
    zoom: float = 1.0
    flip_horizontal: bool = False
    flip_vertical: bool = False
    orientation: str = "landscape_left"
    tally: str = "off"
    storage_free_mb: int = 64_000
    clock_offset_s: float = 0.0  # the truth of the simulation; the phone itself never reads it
    offset_estimate_s: float | None = None  # the server's estimate, as last told
    last_exchange: clock.Sample | None = None
    token: str = ""
    device_id: str = ""
    interval_s: float = 2.0
    still_size: tuple[int, int] = DEFAULT_STILL_SIZE
    beats: int = 0
    errors: int = 0
    commands_done: int = 0
    stills_taken: int = 0
    stills_uploaded: int = 0
    captures: deque[Capture] = field(default_factory=lambda: deque(maxlen=100))
    # Stills taken that the server has not taken yet (devices/simulator_link.py), oldest first.
    outbox: deque[KeptStill] = field(default_factory=deque)
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    beat_now: asyncio.Event = field(default_factory=asyncio.Event)
    register_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    placement: dict[str, float] = field(default_factory=dict)
    video_size: tuple[int, int] = DEFAULT_VIDEO_SIZE
    video_fps: int = DEFAULT_VIDEO_FPS
    video_codec: str | None = None  # "vp8" or "h264"; None lets the server choose
    publisher: WhipPublisher | None = None  # while the server wants this camera's video
    # The performer this phone sees (devices/simulator_pose.py) and its pose stream's rate
    # (0: no pose). What it sent: frames k are on the simulator's motion clock.
    motion: MotionSource | None = None
    pose_fps: int = DEFAULT_POSE_FPS
    pose_batches_sent: int = 0
    pose_frames_sent: int = 0
    pose_frames_dropped: int = 0
    pose_first_frame: int = -1
    pose_last_frame: int = -1

    def __post_init__(self) -> None:
        self.name = f"Cam {self.index}"
        azimuth, distance = STANDS[(self.index - 1) % len(STANDS)]
        # Stands a little off their marks, as a crew sets them; the phone knows where it is
        # (an AR anchor would tell a real one) and says so once, in its first heartbeat.
        self.placement = {
            "azimuth_deg": round((azimuth + self.rng.uniform(-4, 4)) % 360, 1),
            "distance_m": round(distance + self.rng.uniform(-0.2, 0.2), 2),
            "height_m": round(self.rng.uniform(1.2, 1.7), 2),
        }
        self.model, self.lenses = MODELS[(self.index - 1) % len(MODELS)]
        self.battery = round(self.rng.uniform(0.55, 1.0), 3)
        self.storage_free_mb = self.rng.randint(20_000, 120_000)
        self.clock_offset_s = self.rng.uniform(-0.4, 0.4)

    @property
    def install_id(self) -> str:
        return f"{self.install_prefix}-{self.index}"

    @property
    def prefers_socket(self) -> bool:
        return self.index % 2 == 1

    @property
    def label(self) -> str:
        # The tally is in every log line: it is what the operator's room sees of this camera.
        return self.name if self.tally == "off" else f"{self.name} [{self.tally}]"

    def device_clock(self) -> float:
        return time.time() + self.clock_offset_s

    def device_time(self, server_unix: float, offset_s: float | None = None) -> float:
        """A server time on this phone's clock, with the given estimate or the latest one."""
        estimate = offset_s if offset_s is not None else self.offset_estimate_s
        return server_unix + (estimate or 0.0)

    def fire_time(self, command: Command) -> float:
        if command.fire_at is None:
            return self.device_clock()
        return self.device_time(command.fire_at, command.clock_offset_s)

    def has_expired(self, command: Command) -> bool:
        return self.device_clock() >= self.device_time(command.expires_at, command.clock_offset_s)

    def record_exchange(
        self, *, sent_at: float, answer: dict[str, Any], returned_at: float
    ) -> None:
        """Keep the round trip for the next beat, and the server's offset estimate."""
        try:
            exchange = clock.Sample(
                sent_at=sent_at,
                received_at=float(answer["received_at"]),
                server_time=float(answer["server_time"]),
                returned_at=returned_at,
            )
        except (KeyError, TypeError, ValueError):
            return
        self.last_exchange = exchange
        if answer.get("clock_offset_s") is not None:
            self.offset_estimate_s = float(answer["clock_offset_s"])
        elif self.offset_estimate_s is None:
            # A server that estimates nothing: the phone's own estimate beats assuming zero.
            self.offset_estimate_s = exchange.offset_s

    def register_body(self, code: str) -> dict[str, Any]:
        return {
            "pairing_code": code,
            "install_id": self.install_id,
            "name": self.name,
            "kind": "iphone",
            "model": self.model,
            "os_version": "18.1",
            "app_version": "1.0.0-sim",
            "lenses": self.lenses,
        }

    def heartbeat_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sent_at": self.device_clock(),
            "battery": round(self.battery, 4),
            "charging": self.charging,
            "thermal": THERMAL_STATES[self.thermal],
            "lens": self.lens,
            "zoom": self.zoom,
            "orientation": self.orientation,
            "flip": {"horizontal": self.flip_horizontal, "vertical": self.flip_vertical},
            "storage_free_mb": self.storage_free_mb,
            "fps": float(self.video_fps),
        }
        if self.last_exchange is not None:
            body["clock"] = dataclasses.asdict(self.last_exchange)
        if self.beats == 0:
            # Only until a beat is taken: after that the operator may move the camera on the
            # map, and the phone must not put it back.
            body["placement"] = self.placement
        return body

    def age(self) -> None:
        """One interval of a phone's life on a stand."""
        if self.charging:
            self.battery = min(1.0, self.battery + 0.004)
            if self.battery >= 0.95:
                self.charging = False
        else:
            self.battery = max(0.0, self.battery - self.rng.uniform(0.0004, 0.0012))
            if self.battery < 0.12:
                self.charging = True  # the assistant plugs it in
        drift = self.rng.random()
        if drift < 0.03 and self.thermal < 3:
            self.thermal += 1
        elif drift > 0.9 and self.thermal > 0:
            self.thermal -= 1
        self.storage_free_mb = max(0, self.storage_free_mb - self.rng.randint(0, 3))

    def set_lens(self, args: dict[str, Any]) -> str:
        """Switch lens; returns the ack detail. Raises ValueError with the rejection detail."""
        zoom = args.get("zoom")
        if isinstance(zoom, bool) or not isinstance(zoom, int | float) or zoom <= 0:
            raise ValueError(f"set_lens needs a positive zoom, not {zoom!r}")
        lens = args.get("lens")
        if lens is None:
            # An older server sends only the zoom: choose the lens as the contract says.
            try:
                lens = lens_plan(self.lenses, float(zoom), device_name=self.name).lens
            except LensRefused as exc:
                raise ValueError(str(exc)) from None
        if lens not in {item["id"] for item in self.lenses}:
            raise ValueError(f"this {self.model} has no {lens} lens")
        self.lens, self.zoom = str(lens), float(zoom)
        return f"{self.lens} at {self.zoom:g}x"

    def set_flip(self, args: dict[str, Any]) -> str:
        horizontal, vertical = args.get("horizontal"), args.get("vertical")
        if not isinstance(horizontal, bool) or not isinstance(vertical, bool):
            raise ValueError("set_flip needs horizontal and vertical, each true or false")
        self.flip_horizontal, self.flip_vertical = horizontal, vertical
        return f"flip horizontal {_on_off(horizontal)}, vertical {_on_off(vertical)}"

    def still_spec(self, captured_at: float) -> StillSpec:
        """What the camera sees at the instant it fires: taken before any await."""
        self.stills_taken += 1
        native = next(item for item in self.lenses if item["id"] == self.lens)
        digital = self.zoom / float(native["zoom"])
        return StillSpec(
            camera=self.name,
            model=self.model,
            index=self.index,
            lens=self.lens,
            zoom=self.zoom,
            hfov_deg=effective_hfov_deg(float(native["hfov_deg"]), digital),
            flip_horizontal=self.flip_horizontal,
            flip_vertical=self.flip_vertical,
            captured_at=captured_at,
            sequence=self.stills_taken,
            size=self.still_size,
        )


class Simulator:
    def __init__(
        self,
        *,
        url: str,
        count: int,
        code_source: CodeSource,
        install_prefix: str = "sim-iphone",
        seed: int | None = None,
        still_size: tuple[int, int] = DEFAULT_STILL_SIZE,
        video_size: tuple[int, int] = DEFAULT_VIDEO_SIZE,
        video_fps: int = DEFAULT_VIDEO_FPS,
        video_codec: str | None = None,
        motion: MotionSource | Sequence[MotionSource] | None = None,
        pose_fps: int = DEFAULT_POSE_FPS,
        motion_start: float | None = None,
    ) -> None:
        """`motion`: the performer every phone sees, or several given to the phones in turn
        (phone 1 the first, phone 2 the second, ...); the procedural dancer by default.
        `motion_start`: the true unix time at which the motion's clock reads 0, shared by all
        phones (default: now). `pose_fps` 0 turns pose off."""
        if not 0 <= pose_fps <= MAX_POSE_FPS:
            raise ValueError(f"pose_fps {pose_fps}: give 0 (no pose) to {MAX_POSE_FPS}, e.g. 30")
        self.url = url.rstrip("/")
        self.socket_url = "ws" + self.url.removeprefix("http") + SOCKET_PATH
        self.code_source = code_source
        rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        self.phones = [
            VirtualIPhone(
                index=i + 1,
                install_prefix=install_prefix,
                rng=random.Random(rng.random()),  # noqa: S311
                still_size=still_size,
                video_size=video_size,
                video_fps=video_fps,
                video_codec=video_codec,
            )
            for i in range(count)
        ]
        if motion is None:
            motions: list[MotionSource] = [ProceduralDancer()]
        elif isinstance(motion, Sequence):
            motions = list(motion) or [ProceduralDancer()]
        else:
            motions = [motion]
        for i, phone in enumerate(self.phones):
            phone.motion = motions[i % len(motions)]
            phone.pose_fps = pose_fps
        self.motion_start = time.time() if motion_start is None else motion_start
        self.links = {phone.index: PhoneLink(self, phone) for phone in self.phones}
        self.stopping = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the simulator is not running"
        return self._client

    async def run(self, *, duration_s: float | None = None) -> None:
        # Per phone, a heartbeat, a long poll, an upload and an ack may be in flight at once.
        limits = httpx.Limits(max_connections=4 * len(self.phones) + 8)
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0, limits=limits) as client:
            self._client = client
            tasks = [asyncio.create_task(self._live(phone)) for phone in self.phones]
            try:
                if duration_s is None:
                    await self.stopping.wait()
                else:
                    await asyncio.wait_for(self.stopping.wait(), timeout=duration_s)
            except TimeoutError:
                pass
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # After the phones' tasks, so no start_publish still in flight starts one anew;
                # before the client closes, so the DELETEs go out.
                await self._unpublish_all()
                self._client = None

    async def _unpublish_all(self) -> None:
        stops = [link.stop_publishing() for link in self.links.values()]
        try:
            await asyncio.wait_for(
                asyncio.gather(*stops, return_exceptions=True), timeout=UNPUBLISH_TIMEOUT_S
            )
        except TimeoutError:
            logger.warning("some phones did not unpublish within %g s", UNPUBLISH_TIMEOUT_S)

    def stop(self) -> None:
        self.stopping.set()

    async def pause(self, seconds: float) -> None:
        """A sleep that ends early when the simulator stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))

    async def register(self, phone: VirtualIPhone, *, stale_token: str | None = None) -> None:
        """Register (again). With `stale_token`, only if no one has replaced it meanwhile: a
        socket and a heartbeat that both find the token refused register once, not twice."""
        async with phone.register_lock:
            if stale_token is not None and phone.token != stale_token:
                return
            backoff = RETRY_FIRST_S
            while not self.stopping.is_set():
                try:
                    code = await self.code_source()
                    response = await self.client.post(
                        "/api/v1/devices/register", json=phone.register_body(code)
                    )
                except httpx.HTTPError as exc:
                    logger.info("%s: server not reachable (%s); retrying", phone.name, exc)
                else:
                    if response.status_code in (200, 201):
                        try:
                            body = response.json()
                            token = str(body["token"])
                            device_id = str(body["device_id"])
                            interval_s = float(body["heartbeat_interval_s"])
                        except (ValueError, KeyError, TypeError) as exc:
                            logger.warning("%s: unreadable registration (%r)", phone.name, exc)
                        else:
                            phone.token, phone.device_id = token, device_id
                            phone.interval_s = interval_s
                            logger.info("%s registered as %s", phone.name, device_id)
                            return
                    phone.errors += 1
                    if response.status_code == 429:
                        backoff = float(response.headers.get("Retry-After", "5"))
                    logger.warning(
                        "%s: register answered %s %s",
                        phone.name,
                        response.status_code,
                        response.text,
                    )
                await self.pause(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    async def _live(self, phone: VirtualIPhone) -> None:
        # Phones come up at slightly different moments, as real ones do.
        await self.pause(phone.rng.uniform(0, 0.5))
        await self.register(phone)
        link = self.links[phone.index]
        try:
            async with asyncio.TaskGroup() as group:
                link.group = group
                group.create_task(self._heartbeats(phone))
                group.create_task(link.run())
                group.create_task(link.drain_outbox())
                group.create_task(PoseStream(self, phone).run())
        finally:
            link.group = None

    async def _heartbeats(self, phone: VirtualIPhone) -> None:
        while not self.stopping.is_set():
            # Cleared before the beat: a change made while it is in flight asks for another.
            phone.beat_now.clear()
            try:
                await self._beat(phone)
            except (ValueError, KeyError, TypeError) as exc:
                # A garbled answer costs one beat, not the phone's life.
                phone.errors += 1
                logger.warning("%s: unreadable heartbeat answer (%r)", phone.label, exc)
            try:
                await asyncio.wait_for(
                    phone.beat_now.wait(), timeout=phone.interval_s * phone.rng.uniform(0.9, 1.1)
                )
            except TimeoutError:
                phone.age()  # a whole interval went by

    async def _beat(self, phone: VirtualIPhone) -> None:
        token = phone.token
        body = phone.heartbeat_body()
        phone.last_exchange = None  # each round trip is reported once
        try:
            response = await self.client.post(
                "/api/v1/devices/heartbeat",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            phone.errors += 1
            logger.info("%s: heartbeat failed (%s)", phone.label, exc)
            return
        returned_at = phone.device_clock()
        if response.status_code == 401:
            logger.warning("%s: token refused; registering again", phone.label)
            await self.register(phone, stale_token=token)
            return
        if response.status_code != 200:
            phone.errors += 1
            logger.warning(
                "%s: heartbeat answered %s %s", phone.label, response.status_code, response.text
            )
            return
        phone.beats += 1
        answer = response.json()
        phone.record_exchange(sent_at=body["sent_at"], answer=answer, returned_at=returned_at)
        if answer.get("pending_commands", 0) > 0:
            # Commands wait that no push brought (queued by a process that shares no channel
            # layer with the server, say): fetch them now, not at the next wake-up.
            link = self.links[phone.index]
            link.spawn(link.poll(wait_s=0.0))
