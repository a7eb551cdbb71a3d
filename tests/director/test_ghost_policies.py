"""Ghost's policies: each one on snapshots built by hand, the facing estimator on synthetic and
real keypoints, the snapshot builder on real rows, and the runner and its task end to end."""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from devices import services as device_services
from devices.models import Device
from director import coverage, ghost, services
from director.ghost_payloads import validate_payload
from director.ghost_policies import runner
from director.ghost_policies.facing import (
    UnsupportedPoseFormat,
    angle_between,
    estimate_facing,
    relative_yaw,
)
from director.ghost_policies.policies import (
    CadencePolicy,
    CoverageGapPolicy,
    FacingPolicy,
    HealthPolicy,
    HeroStalenessPolicy,
    Idea,
    Policy,
    default_policies,
)
from director.ghost_policies.snapshot import (
    CameraState,
    PoseFrame,
    ProposalRecord,
    SessionSnapshot,
    coverage_gaps,
    session_snapshot,
)
from director.models import GhostProposal, PhotoshootSession, Still
from director.tasks import ghost_policies_tick
from ledger.models import ProductionEvent
from tests.support.api import record_beat, register_device
from tests.support.shared_data import SHARED_DATA

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
REAL_POSE = SHARED_DATA / "pose" / "vtest_mediapipe_pose.json.gz"
State = GhostProposal.State


# --- Snapshots by hand ---------------------------------------------------------------------------


def cam(
    name: str,
    azimuth: float | None = None,
    *,
    online: bool = True,
    thermal: str = "nominal",
    battery: int | None = 80,
    charging: bool = False,
    kind: str = "iphone",
) -> CameraState:
    return CameraState(
        id=uuid.uuid5(uuid.NAMESPACE_DNS, name),
        name=name,
        kind=kind,
        online=online,
        azimuth_deg=azimuth,
        distance_m=None if azimuth is None else 3.0,
        thermal=thermal,
        battery_percent=battery,
        charging=charging,
    )


def snap(
    *cameras: CameraState,
    hero: CameraState | None = None,
    on_air_s: float = 5.0,
    started_s_ago: float = 5.0,
    still_s_ago: float | None = None,
    pose: dict[uuid.UUID, tuple[PoseFrame, ...]] | None = None,
    proposals: Sequence[ProposalRecord] = (),
) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=uuid.uuid4(),
        now=NOW,
        started_at=NOW - timedelta(seconds=started_s_ago),
        devices=cameras,
        hero_id=hero.id if hero else None,
        hero_on_air_since=NOW - timedelta(seconds=on_air_s) if hero else None,
        last_still_at=None if still_s_ago is None else NOW - timedelta(seconds=still_s_ago),
        gaps=coverage_gaps(cameras),
        proposals=tuple(proposals),
        pose=pose or {},
    )


# --- Synthetic poses ------------------------------------------------------------------------------

# A body in metres: (forward, left, up) from the point between the feet. The nose stands a bit
# further forward than the estimator's constant assumes, so the tests do not just echo it.
BODY = {
    "nose": (0.18, 0.0, 1.60),
    "left_eye": (0.15, 0.035, 1.65),
    "right_eye": (0.15, -0.035, 1.65),
    "left_ear": (0.0, 0.075, 1.62),
    "right_ear": (0.0, -0.075, 1.62),
    "left_shoulder": (0.0, 0.18, 1.45),
    "right_shoulder": (0.0, -0.18, 1.45),
    "left_hip": (0.0, 0.10, 0.95),
    "right_hip": (0.0, -0.10, 0.95),
}
ORDER = {
    "coco17": [
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ],
    "mediapipe33": [
        "nose",
        "left_eye_inner",
        "left_eye",
        "left_eye_outer",
        "right_eye_inner",
        "right_eye",
        "right_eye_outer",
        "left_ear",
        "right_ear",
        "mouth_left",
        "mouth_right",
        "left_shoulder",
        "right_shoulder",
        *[f"other_{i}" for i in range(13, 23)],
        "left_hip",
        "right_hip",
        *[f"other_{i}" for i in range(25, 33)],
    ],
}
PIXELS_PER_M = 450.0


def _visible(joint: str, yaw_rad: float) -> bool:
    if joint in ("nose", "left_eye", "right_eye"):
        return math.cos(yaw_rad) > -0.3
    if joint == "left_ear":
        return math.sin(yaw_rad) > -0.2
    if joint == "right_ear":
        return math.sin(yaw_rad) < 0.2
    return True  # pose models place shoulders and hips from behind too


