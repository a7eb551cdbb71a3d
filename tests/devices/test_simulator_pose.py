"""The virtual iPhones' pose: performers, the camera, the stream, and a real server taking it."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from devices.simulator import Simulator, VirtualIPhone
from devices.simulator_motion import COCO17_NAMES, BvhMotion, ProceduralDancer
from devices.simulator_pose import (
    POSE_BACKLOG_S,
    PinholeCamera,
    PoseStream,
    phone_camera,
    pose_frames,
)
from tests.support.server import RunningServer, running_server
from tests.support.shared_data import SHARED_DATA
from tests.support.waiting import until

MOTION_DIR = SHARED_DATA / "motion" / "cmu-salsa"
LEAD, FOLLOW = MOTION_DIR / "60_10_scaled.bvh", MOTION_DIR / "61_10_scaled.bvh"
KP = {name: i for i, name in enumerate(COCO17_NAMES)}
BONES = [
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
]


def _needs_takes() -> None:
    if not LEAD.exists() or not FOLLOW.exists():
        pytest.skip(f"the CMU salsa takes are not at {MOTION_DIR} (../shared/data/motion)")


@pytest.fixture(scope="module")
def lead() -> BvhMotion:
    _needs_takes()
    return BvhMotion.load(LEAD)


@pytest.fixture(scope="module")
def follow() -> BvhMotion:
    _needs_takes()
    return BvhMotion.load(FOLLOW)


def _phone(index: int = 1, **state: Any) -> VirtualIPhone:
    phone = VirtualIPhone(index=index, install_prefix="sim", rng=random.Random(index))
    phone.placement = {"azimuth_deg": 0.0, "distance_m": 3.0, "height_m": 1.4}
    for name, value in state.items():
        setattr(phone, name, value)
    return phone


def _camera(azimuth: float, **kwargs: Any) -> PinholeCamera:
    return PinholeCamera.from_placement(
        azimuth_deg=azimuth, distance_m=3.0, height_m=1.4, hfov_deg=73.0, **kwargs
    )


# --- The performers ---------------------------------------------------------------------------


def test_a_take_is_centred_on_the_set_but_keeps_its_path(lead: BvhMotion) -> None:
    root = lead.root
    np.testing.assert_allclose(root[:, :2].mean(axis=0), [0, 0], atol=1e-9)
    assert np.ptp(root[:, 0]) > 0.5  # the lead travels over a metre of the floor, as recorded
    assert 0.55 < root[:, 2].mean() < 0.75  # the hips' height is kept (a 1.3 m figure)
    feet = lead.keypoints[:, [KP["left_ankle"], KP["right_ankle"]], 2]
    assert np.median(feet.min(axis=1)) < 0.08


def test_a_take_gives_its_own_frames_on_the_frame_grid_and_loops(lead: BvhMotion) -> None:
    assert lead.fps == 120.0
    for k in (0, 1, 4, 599, 1196):
        np.testing.assert_array_equal(lead.joints_at(k / 120), lead.keypoints[k])
    # At 30 fps every fourth frame; past the end it starts again.
    np.testing.assert_array_equal(lead.joints_at(7 / 30), lead.keypoints[28])
    np.testing.assert_array_equal(lead.joints_at(1197 / 120 + 2 / 120), lead.keypoints[2])
    halfway = lead.joints_at(10.5 / 120)
    np.testing.assert_allclose(halfway, (lead.keypoints[10] + lead.keypoints[11]) / 2)


def test_a_takes_face_is_in_front_of_its_ears_and_above_its_shoulders(lead: BvhMotion) -> None:
    kp = lead.keypoints
    ears = (kp[:, KP["left_ear"]] + kp[:, KP["right_ear"]]) / 2
    shoulders = (kp[:, KP["left_shoulder"]] + kp[:, KP["right_shoulder"]]) / 2
    hips = (kp[:, KP["left_hip"]] + kp[:, KP["right_hip"]]) / 2
    # The torso faces along (left - right) x up; the nose must lie on that side of the ears.
    left = kp[:, KP["left_shoulder"]] - kp[:, KP["right_shoulder"]]
    facing = np.cross(left, shoulders - hips)
    nose_ahead = np.sum((kp[:, KP["nose"]] - ears) * facing, axis=1)
    assert np.mean(nose_ahead > 0) > 0.95
    assert (kp[:, KP["nose"], 2] > shoulders[:, 2]).all()


def test_the_two_partners_face_each_other_when_they_start(
    lead: BvhMotion, follow: BvhMotion
) -> None:
    # Seen by a camera at the set's front, one shows its left on the image's right (faces the
    # camera or away), and the partner the other way round: they face each other side-on.
    def torso_facing(motion: BvhMotion) -> np.ndarray:
        kp = motion.keypoints[0]
        left = kp[KP["left_shoulder"]] - kp[KP["right_shoulder"]]
        return np.cross(left, [0.0, 0.0, 1.0])[:2]

    lead_facing, follow_facing = torso_facing(lead), torso_facing(follow)
    cosine = (
        lead_facing @ follow_facing / np.linalg.norm(lead_facing) / np.linalg.norm(follow_facing)
    )
    assert cosine < -0.8


def test_the_procedural_dancer_is_deterministic_and_moves() -> None:
    times = np.linspace(0.0, 20.0, 241)
    first, second = (
        ProceduralDancer().joints_at_many(times),
        ProceduralDancer().joints_at_many(times),
    )

    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[60], ProceduralDancer().joints_at(times[60]))
    moved = np.linalg.norm(first[1:] - first[:-1], axis=2).max(axis=1)
    assert (moved > 0.005).all()  # something moves in every 1/12 s
    steps = np.ptp(first[:, KP["left_ankle"]] - first[:, KP["right_ankle"]], axis=0)
    assert np.linalg.norm(steps) > 0.3  # the feet step apart and back


def test_the_procedural_dancer_is_a_plausible_body_whose_bones_keep_their_length() -> None:
    times = np.linspace(0.0, 48.0, 1441)
    kp = ProceduralDancer().joints_at_many(times)

    for a, b in BONES:
        lengths = np.linalg.norm(kp[:, KP[a]] - kp[:, KP[b]], axis=1)
        assert np.ptp(lengths) < 1e-9, (a, b)
        assert 0.2 < lengths[0] < 0.5, (a, b)
    eyes = kp[:, KP["left_eye"], 2]
    assert eyes.min() > 1.5 and eyes.max() < 1.7
    ankles = kp[:, [KP["left_ankle"], KP["right_ankle"]], 2]
    assert ankles.min() > 0.07 and np.median(ankles.min(axis=1)) < 0.09
    hips = (kp[:, KP["left_hip"]] + kp[:, KP["right_hip"]]) / 2
    np.testing.assert_allclose(hips[:, :2].mean(axis=0), [0, 0], atol=0.05)


# --- The camera -------------------------------------------------------------------------------


def test_cameras_front_and_back_see_left_and_right_swapped() -> None:
    joints = ProceduralDancer().joints_at_many(np.array([0.0]))  # facing the front, about

    front = _camera(0.0).keypoints(joints)[0]
    back = _camera(180.0).keypoints(joints)[0]

    # Facing the camera, the subject's left shoulder is on the image's right; from behind,
    # on its left (as director/ghost_policies/facing.py reads it).
    assert front[KP["left_shoulder"], 0] > front[KP["right_shoulder"], 0]
    assert back[KP["left_shoulder"], 0] < back[KP["right_shoulder"], 0]
    # From the front the face is seen, from behind it is hidden.
    assert front[KP["nose"], 2] > 0.9
    assert back[KP["nose"], 2] < 0.5


def test_the_ultra_wide_shows_the_figure_smaller_than_the_main_lens() -> None:
    joints = ProceduralDancer().joints_at_many(np.array([1.0]))

    def figure_height(phone: VirtualIPhone) -> float:
        y = phone_camera(phone).keypoints(joints)[0, :, 1]
        return float(y.max() - y.min())

    wide = figure_height(_phone(lens="wide", zoom=1.0))
    ultra = figure_height(_phone(lens="ultra_wide", zoom=0.5))
    tele = figure_height(_phone(lens="wide", zoom=2.0))  # digital zoom on the main lens
    # tan(106 / 2) against tan(73 / 2): the ultra-wide's figure is 0.56 of the main's.
    assert ultra / wide == pytest.approx(
        np.tan(np.radians(36.5)) / np.tan(np.radians(53)), rel=0.03
    )
    assert tele / wide == pytest.approx(2.0, rel=0.03)


def test_the_main_lens_sees_the_whole_dancer_from_every_stand_2_4_m_away_or_more() -> None:
    joints = ProceduralDancer().joints_at_many(np.linspace(0, 24, 97))
    phones = [
        VirtualIPhone(index=index, install_prefix="sim", rng=random.Random(index))
        for index in range(1, 7)
    ]
    # Closer stands (2.2 and 1.6 m) crop the feet as the dancer drifts their way.
    far = [phone for phone in phones if phone.placement["distance_m"] >= 2.4]
    assert len(far) == 4
    for phone in far:
        kp = phone_camera(phone).keypoints(joints)
        assert ((kp[..., :2] >= 0) & (kp[..., :2] <= 1)).all(), phone.placement
        assert ((kp[..., 2] >= 0.3) & (kp[..., 2] <= 1)).all()


def test_joints_off_the_image_or_hidden_by_the_body_get_a_low_confidence() -> None:
    joints = ProceduralDancer().joints_at_many(np.array([0.0]))
    close = PinholeCamera.from_placement(
        azimuth_deg=0.0, distance_m=1.0, height_m=1.5, hfov_deg=27.0, aim_height_m=1.5
    )
    kp = close.keypoints(joints)[0]
    assert kp[KP["left_ankle"], 1] > 1.0  # below the frame
    assert kp[KP["left_ankle"], 2] <= 0.05
    assert kp[KP["nose"], 2] > 0.9

    side = _camera(90.0).keypoints(joints)[0]  # at the subject's right
    assert side[KP["left_shoulder"], 2] < 0.5 < side[KP["right_shoulder"], 2]
    assert side[KP["left_ear"], 2] < 0.5 < side[KP["right_ear"], 2]


def test_a_mirrored_view_flips_x_and_the_phones_flip_leaves_its_pose_alone() -> None:
    joints = ProceduralDancer().joints_at_many(np.array([2.0]))
    plain = _camera(30.0).keypoints(joints)
    mirrored = _camera(30.0, mirror_x=True).keypoints(joints)

    np.testing.assert_allclose(mirrored[..., 0], 1 - plain[..., 0])
    np.testing.assert_allclose(mirrored[..., 1:], plain[..., 1:])
    # Flip is a view setting here (stills and video keep the sensor's pixels): the phone
    # reports the pose its sensor sees, flipped or not.
    flipped = phone_camera(_phone(flip_horizontal=True, flip_vertical=True)).keypoints(joints)
    np.testing.assert_array_equal(flipped, phone_camera(_phone()).keypoints(joints))


def test_a_portrait_phone_sees_a_taller_narrower_image() -> None:
    joints = ProceduralDancer().joints_at_many(np.array([0.0]))
    landscape = phone_camera(_phone(orientation="landscape_left")).keypoints(joints)[0]
    portrait = phone_camera(_phone(orientation="portrait")).keypoints(joints)[0]

    width = np.ptp(landscape[:, 0]), np.ptp(portrait[:, 0])
    height = np.ptp(landscape[:, 1]), np.ptp(portrait[:, 1])
    # 640x480 on end: the same figure spans 4/3 more of the width and 3/4 of the height.
    assert width[1] / width[0] == pytest.approx(4 / 3, rel=1e-6)
    assert height[1] / height[0] == pytest.approx(3 / 4, rel=1e-6)


# --- Frames and their clocks ------------------------------------------------------------------


def test_two_phones_stamp_the_same_motion_frame_each_on_its_own_clock(
    lead: BvhMotion,
) -> None:
    start = 1_790_000_000.25
    camera = _camera(0.0)
    ahead = pose_frames(
        lead, camera, motion_start=start, fps=120, first=240, last=299, clock_offset_s=0.3
    )
    behind = pose_frames(
        lead, camera, motion_start=start, fps=120, first=240, last=299, clock_offset_s=-0.25
    )

    assert [f.index for f in ahead] == list(range(240, 300))
    for a, b in zip(ahead, behind, strict=True):
        assert a.t - 0.3 == pytest.approx(start + a.index / 120, abs=1e-6)
        assert a.t - b.t == pytest.approx(0.55, abs=1e-6)
        assert a.keypoints == b.keypoints
    expected = np.round(camera.keypoints(lead.keypoints[[240]]), 5)[0].tolist()
    assert ahead[0].keypoints == expected


async def test_a_phone_keeps_its_frames_while_the_server_is_unreachable_up_to_a_limit() -> None:
    async def no_code() -> str:
        raise AssertionError("never registers")

    fleet = Simulator(url="http://127.0.0.1:9", count=1, code_source=no_code, pose_fps=30)
    phone = fleet.phones[0]
    stream = PoseStream(fleet, phone)
    async with httpx.AsyncClient(base_url=fleet.url, timeout=2.0) as client:
        fleet._client = client
        stream.capture(ProceduralDancer(), first=0, last=14)
        await stream.flush()  # nobody listens on port 9

        assert len(stream.backlog) == 15
        assert phone.errors == 1 and phone.pose_frames_sent == 0
        stream.capture(ProceduralDancer(), first=15, last=15 + round(POSE_BACKLOG_S * 30))
        assert len(stream.backlog) == round(POSE_BACKLOG_S * 30)
        assert phone.pose_frames_dropped == 16
        assert stream.backlog[0].index == 16  # the oldest went first
        fleet._client = None


def test_pose_rates_beyond_what_a_phone_does_are_refused() -> None:
    async def no_code() -> str:
        return ""

    with pytest.raises(ValueError, match="pose_fps 500"):
        Simulator(url="http://127.0.0.1:9", count=1, code_source=no_code, pose_fps=500)


# --- Against a real server ------------------------------------------------------------------

# Small enough that the phones' half-second batches at 120 fps (60 frames) are refused with
# 413 at first, so the stream's halving runs against the real server.
SERVER_MAX_FRAMES = 40


@pytest.fixture(scope="module")
def pose_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("pose-server")
    extra_env = {"MOTIONMIX_POSE_MAX_FRAMES": str(SERVER_MAX_FRAMES)}
    with running_server(workdir, extra_env=extra_env, celery=False) as running:
        yield running


def _stored_pose(server: RunningServer, prefix: str) -> dict[str, Any]:
    code = f"""
