"""The capture round trip: the real CMU salsa take streamed by two simulated iPhones whose clocks
disagree with the server's, recorded in a live session on a real server, exported twice, and
read back: the same instant of the take from both phones lands at the same server time."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devices.simulator import Simulator
from devices.simulator_motion import BvhMotion
from devices.simulator_pose import phone_camera
from tests.support.server import RunningServer
from tests.support.shared_data import SHARED_DATA
from tests.support.waiting import until

SALSA = SHARED_DATA / "motion" / "cmu-salsa"
FPS = 120
FRAME_S = 1 / FPS
# Device clock minus server clock: one phone seconds ahead, the other behind.
OFFSETS = {1: 2.75, 2: -1.625}


@pytest.fixture(scope="module")
def takes() -> tuple[BvhMotion, BvhMotion]:
    lead, follow = SALSA / "60_10_scaled.bvh", SALSA / "61_10_scaled.bvh"
    if not (lead.exists() and follow.exists()):
        pytest.skip(
            f"needs the CMU salsa takes in {SALSA} (MOTIONMIX_SHARED_DATA or ../shared/data)"
        )
    return BvhMotion.load(lead), BvhMotion.load(follow)


def _shell(server: RunningServer, code: str) -> Any:
    done = server.manage("shell", "-c", code)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _start_session(server: RunningServer, device_ids: list[str]) -> dict[str, Any]:
    return dict(
        _shell(
            server,
            f"""
import json
from django.contrib.auth import get_user_model
from director import services
operator = get_user_model().objects.get(username={server.username!r})
session = services.session_create(name="Salsa round trip", operator=operator)
session = services.session_start(session_id=session.pk, device_ids={device_ids!r})
print(json.dumps({{"id": str(session.pk), "started_at": session.started_at.timestamp()}}))
""",
        )
    )


def _stop_session(server: RunningServer, session_id: str) -> None:
    _shell(
        server,
        f"""
from director import services
services.session_stop(session_id={session_id!r})
print("null")
""",
    )


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_two_phones_salsa_lines_up_on_the_server_timeline_after_export(
    server: RunningServer, takes: tuple[BvhMotion, BvhMotion], tmp_path: Path
) -> None:
    lead, follow = takes
    code = await asyncio.to_thread(server.pairing_code)

    async def code_source() -> str:
        return code

    # The take starts once the session is surely live (the phones register and the session
    # starts within a few seconds); the phones wait for it.
    motion_start = time.time() + 12.0
    simulator = Simulator(
        url=server.url,
        count=2,
        code_source=code_source,
        install_prefix="roundtrip",
        seed=11,
        motion=[lead, follow],
        pose_fps=FPS,
        motion_start=motion_start,
        video_size=(160, 120),  # the cameras publish when the session starts; keep it light
        video_fps=5,
    )
    for phone in simulator.phones:
        phone.clock_offset_s = OFFSETS[phone.index]
    running = asyncio.create_task(simulator.run())
    try:
        await until(
            lambda: all(p.device_id for p in simulator.phones) or running.done(),
            within=20,
            what="both phones registered",
        )
        session = await asyncio.to_thread(
            _start_session, server, [p.device_id for p in simulator.phones]
        )
        assert session["started_at"] < motion_start, "the session started after the take"
        last = lead.frame_count - 1
        await until(
            lambda: all(p.pose_last_frame >= last for p in simulator.phones) or running.done(),
            within=40,
            what="both phones sent the whole take",
        )
        assert not running.done(), server.log()
        # A few more heartbeats after the take, as a session goes on after a dance.
        await asyncio.sleep(2.5)
    finally:
        simulator.stop()
        await asyncio.wait_for(running, timeout=20)
    await asyncio.to_thread(_stop_session, server, session["id"])

    bundles = [tmp_path / "one", tmp_path / "two"]
    for bundle in bundles:
        await asyncio.to_thread(server.manage, "export_session", session["id"], str(bundle))
    assert _tree(bundles[0]) == _tree(bundles[1])  # byte-identical

    document = json.loads((bundles[0] / "session.json").read_text())
    by_id = {d["id"]: d for d in document["devices"]}
    server_times: dict[int, dict[int, float]] = {}
    for phone in simulator.phones:
        device = by_id[phone.device_id]
        assert device["clock"]["method"] in ("fit", "best_sample")
        fitted = device["clock"]["segments"][0]["offset_s"]
        assert fitted == pytest.approx(OFFSETS[phone.index], abs=0.002)
        frames = _read(bundles[0] / device["pose"]["file"])
        times: dict[int, float] = {}
        worst = 0.0
        for frame in frames:
            # Which frame of the take this is, from the phone's own stamp and its true offset.
            k = round((frame["t_device"] - OFFSETS[phone.index] - motion_start) * FPS)
            truth = motion_start + k * FRAME_S
            worst = max(worst, abs(frame["t_server"] - truth))
            times[k] = frame["t_server"]
        assert worst < FRAME_S, f"{phone.name}: {worst * 1000:.2f} ms off the server timeline"
        assert set(range(lead.frame_count)) <= set(times), "a frame of the take is missing"
        # The frames are the take as this phone's camera saw it.
        camera = phone_camera(phone)
        motion = lead if phone.index == 1 else follow
        by_k = {
            round((f["t_device"] - OFFSETS[phone.index] - motion_start) * FPS): f for f in frames
        }
        for k in range(0, lead.frame_count, 97):
            expected = camera.keypoints(motion.joints_at_many(np.array([k * FRAME_S])))[0]
            np.testing.assert_allclose(by_k[k]["keypoints"], expected, atol=2e-4)
        server_times[phone.index] = times

    # Leader and follower: every frame of the take lines up within one 120 fps frame.
    gaps = [abs(server_times[1][k] - server_times[2][k]) for k in range(lead.frame_count)]
    assert max(gaps) < FRAME_S, f"worst {max(gaps) * 1000:.2f} ms between the two phones"