def pose_frame(fmt: str, *, facing_deg: float, camera: CameraState, t: float) -> PoseFrame:
    """What `camera` sees of a subject whose torso faces `facing_deg`: its 3D body projected
    onto the camera's image (x to the right, y down, pixels), hidden joints at low confidence."""
    assert camera.azimuth_deg is not None
    yaw = math.radians(facing_deg - camera.azimuth_deg)
    points: list[tuple[float, float, float]] = []
    for joint in ORDER[fmt]:
        base = joint.replace("_inner", "").replace("_outer", "")
        forward, left, up = BODY.get(base, (0.0, 0.0, 1.2))
        x = 640 + PIXELS_PER_M * (-forward * math.sin(yaw) + left * math.cos(yaw))
        y = 720 - PIXELS_PER_M * up
        seen = base in BODY and _visible(base, yaw)
        points.append((x, y, 0.9 if seen else 0.05))
    return PoseFrame(device_id=camera.id, t=t, format=fmt, keypoints=tuple(points))


def poses(
    fmt: str, facing_deg: float, cameras: Iterable[CameraState], *, age_s: float = 0.5
) -> dict[uuid.UUID, tuple[PoseFrame, ...]]:
    t = NOW.timestamp() - age_s
    return {
        c.id: (pose_frame(fmt, facing_deg=facing_deg, camera=c, t=t),)
        for c in cameras
        if c.azimuth_deg is not None
    }


def ring() -> list[CameraState]:
    return [cam("Cam A", 0), cam("Cam B", 90), cam("Cam C", 180), cam("Cam D", 270)]


# --- Health --------------------------------------------------------------------------------------


def test_health_moves_the_hero_off_a_critical_camera_to_the_healthiest_one() -> None:
    a = cam("Cam A", thermal="critical")
    b = cam("Cam B", thermal="fair", battery=90)
    c = cam("Cam C", thermal="nominal", battery=60)
    ideas = HealthPolicy().propose(snap(a, b, c, hero=a))
    # Best first, then the alternatives the runner falls back on after a veto.
    assert [(i.kind, i.target_ids) for i in ideas] == [
        ("switch_hero", (c.id,)),
        ("switch_hero", (b.id,)),
    ]
    assert ideas[0].rationale == "Cam A is overheating (critical); move the hero to Cam C."
    assert ideas[0].confidence == pytest.approx(0.95)


def test_health_moves_the_hero_off_a_nearly_flat_battery() -> None:
    a, b = cam("Cam A", battery=9), cam("Cam B")
    ideas = HealthPolicy().propose(snap(a, b, hero=a))
    assert [i.target_ids for i in ideas] == [(b.id,)]
    assert "9 % battery" in ideas[0].rationale


def test_health_moves_the_hero_off_a_camera_that_went_offline() -> None:
    a, b = cam("Cam A", online=False), cam("Cam B")
    ideas = HealthPolicy().propose(snap(a, b, hero=a))
    assert [i.rationale for i in ideas] == ["Cam A is offline; move the hero to Cam B."]


@pytest.mark.parametrize(
    "hero",
    [
        cam("Cam A", battery=9, charging=True),
        cam("Cam A", battery=15),
        cam("Cam A", thermal="fair", battery=None),
    ],
    ids=["charging", "at-the-threshold", "fair-and-unknown-battery"],
)
def test_health_leaves_a_hero_that_is_well_enough_alone(hero: CameraState) -> None:
    assert HealthPolicy().propose(snap(hero, cam("Cam B"), hero=hero)) == []


def test_health_never_proposes_an_offline_overheating_or_flat_camera() -> None:
    a = cam("Cam A", thermal="serious")
    others = [
        cam("Cam B", online=False),
        cam("Cam C", thermal="critical"),
        cam("Cam D", battery=5),
    ]
    assert HealthPolicy().propose(snap(a, *others, hero=a)) == []


def test_health_takes_its_battery_threshold_from_the_constructor() -> None:
    a, b = cam("Cam A", battery=25), cam("Cam B")
    assert HealthPolicy().propose(snap(a, b, hero=a)) == []
    assert len(HealthPolicy(min_battery_percent=30).propose(snap(a, b, hero=a))) == 1


# --- Coverage gap --------------------------------------------------------------------------------


def test_coverage_gap_moves_the_camera_that_closes_the_largest_gap_best() -> None:
    a, b, c = cam("Cam A", 0), cam("Cam B", 90), cam("Cam C", 95)
    ideas = CoverageGapPolicy().propose(snap(a, b, c, hero=a))
    assert [i.target_ids for i in ideas] == [(b.id,), (c.id,)]
    idea = ideas[0]
    assert (idea.kind, idea.target_ids, dict(idea.payload)) == (
        "reposition",
        (b.id,),
        {"azimuth_deg": 230.0},
    )
    assert idea.rationale == "Nobody covers 125°\u2013330° (205°); move Cam B to 230°."
    assert 0 < idea.confidence <= 1