import json
from devices.models import Device, PoseBatch
out = {{}}
for d in Device.objects.filter(install_id__startswith={prefix!r}):
    batches = PoseBatch.objects.filter(device=d).order_by("first_t")
    out[d.install_id] = {{
        "formats": sorted({{b.format for b in batches}}),
        "frames": [f for b in batches for f in json.loads(b.frames)],
        "pose_fps": d.pose_fps,
    }}
print(json.dumps(out))
"""
    done = server.manage("shell", "-c", code)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def test_two_phones_stream_two_takes_on_their_own_clocks_to_a_real_server(
    pose_server: RunningServer, lead: BvhMotion, follow: BvhMotion
) -> None:
    code = await asyncio.to_thread(pose_server.pairing_code)

    async def code_source() -> str:
        return code

    fps = 120
    start = time.time() - 2.0  # the take began 2 s ago; the phones join it where it is
    simulator = Simulator(
        url=pose_server.url,
        count=2,
        code_source=code_source,
        install_prefix="pose",
        seed=3,
        motion=[lead, follow],
        pose_fps=fps,
        motion_start=start,
    )
    offsets = {1: 0.3125, 2: -0.2}
    for phone in simulator.phones:
        phone.clock_offset_s = offsets[phone.index]
    running = asyncio.create_task(simulator.run())
    try:
        await until(
            lambda: all(p.pose_frames_sent >= fps for p in simulator.phones) or running.done(),
            within=20,
            what="each phone sent a second of pose",
        )
        assert not running.done(), pose_server.log()
    finally:
        simulator.stop()
        await asyncio.wait_for(running, timeout=15)

    stored = await asyncio.to_thread(_stored_pose, pose_server, "pose")
    for phone in simulator.phones:
        assert phone.motion is (lead if phone.index == 1 else follow)
        assert phone.pose_frames_dropped == 0
        row = stored[phone.install_id]
        assert row["formats"] == ["coco17"]
        frames = row["frames"]
        assert len(frames) == phone.pose_frames_sent
        # Device-clock stamps on the 1/fps grid of the shared motion clock, one per frame.
        grid = [(t - phone.clock_offset_s - start) * fps for t, _ in frames]
        indices = [round(g) for g in grid]
        assert max(abs(g - k) for g, k in zip(grid, indices, strict=True)) < 1e-3
        assert indices == list(range(phone.pose_first_frame, phone.pose_last_frame + 1))
        # And each frame is that motion frame as this phone's camera sees it.
        camera = phone_camera(phone)
        for (_, values), k in list(zip(frames, indices, strict=True))[::37]:
            expected = camera.keypoints(phone.motion.joints_at_many(np.array([k / fps])))[0]
            np.testing.assert_allclose(np.reshape(values, (17, 3)), expected, atol=2e-4)
        assert row["pose_fps"] == pytest.approx(fps, rel=0.02)
    # The two phones sent the same instants of the take, each on its own clock.
    first = max(p.pose_first_frame for p in simulator.phones)
    t1 = {round((t - 0.3125 - start) * fps): t for t, _ in stored["pose-1"]["frames"]}
    t2 = {round((t + 0.2 - start) * fps): t for t, _ in stored["pose-2"]["frames"]}
    assert t1[first] - t2[first] == pytest.approx(0.5125, abs=2e-6)


async def test_a_batch_the_server_refuses_is_dropped_and_the_phone_lives_on(
    pose_server: RunningServer,
) -> None:
    code = await asyncio.to_thread(pose_server.pairing_code)

    async def code_source() -> str:
        return code

    simulator = Simulator(
        url=pose_server.url, count=1, code_source=code_source, install_prefix="reset", pose_fps=30
    )
    phone = simulator.phones[0]
    # A phone whose clock was reset to 1970: its frames' times are refused (400).
    phone.clock_offset_s = 1000.0 - time.time()
    running = asyncio.create_task(simulator.run())
    try:
        await until(
            lambda: phone.pose_frames_dropped >= 30 or running.done(),
            within=20,
            what="a second of refused pose",
        )
        dropped = phone.pose_frames_dropped
        await until(
            lambda: phone.pose_frames_dropped > dropped or running.done(),
            within=5,
            what="the stream going on after a refusal",
        )
        assert not running.done()
    finally:
        simulator.stop()
        await asyncio.wait_for(running, timeout=15)
    assert phone.pose_frames_sent == 0
    assert phone.errors >= 2
