"""A virtual iPhone's pose stream: one performer on the set, seen from each phone's stand.

The performer is a motion source (devices/simulator_motion.py: a BVH take or the procedural
dancer) in the set's coordinates: x and y on the floor, z up, the subject's front towards +y,
azimuths clockwise seen from above. A camera at azimuth `a` stands at
`(d sin a, d cos a, height)`.

Each phone projects the performer with a pinhole camera built from its own placement, lens,
zoom, orientation and video size (`phone_camera`), aimed at the set's centre 1 m up, and sends
`coco17` frames to `POST /api/v1/pose`: x and y normalised to the image (0..1, origin top left,
y down, as MediaPipe gives them; points off the image fall outside 0..1), and a confidence in
0..1 that is low for joints the body hides from that camera and for joints off the image.
Flip is not applied: as with stills and video, a phone reports what its sensor sees and every
view mirrors it (`PinholeCamera.mirror_x` gives the mirrored view when one is wanted).

Clocks: the simulator owns one motion clock start, `motion_start` (true unix time), shared by
its phones. Frame k of a phone's stream is captured at the true time `motion_start + k / fps`,
shows the motion at `k / fps`, and is stamped with the phone's own clock, that true time plus
the phone's `clock_offset_s`, as a phone stamps a camera frame. Two phones therefore send the
same motion frame for the same true instant, each on its own clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from devices.simulator_camera import effective_hfov_deg
from devices.simulator_motion import FloatArray, MotionSource, unit_vectors

if TYPE_CHECKING:
    from devices.simulator import Simulator, VirtualIPhone

logger = logging.getLogger("motionmix.simulator")

POSE_FORMAT = "coco17"
DEFAULT_POSE_FPS = 30
MAX_POSE_FPS = 240
# A batch goes out this often: 15 frames at 30 fps, 60 at 120, well under the server's limit.
POSE_BATCH_S = 0.5
# The server's default limit; a 413 halves what the phone sends at once.
POSE_BATCH_MAX_FRAMES = 300
# Frames kept while the server does not take them; older ones are dropped (and counted).
POSE_BACKLOG_S = 10.0
AIM_HEIGHT_M = 1.0  # cameras aim at the middle of the body
BASE_CONFIDENCE = 0.95
OFF_IMAGE_CONFIDENCE = 0.05


# --- The camera -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera on the set; projects to normalised image coordinates (0..1 across the
    image, origin top left, y down). `focal_x`/`focal_y` are the focal length in image widths
    and heights. `mirror_x`/`mirror_y` give the view as mirrored by a flip."""

    position: tuple[float, float, float]
    right: tuple[float, float, float]
    up: tuple[float, float, float]
    forward: tuple[float, float, float]
    focal_x: float
    focal_y: float
    mirror_x: bool = False
    mirror_y: bool = False

    @classmethod
    def from_placement(
        cls,
        *,
        azimuth_deg: float,
        distance_m: float,
        height_m: float,
        hfov_deg: float,
        image_size: tuple[int, int] = (640, 480),
        aim_height_m: float = AIM_HEIGHT_M,
        mirror_x: bool = False,
        mirror_y: bool = False,
    ) -> PinholeCamera:
        """A camera at its stand, aimed at the set's centre `aim_height_m` up. `hfov_deg` is
        the lens's field of view across the sensor's long side; `image_size` is (width,
        height) of the image as delivered (portrait: taller than wide)."""
        a = math.radians(azimuth_deg)
        position = np.array([distance_m * math.sin(a), distance_m * math.cos(a), height_m])
        forward = unit_vectors(np.array([0.0, 0.0, aim_height_m]) - position)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-9:  # straight above or below: any right will do
            right = np.array([-math.cos(a), math.sin(a), 0.0])
        right = unit_vectors(right)
        up = np.cross(right, forward)
        width, height = image_size
        focal_px = max(width, height) / 2 / math.tan(math.radians(hfov_deg) / 2)

        def vector(values: FloatArray) -> tuple[float, float, float]:
            return (float(values[0]), float(values[1]), float(values[2]))

        return cls(
            position=vector(position),
            right=vector(right),
            up=vector(up),
            forward=vector(forward),
            focal_x=focal_px / width,
            focal_y=focal_px / height,
            mirror_x=mirror_x,
            mirror_y=mirror_y,
        )

    def project(self, points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """`(xy (..., 2), depth (...))` of set points `(..., 3)`. Points behind the camera
        (depth <= 0) get a meaningless xy; check the depth."""
        relative = np.asarray(points, dtype=float) - np.array(self.position)
        depth = relative @ np.array(self.forward)
        safe = np.where(depth > 1e-6, depth, 1e-6)
        x = 0.5 + self.focal_x * (relative @ np.array(self.right)) / safe
        y = 0.5 - self.focal_y * (relative @ np.array(self.up)) / safe
        if self.mirror_x:
            x = 1.0 - x
        if self.mirror_y:
            y = 1.0 - y
        return np.stack([x, y], axis=-1), depth

    def keypoints(self, joints: FloatArray) -> FloatArray:
        """COCO-17 joints `(n, 17, 3)` in set metres → `(n, 17, 3)` of [x, y, confidence]."""
        xy, depth = self.project(joints)
        confidence = BASE_CONFIDENCE - 0.6 * self._hidden(joints)
        inside = np.all((xy >= 0.0) & (xy <= 1.0), axis=-1)
        confidence = np.where(inside, confidence, np.minimum(confidence, OFF_IMAGE_CONFIDENCE))
        confidence = np.where(depth > 0.05, confidence, 0.0)
        xy = np.where((depth > 0.05)[..., None], xy, 0.5)
        return np.concatenate([xy, np.clip(confidence, 0.0, 1.0)[..., None]], axis=-1)

    def _hidden(self, joints: FloatArray) -> FloatArray:
        """0..1 per joint: how far the body hides it from this camera. A joint is hidden when it
        lies behind the body's axis (seen from the camera) and within the body's width of it;
        the face is hidden by the head the same way."""
        view = np.array([*self.forward[:2], 0.0])
        view = view / max(float(np.linalg.norm(view)), 1e-9)
        across = np.array([*self.right[:2], 0.0])
        across = across / max(float(np.linalg.norm(across)), 1e-9)
        hips_mid = joints[:, 11:13].mean(axis=1)
        shoulders_mid = joints[:, 5:7].mean(axis=1)
        torso = ((hips_mid + shoulders_mid) / 2)[:, None, :]
        head = joints[:, 3:5].mean(axis=1)[:, None, :]  # between the ears
        centre = np.concatenate([np.repeat(head, 5, axis=1), np.repeat(torso, 12, axis=1)], axis=1)
        # Per joint: the half width of what hides it, how far behind its axis it starts to be
        # hidden, and over what depth it goes (face: the head; the rest: the torso, whose own
        # joints lie in its plane and are hidden only as it turns side-on).
        half_width = np.array([0.07] * 5 + [0.2] * 12)
        start = np.array([0.02] * 5 + [0.05] * 12)
        ramp = np.array([0.04] * 5 + [0.1] * 12)
        behind = (joints - centre) @ view
        lateral = np.abs((joints - centre) @ across)
        return np.asarray(
            np.clip((behind - start) / ramp, 0.0, 1.0)
            * np.clip(1.5 - lateral / half_width, 0.0, 1.0)
        )


def phone_camera(phone: VirtualIPhone) -> PinholeCamera:
    """What `phone`'s sensor sees: its placement, lens and digital zoom, orientation (portrait
    turns its video size on end) and video size; its flip is not applied (see the module)."""
    native = next(item for item in phone.lenses if item["id"] == phone.lens)
    hfov = effective_hfov_deg(float(native["hfov_deg"]), phone.zoom / float(native["zoom"]))
    long_side, short_side = max(phone.video_size), min(phone.video_size)
    portrait = phone.orientation.startswith("portrait")
    size = (short_side, long_side) if portrait else (long_side, short_side)
    placement = phone.placement
    return PinholeCamera.from_placement(
        azimuth_deg=float(placement.get("azimuth_deg", 0.0)),
        distance_m=float(placement.get("distance_m", 3.0)),
        height_m=float(placement.get("height_m", 1.4)),
        hfov_deg=hfov,
        image_size=size,
    )


# --- The stream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoseFrame:
    index: int  # k: captured at motion_start + k / fps (true time)
    t: float  # device clock
    keypoints: list[list[float]]


def pose_frames(
    motion: MotionSource,
    camera: PinholeCamera,
    *,
    motion_start: float,
    fps: float,
    first: int,
    last: int,
    clock_offset_s: float,
) -> list[PoseFrame]:
    """Frames `first..last` (inclusive) of a stream: frame k shows the motion at `k / fps`
    and is stamped `motion_start + k / fps + clock_offset_s` (the device's clock)."""
    indices = np.arange(first, last + 1)
    keypoints = camera.keypoints(motion.joints_at_many(indices / fps))
    rounded = np.round(keypoints, 5).tolist()
    return [
        PoseFrame(index=int(k), t=motion_start + int(k) / fps + clock_offset_s, keypoints=kp)
        for k, kp in zip(indices, rounded, strict=True)
    ]


class PoseStream:
    """One phone's pose stream: samples its motion at `phone.pose_fps` on the shared motion
    clock and POSTs a batch every POSE_BATCH_S while the simulator runs.

    Refusals, as elsewhere in the simulator: a network failure or 5xx keeps the frames for the
    next batch (up to POSE_BACKLOG_S of them; older ones are dropped and counted), 401
    registers again, 413 halves the batch, and 400 drops the batch (counted) with a warning.
    """

    def __init__(self, fleet: Simulator, phone: VirtualIPhone) -> None:
        self.fleet = fleet
        self.phone = phone
        self.backlog: deque[PoseFrame] = deque()
        self.batch_limit = POSE_BATCH_MAX_FRAMES

    async def run(self) -> None:
        phone, fleet = self.phone, self.fleet
        fps, motion = phone.pose_fps, phone.motion
        if fps <= 0 or motion is None:
            return
        start = fleet.motion_start
        # From the first frame due after the phone came up: nothing is sent for the past.
        next_k = max(0, math.ceil((time.time() - start) * fps))
        per_batch = max(1, round(POSE_BATCH_S * fps))
        while not fleet.stopping.is_set():
            await fleet.pause(start + (next_k + per_batch - 1) / fps - time.time())
            if fleet.stopping.is_set():
                return
            last_k = math.floor((time.time() - start) * fps)
            if last_k < next_k:
                continue
            try:
                self.capture(motion, first=next_k, last=last_k)
            except Exception:
                # A bug here must not take the phone's other tasks down: skip these frames.
                phone.errors += 1
                phone.pose_frames_dropped += last_k - next_k + 1
                logger.exception("%s: pose frames %d-%d failed", phone.label, next_k, last_k)
            next_k = last_k + 1
            await self.flush()

    def capture(self, motion: MotionSource, *, first: int, last: int) -> None:
        """Add frames first..last to the backlog, as the camera sees them now."""
        phone = self.phone
        self.backlog.extend(
            pose_frames(
                motion,
                phone_camera(phone),
                motion_start=self.fleet.motion_start,
                fps=phone.pose_fps,
                first=first,
                last=last,
                clock_offset_s=phone.clock_offset_s,
            )
        )
        max_backlog = max(1, round(POSE_BACKLOG_S * phone.pose_fps))
        while len(self.backlog) > max_backlog:
            self.backlog.popleft()
            phone.pose_frames_dropped += 1

    async def flush(self) -> None:
        """Send the backlog in batches; stops at the first failure that keeps the frames."""
        while self.backlog and not self.fleet.stopping.is_set():
            batch = [self.backlog[i] for i in range(min(self.batch_limit, len(self.backlog)))]
            outcome = await self._post(batch)
            if outcome == "sent" or outcome == "refused":
                for _ in batch:
                    self.backlog.popleft()
            elif outcome == "smaller":
                continue
            else:
                return

    async def _post(self, batch: list[PoseFrame]) -> str:
        """ "sent", "refused" (drop it), "smaller" (try again, smaller) or "kept" (later)."""
        phone = self.phone
        token = phone.token
        body: dict[str, Any] = {
            "format": POSE_FORMAT,
            "frames": [{"t": frame.t, "keypoints": frame.keypoints} for frame in batch],
        }
        try:
            response = await self.fleet.client.post(
                "/api/v1/pose", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            phone.errors += 1
            logger.info("%s: pose batch not sent (%s); keeping it", phone.label, exc)
            return "kept"
        status = response.status_code
        if status == 202:
            phone.pose_batches_sent += 1
            phone.pose_frames_sent += len(batch)
            phone.pose_last_frame = max(phone.pose_last_frame, batch[-1].index)
            if phone.pose_first_frame < 0:
                phone.pose_first_frame = batch[0].index
            return "sent"
        phone.errors += 1
        if status == 401:
            logger.warning("%s: pose refused the token; registering again", phone.label)
            await self.fleet.register(phone, stale_token=token)
            return "kept"
        if status == 413 and len(batch) > 1:
            self.batch_limit = max(1, len(batch) // 2)
            logger.info(
                "%s: pose batch too large; now %d frames at most", phone.label, self.batch_limit
            )
            return "smaller"
        if status >= 500:
            logger.info("%s: pose answered %s; keeping the frames", phone.label, status)
            return "kept"
        phone.pose_frames_dropped += len(batch)
        logger.warning("%s: pose batch refused, %s %s", phone.label, status, response.text[:300])
        return "refused"