def test_coverage_gap_never_moves_the_hero() -> None:
    a, b = cam("Cam A", 0), cam("Cam B", 180, online=False)
    assert CoverageGapPolicy().propose(snap(a, b, hero=a)) == []


def test_coverage_gap_is_quiet_below_its_threshold() -> None:
    cams = ring()
    assert CoverageGapPolicy().propose(snap(*cams, hero=cams[0])) == []
    a, b, c = cam("Cam A", 0), cam("Cam B", 120), cam("Cam C", 240)
    assert snap(a, b, c).gaps[0].size_deg == pytest.approx(60)
    assert CoverageGapPolicy().propose(snap(a, b, c, hero=a)) == []
    assert len(CoverageGapPolicy(gap_deg=45).propose(snap(a, b, c, hero=a))) == 0  # no gain


def test_coverage_gap_ignores_offline_unplaced_cameras_and_webcams() -> None:
    a = cam("Cam A", 0)
    webcam = cam("Desk", 180, kind="webcam")
    offline = cam("Cam B", 200, online=False)
    unplaced = cam("Cam C")
    near = cam("Cam D", 20)
    shot = snap(a, webcam, offline, unplaced, near, hero=a)
    assert shot.gaps[0].size_deg == pytest.approx(280)
    ideas = CoverageGapPolicy().propose(shot)
    assert [i.target_ids for i in ideas] == [(near.id,)]


def test_coverage_gap_says_nothing_when_no_camera_is_placed() -> None:
    a, b = cam("Cam A"), cam("Cam B")
    assert CoverageGapPolicy().propose(snap(a, b, hero=a)) == []


# --- Hero staleness ------------------------------------------------------------------------------


def test_a_stale_hero_gives_way_to_the_camera_farthest_round() -> None:
    a, b, c = cam("Cam A", 0), cam("Cam B", 90), cam("Cam C", 180)
    ideas = HeroStalenessPolicy().propose(snap(a, b, c, hero=a, on_air_s=50))
    assert [(i.kind, i.target_ids) for i in ideas] == [
        ("switch_hero", (c.id,)),
        ("switch_hero", (b.id,)),
    ]
    assert ideas[0].rationale == (
        "Cam A has been on air for 50 s; switch to Cam C for an angle 180° round."
    )


def test_a_hero_on_air_for_less_than_the_threshold_is_not_stale() -> None:
    a, b = cam("Cam A", 0), cam("Cam B", 180)
    assert HeroStalenessPolicy().propose(snap(a, b, hero=a, on_air_s=44)) == []
    assert len(HeroStalenessPolicy(stale_s=30).propose(snap(a, b, hero=a, on_air_s=44))) == 1


def test_hero_staleness_skips_offline_and_unhealthy_cameras() -> None:
    a, b = cam("Cam A", 0), cam("Cam B", 60)
    c, d = cam("Cam C", 180, thermal="critical"), cam("Cam D", 170, online=False)
    e = cam("Cam E", 190, battery=10)
    ideas = HeroStalenessPolicy().propose(snap(a, b, c, d, e, hero=a, on_air_s=60))
    assert [i.target_ids for i in ideas] == [(b.id,)]
    assert HeroStalenessPolicy().propose(snap(a, c, d, e, hero=a, on_air_s=60)) == []


def test_hero_staleness_prefers_the_camera_the_subject_faces() -> None:
    a, b, c, d = ring()
    shot = snap(a, b, c, d, hero=a, on_air_s=60, pose=poses("coco17", 90, [a, b, c, d]))
    ideas = HeroStalenessPolicy().propose(shot)
    # Cam B is faced; then the farthest round from the hero, then the nearer ones.
    assert [i.target_ids for i in ideas] == [(b.id,), (c.id,), (d.id,)]
    assert "the side the subject faces" in ideas[0].rationale


# --- Cadence -------------------------------------------------------------------------------------


def test_cadence_proposes_a_capture_all_after_a_quiet_spell() -> None:
    a, b = cam("Cam A"), cam("Cam B")
    ideas = CadencePolicy().propose(snap(a, b, hero=a, started_s_ago=70))
    assert [(i.kind, i.target_ids) for i in ideas] == [("capture_all", ())]
    assert ideas[0].rationale == "No stills yet for 70 s; capture all cameras now."
    later = CadencePolicy().propose(snap(a, b, hero=a, started_s_ago=600, still_s_ago=90))
    assert later[0].rationale == "No stills for 90 s; capture all cameras now."


