"""The BVH parser and forward kinematics, on the real CMU salsa takes and on small files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from devices.bvh import Bvh, BvhError, load_bvh, parse_bvh
from tests.support.shared_data import SHARED_DATA

MOTION_DIR = SHARED_DATA / "motion" / "cmu-salsa"
TAKES = ["60_10_scaled.bvh", "61_10_scaled.bvh"]


@pytest.fixture(scope="module", params=TAKES)
def take(request: pytest.FixtureRequest) -> Bvh:
    path = MOTION_DIR / request.param
    if not path.exists():
        pytest.skip(f"the CMU salsa takes are not at {MOTION_DIR} (../shared/data/motion)")
    return load_bvh(path)


def _rest_pose(bvh: Bvh) -> np.ndarray:
    still = dataclasses.replace(bvh, motion=np.zeros((1, bvh.motion.shape[1])))
    return still.positions()[0]


# --- The real takes ---------------------------------------------------------------------------


def test_a_cmu_salsa_take_has_43_joints_and_1197_frames_at_120_fps(take: Bvh) -> None:
    assert len(take.joint_names) == 43
    assert take.joint_names[:5] == ["hip", "abdomen", "chest", "neck", "head"]
    assert take.frame_count == 1197
    assert take.frame_time == pytest.approx(1 / 120, abs=1e-6)
    assert take.fps == 120.0
    assert take.duration_s == pytest.approx(9.975)
    assert take.motion.shape == (1197, 6 + 42 * 3)
    root = take.joints[0]
    assert root.channels == (
        "Xposition",
        "Yposition",
        "Zposition",
        "Zrotation",
        "Yrotation",
        "Xrotation",
    )
    assert take.joints[1].channels == ("Zrotation", "Xrotation", "Yrotation")


def test_the_scaled_cmu_skeleton_is_in_metres_but_a_small_figure(take: Bvh) -> None:
    # Soles to eyes in the rest pose. In centimetres this would be ~120, in inches ~47. The
    # figure is about 1.3 m tall, not an adult's 1.6-1.9 m: the "scaled" release was scaled
    # (to the salsa demo's avatar, CREDITS.md); the simulator takes it as it is.
    rest = _rest_pose(take)
    eyes = rest[take.index("leftEye"), 1]
    soles = min(rest[take.index("lFoot_end"), 1], rest[take.index("rFoot_end"), 1])
    eye_height = eyes - soles
    assert 1.1 < eye_height < 1.3, eye_height
    stature = eye_height / 0.93  # eyes sit at about 93 % of a person's height
    assert 1.2 < stature < 1.4, stature


def test_the_dancers_feet_stay_on_the_floor(take: Bvh) -> None:
    positions = take.positions()
    feet = [take.index(name) for name in ("lFoot_end", "rFoot_end", "lFoot", "rFoot")]
    lowest = positions[:, feet, 1].min(axis=1)

    assert lowest.min() > -0.03
    assert np.median(lowest) < 0.07
    assert np.mean(lowest < 0.1) > 0.8  # a foot is down most of the time
    assert lowest.max() < 0.35  # a hop now and then, no more
    head = positions[:, take.index("head"), 1]
    assert (head > 0.9).all()  # and nobody lies down


def test_bones_keep_their_length_in_every_frame(take: Bvh) -> None:
    positions = take.positions()
    for j, joint in enumerate(take.joints):
        if joint.parent < 0:
            continue
        lengths = np.linalg.norm(positions[:, j] - positions[:, joint.parent], axis=1)
        assert np.ptp(lengths) < 1e-9, joint.name
        assert lengths[0] == pytest.approx(np.linalg.norm(joint.offset), abs=1e-9), joint.name


def test_the_two_takes_share_one_clock(take: Bvh) -> None:
    other = load_bvh(MOTION_DIR / TAKES[1])
    assert (take.frame_count, take.fps) == (other.frame_count, other.fps)


def test_forward_kinematics_of_chosen_frames_matches_the_whole_take(take: Bvh) -> None:
    whole = take.positions()
    some = take.positions([0, 500, 1196], scale=2.0)
    np.testing.assert_allclose(some, whole[[0, 500, 1196]] * 2.0)


# --- Small files with known answers ---------------------------------------------------------

ARM = """HIERARCHY
ROOT Base
{{
  OFFSET 0 0 0
  CHANNELS 6 Zposition Xposition Yposition {order}
  JOINT Tip
  {{
    OFFSET 0 1 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {{
      OFFSET 0 0 2
    }}
  }}
}}
MOTION
Frames: 2
Frame Time: 0.0333333
3 1 2 {angles} 0 0 0
0 0 0 0 0 0 0 0 0
"""


GOOD = ARM.format(order="Zrotation Xrotation Yrotation", angles="0 0 0")


def _arm(order: str, angles: str) -> Bvh:
    return parse_bvh(ARM.format(order=order, angles=angles), source="arm.bvh")


def test_position_channels_are_read_in_the_files_order() -> None:
    bvh = _arm("Zrotation Xrotation Yrotation", "0 0 0")

    positions = bvh.positions()
    np.testing.assert_allclose(positions[0, 0], [1, 2, 3])
    np.testing.assert_allclose(positions[0, 1], [1, 3, 3])
    np.testing.assert_allclose(positions[0, 2], [1, 3, 5])  # the End Site
    assert bvh.joint_names == ["Base", "Tip"]
    assert bvh.joints[2].name == "Tip_end" and bvh.joints[2].is_end
    assert bvh.fps == 30.0


def test_rotations_compose_in_the_order_the_channels_are_listed() -> None:
    # Z then X: Rz(90) Rx(90) takes (0, 1, 0) to (0, 0, 1). X then Z takes it to (-1, 0, 0).
    z_then_x = _arm("Zrotation Xrotation Yrotation", "90 90 0").positions()[0]
    x_then_z = _arm("Xrotation Zrotation Yrotation", "90 90 0").positions()[0]

    np.testing.assert_allclose(z_then_x[1] - z_then_x[0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(x_then_z[1] - x_then_z[0], [-1, 0, 0], atol=1e-12)


def test_a_childs_offset_turns_with_its_parent() -> None:
    bvh = _arm("Yrotation Xrotation Zrotation", "90 0 0")  # a quarter turn about Y

    positions, rotations = bvh.world()
    # The Tip's End Site, 2 along +Z from the Tip, ends up 2 along +X.
    np.testing.assert_allclose(positions[0, 2] - positions[0, 1], [2, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rotations[0, 1] @ [0, 0, 1], [1, 0, 0], atol=1e-12)


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (GOOD.replace("HIERARCHY", "HIERARCHIES"), 1, "starts with HIERARCHY"),
        (GOOD.replace("Zposition Xposition", "Zposition Wposition"), 5, "unknown channel"),
        (GOOD.replace("CHANNELS 6", "CHANNELS six"), 5, "needs a count"),
        (GOOD.replace("OFFSET 0 1 0", "OFFSET 0 one 0"), 8, "OFFSET y must be a number"),
        (GOOD.replace("OFFSET 0 0 2", "OFFSET 0 0 2\n      CHANNELS 1 Xrotation"), 13, "End Site"),
        (GOOD.replace("Frames: 2", "Frames: 3"), 17, "Frames says 3 but 2"),
        (GOOD.replace("Frame Time: 0.0333333", "Frame Time: 0"), 18, "positive number"),
        (GOOD.replace("0 0 0 0 0 0 0 0 0", "0 0 0 0 0 0 0 0"), 20, "needs 9 values"),
        (GOOD.replace("0 0 0 0 0 0 0 0 0", "0 0 0 0 0 0 0 0 x"), 20, "'x' is not a number"),
        (GOOD.replace("JOINT Tip", "BONE Tip"), 6, "expected JOINT, End Site"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_line(text: str, line: int, says: str) -> None:
    with pytest.raises(BvhError) as caught:
        parse_bvh(text, source="bad.bvh")

    assert isinstance(caught.value, ValueError)
    assert caught.value.line == line, str(caught.value)
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"bad.bvh, line {line}: ")


def test_a_file_without_motion_or_cut_short_is_refused() -> None:
    with pytest.raises(BvhError, match="no MOTION section"):
        parse_bvh(GOOD.split("MOTION")[0])
    with pytest.raises(BvhError, match="the file ends where"):
        parse_bvh(GOOD.replace("    }\n  }\n}\n", "    }\n"))


def test_load_bvh_names_the_file_in_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.bvh"
    path.write_text(GOOD.replace("Frames: 2", "Frames: two"))

    with pytest.raises(BvhError, match=r"broken\.bvh, line 17: Frames must be a whole number"):
        load_bvh(path)