def test_cadence_is_quiet_after_a_recent_still_or_without_an_online_camera() -> None:
    a = cam("Cam A")
    assert CadencePolicy().propose(snap(a, hero=a, started_s_ago=600, still_s_ago=20)) == []
    assert CadencePolicy().propose(snap(a, hero=a, started_s_ago=30)) == []
    gone = cam("Cam A", online=False)
    assert CadencePolicy().propose(snap(gone, hero=gone, started_s_ago=600)) == []


# --- Facing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["coco17", "mediapipe33"])
@pytest.mark.parametrize("facing", [0, 45, 90, 135, 200, 300])
def test_the_estimator_finds_where_the_subject_faces_from_every_side(
    fmt: str, facing: float
) -> None:
    cams = ring()
    estimate = estimate_facing(cams, poses(fmt, facing, cams), now_ts=NOW.timestamp(), max_age_s=3)
    assert estimate is not None
    assert estimate.cameras == 4
    assert angle_between(estimate.azimuth_deg, facing) < 15
    assert estimate.confidence > 0.5


@pytest.mark.parametrize("facing", [30, 90, 160, 250, 330])
def test_one_camera_alone_reads_the_side_the_subject_turned_to(facing: float) -> None:
    only = cam("Cam A", 0)
    estimate = estimate_facing(
        [only], poses("coco17", facing, [only]), now_ts=NOW.timestamp(), max_age_s=3
    )
    assert estimate is not None
    assert angle_between(estimate.azimuth_deg, facing) < 20


@pytest.mark.parametrize("fmt", ["coco17", "mediapipe33"])
def test_facing_proposes_the_camera_the_subject_faces_as_hero(fmt: str) -> None:
    a, b, c, d = ring()
    shot = snap(a, b, c, d, hero=a, pose=poses(fmt, 90, [a, b, c, d]))
    ideas = FacingPolicy().propose(shot)
    assert [(i.kind, i.target_ids) for i in ideas] == [("switch_hero", (b.id,))]
    assert ideas[0].rationale.startswith("The subject faces Cam B (about ")
    assert 0.5 < ideas[0].confidence <= 1
    # What it proposes passes the proposal contract as it is (the runner validates it).
    assert validate_payload(ideas[0].kind, ideas[0].payload) == ideas[0].payload


def test_facing_is_quiet_when_the_hero_is_the_camera_faced() -> None:
    a, b, c, d = ring()
    assert FacingPolicy().propose(snap(a, b, c, d, hero=b, pose=poses("coco17", 95, ring()))) == []


def test_facing_does_not_flip_the_hero_when_the_subject_faces_between_two_cameras() -> None:
    a, b = cam("Cam A", 0), cam("Cam B", 90)
    assert FacingPolicy().propose(snap(a, b, hero=a, pose=poses("coco17", 50, [a, b]))) == []


def test_facing_ignores_stale_frames() -> None:
    a, b, c, d = ring()
    old = poses("coco17", 90, [a, b, c, d], age_s=10)
    assert FacingPolicy().propose(snap(a, b, c, d, hero=a, pose=old)) == []
    assert FacingPolicy(max_age_s=30).propose(snap(a, b, c, d, hero=a, pose=old)) != []


def test_facing_never_proposes_an_overheating_camera() -> None:
    a, c, d = cam("Cam A", 0), cam("Cam C", 180), cam("Cam D", 270)
    b = cam("Cam B", 90, thermal="critical")
    shot = snap(a, b, c, d, hero=a, pose=poses("coco17", 90, [a, b, c, d]))
    assert FacingPolicy().propose(shot) == []


def test_vision19_frames_are_refused_until_their_joint_order_is_known() -> None:
    a = cam("Cam A", 0)
    frame = PoseFrame(a.id, NOW.timestamp(), "vision19", tuple((0.0, 0.0, 1.0) for _ in range(19)))
    with pytest.raises(UnsupportedPoseFormat, match="coco17, mediapipe33"):
        relative_yaw(frame)
    assert estimate_facing([a], {a.id: (frame,)}, now_ts=NOW.timestamp(), max_age_s=3) is None


def test_a_frame_without_shoulders_says_nothing() -> None:
    frame = pose_frame("coco17", facing_deg=0, camera=cam("Cam A", 0), t=0)
    hidden = list(frame.keypoints)
    hidden[5] = (hidden[5][0], hidden[5][1], 0.0)
    assert relative_yaw(PoseFrame(frame.device_id, 0, "coco17", tuple(hidden))) is None


def test_the_estimator_agrees_with_mediapipes_own_3d_landmarks_on_real_footage() -> None:
    if not REAL_POSE.exists():
        pytest.skip(f"the shared pose data is missing ({REAL_POSE})")
    with gzip.open(REAL_POSE, "rt") as fh:
        data = json.load(fh)
    errors: list[float] = []
    same_side: list[bool] = []
    for frame in data["frames"]:
        if not frame.get("kp2d") or not frame.get("kp3d_world"):
            continue
        # MediaPipe's rows are [x, y, z, visibility]; the device contract sends [x, y, conf].
        keypoints = tuple((p[0], p[1], p[3]) for p in frame["kp2d"])
        yaw = relative_yaw(PoseFrame(uuid.uuid4(), frame["t"], "mediapipe33", keypoints))
        if yaw is None:
            continue
        # MediaPipe's metric world landmarks: x to the image's right, z away from the camera.
        left, right = frame["kp3d_world"][11], frame["kp3d_world"][12]
        truth = math.degrees(math.atan2(-(left[2] - right[2]), left[0] - right[0]))
        errors.append(angle_between(truth, yaw.yaw_deg))
        same_side.append((abs(truth) < 90) == (abs(yaw.yaw_deg) < 90))
    assert len(errors) > 400
    errors.sort()
    assert errors[len(errors) // 2] < 20
    assert sum(same_side) / len(same_side) > 0.9


# --- Policies together ---------------------------------------------------------------------------


def test_the_default_policies_run_in_priority_order_health_first() -> None:
    assert [(p.name, p.priority) for p in default_policies()] == [
        ("health", 50),
        ("facing", 40),
        ("coverage-gap", 30),
        ("hero-staleness", 20),
        ("cadence", 10),
    ]


def test_policies_propose_only_kinds_a_proposal_can_have_with_short_rationales() -> None:
    a, b, c, d = ring()
    sick = cam("Cam A", 0, thermal="critical")
    shots = [
        snap(sick, b, c, d, hero=sick),
        snap(a, b, c, d, hero=a, pose=poses("coco17", 90, [a, b, c, d])),
        snap(a, cam("Cam B", 20), hero=a),
        snap(a, b, hero=a, on_air_s=600),
        snap(a, b, hero=a, started_s_ago=600),
    ]
    ideas = [
        idea for shot in shots for policy in default_policies() for idea in policy.propose(shot)
    ]
    assert {i.kind for i in ideas} == {"switch_hero", "reposition", "capture_all"}
    assert {i.kind for i in ideas} <= set(GhostProposal.Kind.values)
    assert all(0 < len(i.rationale) <= 200 and 0 <= i.confidence <= 1 for i in ideas)


# --- The snapshot builder on real rows ------------------------------------------------------------


def _live(operator: Any, *devices: Device, mode: str = "supervised") -> PhotoshootSession:
    session = services.session_create(name="Policy take", operator=operator)
    PhotoshootSession.objects.filter(pk=session.pk).update(ghost_mode=mode)
    return services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])


def _still(session: PhotoshootSession, device: Device, at: datetime) -> Still:
    return Still.objects.create(
        session=session,
        device=device,
        seq=Still.objects.filter(session=session, device=device).count() + 1,
        sha256=uuid.uuid4().hex * 2,
        file="stills/x.jpg",
        content_type="image/jpeg",
        size_bytes=1,
        width=1,
        height=1,
        captured_at_device=at.timestamp(),
        captured_at=at,
        received_at=at,
        lens="wide",
        zoom=1.0,
    )


@pytest.mark.django_db
def test_the_snapshot_reads_devices_hero_time_stills_coverage_and_proposals(
    operator: Any, django_assert_max_num_queries: Any
) -> None:
    a = register_device("pol-a", name="Cam A").device
    b = register_device("pol-b", name="Cam B").device
    c = register_device("pol-c", name="Cam C").device
    record_beat(a.pk, battery=0.42, thermal="fair", lens="wide", zoom=1.0)
    device_services.device_place(device_id=a.pk, azimuth_deg=0, distance_m=3.0, height_m=1.5)
    device_services.device_place(device_id=b.pk, azimuth_deg=120)
    session = _live(operator, a, b, c)

    with django_assert_max_num_queries(8):
        shot = session_snapshot(session_id=session.pk)

    assert (shot.status, shot.ghost_mode, shot.hero_id) == ("live", "supervised", a.pk)
    assert [d.name for d in shot.devices] == ["Cam A", "Cam B", "Cam C"]
    first = shot.devices[0]
    assert (first.azimuth_deg, first.distance_m, first.height_m) == (0.0, 3.0, 1.5)
    assert (first.battery_percent, first.thermal, first.lens, first.online) == (
        42,
        "fair",
        "wide",
        True,
    )
    assert first.hfov_deg == pytest.approx(73.0)
    assert [lens.id for lens in first.lenses] == ["ultra_wide", "wide", "tele"]
    assert shot.devices[2].azimuth_deg is None
    assert shot.gaps == tuple(coverage.gaps([0.0, 120.0]))
    assert shot.hero_on_air_since == session.started_at
    assert (shot.last_still_at, shot.proposals, dict(shot.pose)) == (None, (), {})

    services.session_hero_switch(session_id=session.pk, device_id=b.pk, switched_by="op")
    switched = ProductionEvent.objects.get(stream=str(session.pk), type="hero.switched")
    taken = timezone.now() - timedelta(seconds=3)
    _still(session, a, taken - timedelta(seconds=10))
    _still(session, b, taken)
    proposal = ghost.proposal_create(
        session_id=session.pk,
        kind="switch_hero",
        target_ids=[c.pk],
        payload={},
        rationale="Try Cam C.",
        confidence=0.5,
        policy="hero-staleness",
    )
    shot = session_snapshot(session_id=session.pk)
    assert (shot.hero_id, shot.hero_on_air_since) == (b.pk, switched.occurred_at)
    assert shot.last_still_at == taken
    assert shot.proposals == (
        ProposalRecord(
            policy="hero-staleness",
            kind="switch_hero",
            target_ids=frozenset({c.pk}),
            payload={},
            state="pending",
            created_at=proposal.created_at,
            decided_at=None,
        ),
    )


@pytest.mark.django_db
def test_the_snapshot_leaves_old_decided_proposals_out_but_keeps_pending_ones(
    operator: Any,
) -> None:
    a = register_device("pol-a", name="Cam A").device
    session = _live(operator, a)
    old = ghost.proposal_create(
        session_id=session.pk,
        kind="capture_all",
        target_ids=[],
        payload={},
        rationale="Shoot.",
        confidence=0.5,
        policy="cadence",
    )
    ghost.proposal_veto(proposal_id=old.pk, decided_by="op", reason="wrong_moment")
    long_ago = timezone.now() - timedelta(hours=1)
    GhostProposal.objects.filter(pk=old.pk).update(created_at=long_ago, decided_at=long_ago)
    assert session_snapshot(session_id=session.pk, history_s=600).proposals == ()
    GhostProposal.objects.filter(pk=old.pk).update(state=State.PENDING)
    assert [p.state for p in session_snapshot(session_id=session.pk).proposals] == ["pending"]


# --- The runner -----------------------------------------------------------------------------------


def _age(session: PhotoshootSession, seconds: float) -> None:
    """Pretend the session went live `seconds` ago."""
    PhotoshootSession.objects.filter(pk=session.pk).update(
        started_at=timezone.now() - timedelta(seconds=seconds)
    )


def _shift(proposal: GhostProposal, seconds: float) -> None:
    """Move a proposal's times `seconds` into the past."""
    proposal.refresh_from_db()
    delta = timedelta(seconds=seconds)
    GhostProposal.objects.filter(pk=proposal.pk).update(
        created_at=proposal.created_at - delta,
        expires_at=proposal.expires_at - delta,
        decided_at=proposal.decided_at - delta if proposal.decided_at else None,
    )


@pytest.fixture
def pair(db: None) -> tuple[Device, Device]:
    a = register_device("pol-a", name="Cam A").device
    b = register_device("pol-b", name="Cam B").device
    return a, b


@pytest.mark.django_db
def test_the_runner_queues_each_policys_idea_with_its_name_and_priority(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    a, b = pair
    c = register_device("pol-c", name="Cam C").device
    record_beat(a.pk, thermal="critical")
    session = _live(operator, a, b, c)
    _age(session, 120)

    created = runner.ghost_policies_run(session_id=session.pk)

    got = sorted((p.policy, p.priority, p.kind, [t.pk for t in p.targets.all()]) for p in created)
    # Hero-staleness wanted a hero switch too: the hero goes one way at a time, so it waits.
    assert got == [("cadence", 10, "capture_all", []), ("health", 50, "switch_hero", [b.pk])]
    assert GhostProposal.objects.filter(session=session).count() == 2
    proposed = ProductionEvent.objects.filter(type="ghost.proposed", stream=str(session.pk))
    assert {e.payload["policy"] for e in proposed} == {"health", "cadence"}


@pytest.mark.django_db
def test_the_runner_does_not_repeat_a_pending_idea(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    session = _live(operator, *pair)
    _age(session, 120)
    policies: list[Policy] = [CadencePolicy()]
    assert len(runner.ghost_policies_run(session_id=session.pk, policies=policies)) == 1
    assert runner.ghost_policies_run(session_id=session.pk, policies=policies) == []
    assert GhostProposal.objects.filter(session=session).count() == 1


@pytest.mark.django_db
def test_a_vetoed_idea_waits_out_the_veto_cooldown(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    session = _live(operator, *pair)
    _age(session, 600)
    policies: list[Policy] = [CadencePolicy()]
    (first,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    ghost.proposal_veto(proposal_id=first.pk, decided_by="op", reason="wrong_moment")

    _shift(first, 60)  # past the plain cooldown (30 s), within the veto cooldown (120 s)
    assert runner.ghost_policies_run(session_id=session.pk, policies=policies) == []

    _shift(first, 61)
    (again,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    assert (again.kind, again.policy) == ("capture_all", "cadence")


@pytest.mark.django_db
def test_after_a_veto_the_policy_offers_its_next_best_camera(operator: Any) -> None:
    cams = [register_device(f"pol-{n}", name=f"Cam {n}").device for n in "ABC"]
    for device, azimuth in zip(cams, (0, 90, 180), strict=True):
        device_services.device_place(device_id=device.pk, azimuth_deg=azimuth)
    session = _live(operator, *cams)
    _age(session, 120)
    policies: list[Policy] = [HeroStalenessPolicy()]
    (first,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    assert [t.name for t in first.targets.all()] == ["Cam C"]
    ghost.proposal_veto(proposal_id=first.pk, decided_by="op", reason="bad_framing")

    (second,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    assert [t.name for t in second.targets.all()] == ["Cam B"]
    assert second.rationale.endswith("switch to Cam B for an angle 90° round.")


@pytest.mark.django_db
def test_a_higher_priority_hero_switch_goes_ahead_of_a_waiting_one(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    a, b = pair
    c = register_device("pol-c", name="Cam C").device
    session = _live(operator, a, b, c)
    _age(session, 120)
    policies: list[Policy] = [HealthPolicy(), HeroStalenessPolicy()]
    (stale,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    assert stale.policy == "hero-staleness"

    record_beat(a.pk, battery=0.05)
    (health,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    assert (health.policy, health.priority) == ("health", 50)
    assert [t.pk for t in health.targets.all()] == [t.pk for t in stale.targets.all()] == [b.pk]
    stale.refresh_from_db()
    assert (stale.state, stale.superseded_by_id) == (State.SUPERSEDED, health.pk)


@pytest.mark.django_db
def test_an_idea_that_expired_undecided_comes_back_after_the_cooldown(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    session = _live(operator, *pair)
    _age(session, 600)
    policies: list[Policy] = [CadencePolicy()]
    (first,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    _shift(first, 11)
    assert ghost.proposals_expire_due() == 1
    assert runner.ghost_policies_run(session_id=session.pk, policies=policies) == []
    _shift(first, 20)
    assert len(runner.ghost_policies_run(session_id=session.pk, policies=policies)) == 1


@pytest.mark.django_db
def test_an_accepted_move_is_not_proposed_again_until_the_crew_makes_it(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    a, b = pair
    device_services.device_place(device_id=a.pk, azimuth_deg=0)
    device_services.device_place(device_id=b.pk, azimuth_deg=20)
    session = _live(operator, a, b)
    policies: list[Policy] = [CoverageGapPolicy()]
    (move,) = runner.ghost_policies_run(session_id=session.pk, policies=policies)
    assert (move.kind, move.payload, move.priority) == ("reposition", {"azimuth_deg": 190.0}, 30)
    assert move.rationale == "Nobody covers 50°\u2013330° (280°); move Cam B to 190°."
    move = ghost.proposal_accept(proposal_id=move.pk, decided_by="op")
    assert move.state == State.ACCEPTED
    _shift(move, 600)
    assert runner.ghost_policies_run(session_id=session.pk, policies=policies) == []

    device_services.device_place(device_id=b.pk, azimuth_deg=190)
    assert ghost.repositions_complete_due() == 1
    # Cam B stands at 190° now; the largest gap left (130°) is one no single move narrows.
    assert runner.ghost_policies_run(session_id=session.pk, policies=policies) == []
    move.refresh_from_db()
    assert move.state == State.EXECUTED


@pytest.mark.django_db
def test_nothing_is_proposed_with_ghost_off_or_once_the_session_ended(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    session = _live(operator, *pair, mode="off")
    _age(session, 600)
    assert runner.ghost_policies_run(session_id=session.pk) == []
    assert runner.ghost_policies_run_live() == 0
    services.session_ghost_mode_set(session_id=session.pk, mode="supervised", by="op")
    services.session_stop(session_id=session.pk)
    assert runner.ghost_policies_run(session_id=session.pk) == []
    assert not GhostProposal.objects.exists()


class _Refused(Policy):
    """Proposes a camera that is not in the session: proposal_create refuses it."""

    name = "stranger"
    priority = 60

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        return [Idea("switch_hero", (uuid.uuid4(),), "Put a stranger on air.", 0.9)]


class _Broken(Policy):
    name = "broken"
    priority = 55

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        raise RuntimeError("bug in a policy")


@pytest.mark.django_db
def test_a_refused_idea_or_a_failing_policy_does_not_stop_the_others(
    operator: Any, pair: tuple[Device, Device], caplog: pytest.LogCaptureFixture
) -> None:
    session = _live(operator, *pair)
    _age(session, 600)
    with caplog.at_level(logging.INFO, logger="director.ghost_policies.runner"):
        created = runner.ghost_policies_run(
            session_id=session.pk, policies=[_Refused(), _Broken(), CadencePolicy()]
        )
    assert [p.policy for p in created] == ["cadence"]
    assert "Every target must be a camera of this session" in caplog.text
    assert "Ghost policy broken failed" in caplog.text


@pytest.mark.django_db
def test_the_live_run_covers_every_session_and_one_failure_does_not_stop_the_others(
    operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _live(operator, register_device("pol-1", name="Cam 1").device)
    second = _live(operator, register_device("pol-2", name="Cam 2").device)
    _age(first, 600)
    _age(second, 600)
    real = runner.session_snapshot

    def failing_for_first(**kwargs: Any) -> SessionSnapshot:
        if kwargs["session_id"] == first.pk:
            raise RuntimeError("database hiccup")
        return real(**kwargs)

    monkeypatch.setattr(runner, "session_snapshot", failing_for_first)
    assert runner.ghost_policies_run_live() == 1
    assert list(GhostProposal.objects.values_list("session_id", flat=True)) == [second.pk]


@pytest.mark.django_db
def test_the_tick_task_runs_the_policies_for_live_sessions(
    operator: Any, pair: tuple[Device, Device]
) -> None:
    session = _live(operator, *pair)
    _age(session, 600)
    assert ghost_policies_tick() >= 1
    assert GhostProposal.objects.filter(session=session, policy="cadence").exists()
    assert ghost_policies_tick() == 0  # every idea is pending now


def test_the_ticker_and_the_settings_schedule_the_policies() -> None:
    from director.ticker import SCHEDULE

    jobs = [job for job in SCHEDULE if job.task is ghost_policies_tick]
    assert [job.interval_s for job in jobs] == [settings.MOTIONMIX_GHOST_POLICY_INTERVAL_S]
    for name in (
        "MOTIONMIX_GHOST_GAP_DEG",
        "MOTIONMIX_GHOST_HERO_STALE_S",
        "MOTIONMIX_GHOST_CADENCE_S",
        "MOTIONMIX_GHOST_COOLDOWN_S",
        "MOTIONMIX_GHOST_VETO_COOLDOWN_S",
        "MOTIONMIX_GHOST_LOW_BATTERY_PERCENT",
        "MOTIONMIX_GHOST_POSE_MAX_AGE_S",
    ):
        assert isinstance(getattr(settings, name), float)


def test_thresholds_follow_the_settings(settings: Any) -> None:
    settings.MOTIONMIX_GHOST_HERO_STALE_S = 10.0
    a, b = cam("Cam A", 0), cam("Cam B", 180)
    assert len(HeroStalenessPolicy().propose(snap(a, b, hero=a, on_air_s=12))) == 1


@pytest.mark.django_db
def test_the_snapshot_carries_each_cameras_latest_pose_on_the_servers_clock(
    operator: Any,
) -> None:
    from devices.models import Device
    from devices.services.pose import pose_batch_ingest

    a = register_device("pose-a", name="Cam A").device
    b = register_device("pose-b", name="Cam B").device
    session = _live(operator, a, b)
    # Cam A's clock runs 2.5 s ahead of the server's; its frames say so.
    Device.objects.filter(pk=a.pk).update(clock_offset_s=2.5)
    now = time.time()
    points = [[0.5, 0.5, 0.9]] * 17
    pose_batch_ingest(
        device_id=a.pk,
        format="coco17",
        frames=[{"t": now + 2.5 - (40 - i) / 30, "keypoints": points} for i in range(40)],
    )

    shot = session_snapshot(session_id=session.pk)

    assert set(shot.pose) == {a.pk}
    frames = shot.pose[a.pk]
    assert len(frames) == 30  # the newest second at 30 fps
    assert frames[-1].t == pytest.approx(now - 1 / 30, abs=0.001)
    assert all(f.format == "coco17" and len(f.keypoints) == 17 for f in frames)
    assert [f.t for f in frames] == sorted(f.t for f in frames)
