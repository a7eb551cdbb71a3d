"""Motion readers, the 30 fps resampler and motion features, on real takes and small files."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.shared_data import SHARED_DATA
from training.formats import read_motion
from training.formats.bvh import read_bvh
from training.formats.mediapipe import read_mediapipe
from training.formats.ndjson import read_ndjson
from training.motion_features import motion_features
from training.resample import TIME_TOLERANCE_S, frame_range, resample
from training.skeleton import COCO17, COCO_INDEX, mid_hip
from training.timeline import FPS, JOINTS, FrameBlock, InputError, MotionChunk

SALSA = SHARED_DATA / "motion" / "cmu-salsa"
MEDIAPIPE = SHARED_DATA / "pose" / "vtest_mediapipe_pose.json.gz"


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"the shared recording is not at {path} (../shared/data/README.md)")
    return path


def _concat(blocks: list[FrameBlock]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.concatenate([b.joints for b in blocks]),
        np.concatenate([b.conf for b in blocks]),
        np.concatenate([b.missing for b in blocks]),
    )


def _source_arrays(chunks: Iterator[MotionChunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = list(chunks)
    return (
        np.concatenate([c.t for c in parts]),
        np.concatenate([c.joints for c in parts]),
        np.concatenate([c.present for c in parts]),
    )


def _chunks(t: np.ndarray, joints: np.ndarray, present: np.ndarray, size: int) -> list[MotionChunk]:
    conf = np.where(present[:, None], 1.0, 0.0).astype(np.float32) * np.ones((1, JOINTS))
    return [
        MotionChunk(
            t=t[i : i + size],
            joints=joints[i : i + size].astype(np.float32),
            conf=conf[i : i + size].astype(np.float32),
            present=present[i : i + size],
        )
        for i in range(0, t.shape[0], size)
    ]


def _wavy(t: np.ndarray) -> np.ndarray:
    """A smooth, non-linear pose stream `(n, 17, 3)` for synthetic sources."""
    phase = np.arange(JOINTS * 3, dtype=np.float64).reshape(1, JOINTS, 3)
    return np.sin(2.0 * t[:, None, None] + phase)


# --- The real CMU salsa takes -------------------------------------------------------------------


def test_a_120_fps_take_resamples_to_every_fourth_frame_exactly() -> None:
    source = read_bvh(_shared(SALSA / "60_10_scaled.bvh"))
    assert (source.fps, source.dims, source.name) == (120.0, 3, "60_10_scaled")
    t, joints, present = _source_arrays(source.chunks())
    assert t.shape == (1197,) and present.all()
    first, count = frame_range(float(t[0]), float(t[-1]), 0.0)
    assert (first, count) == (0, (1197 - 1) * 30 // 120 + 1) == (0, 300)
    blocks = list(
        resample(
            source.chunks(),
            shift_s=0.0,
            first_frame=0,
            n_frames=300,
            max_gap_s=0.1,
            block_frames=128,
        )
    )
    assert [b.start for b in blocks] == [0, 128, 256]
    out, conf, missing = _concat(blocks)
    assert not missing.any() and (conf == 1.0).all()
    assert np.array_equal(out, joints[::4])
    frames = np.concatenate([b.start + np.arange(len(b)) for b in blocks])
    assert np.allclose(t[::4], frames / FPS, atol=TIME_TOLERANCE_S)


def test_the_lead_and_the_follower_share_one_grid_and_dance_within_two_metres() -> None:
    lead = read_bvh(_shared(SALSA / "60_10_scaled.bvh"))
    follow = read_bvh(_shared(SALSA / "61_10_scaled.bvh"))
    grids = []
    for source in (lead, follow):
        t, _, _ = _source_arrays(source.chunks())
        grids.append(frame_range(float(t[0]), float(t[-1]), 0.0))
    assert grids[0] == grids[1] == (0, 300)
    poses = [
        _concat(
            list(resample(s.chunks(), shift_s=0.0, first_frame=0, n_frames=300, max_gap_s=0.1))
        )[0]
        for s in (lead, follow)
    ]
    distance = np.linalg.norm(mid_hip(poses[0]) - mid_hip(poses[1]), axis=-1)
    assert distance.shape == (300,) and distance.max() < 2.0


def test_the_face_points_sit_on_the_head_of_a_real_take() -> None:
    _, joints, _ = _source_arrays(read_bvh(_shared(SALSA / "60_10_scaled.bvh")).chunks())
    nose, shoulders = joints[:, COCO_INDEX["nose"]], joints[:, [5, 6]].mean(axis=1)
    assert (nose[:, 1] > shoulders[:, 1]).all()  # y up: the nose is above the shoulders
    eyes = np.linalg.norm(joints[:, 1] - joints[:, 2], axis=-1)
    assert np.allclose(eyes, eyes[0]) and 0.03 < eyes[0] < 0.1


# --- The real MediaPipe file ---------------------------------------------------------------------


def _expected_missing(times: np.ndarray, frames: np.ndarray, max_gap_s: float) -> np.ndarray:
    """The resampling rule, re-derived frame by frame from the present frames' times."""
    present = sorted(float(x) for x in times)
    out = []
    for tau in frames / FPS:
        i = bisect.bisect_left(present, tau - TIME_TOLERANCE_S)
        if i < len(present) and present[i] <= tau + TIME_TOLERANCE_S:
            out.append(False)
        elif 0 < i < len(present):
            out.append(present[i] - present[i - 1] > max_gap_s + TIME_TOLERANCE_S)
        else:
            out.append(True)
    return np.array(out)


def test_the_mediapipe_file_has_459_poses_in_795_frames_and_obeys_the_gap_rule() -> None:
    source = read_motion(_shared(MEDIAPIPE))
    assert (source.format, source.dims, source.fps) == ("mediapipe", 2, 10.0)
    t, joints, present = _source_arrays(source.chunks())
    assert t.shape == (795,) and int(present.sum()) == 459
    assert (joints[present][..., 2] == 0).all() and np.allclose(t, np.arange(795) / 10)
    first, count = frame_range(float(t[0]), float(t[-1]), 0.0)
    assert (first, count) == (0, 794 * 3 + 1)
    blocks = list(
        resample(
            source.chunks(),
            shift_s=0.0,
            first_frame=first,
            n_frames=count,
            max_gap_s=0.2,
            block_frames=500,
        )
    )
    out, _, missing = _concat(blocks)
    frames = np.arange(count)
    expected = _expected_missing(t[present], frames, 0.2)
    assert int(missing.sum()) == int(expected.sum()) and np.array_equal(missing, expected)
    assert (out[missing] == 0).all()
    shown = t[present]
    for tau in frames[~missing] / FPS:  # no pose is drawn across a gap longer than 0.2 s
        before = shown[shown <= tau + TIME_TOLERANCE_S].max()
        after = shown[shown >= tau - TIME_TOLERANCE_S].min()
        assert after - before <= 0.2 + TIME_TOLERANCE_S


# --- Synthetic sources: rates, interpolation, gaps, streaming ------------------------------------


@pytest.mark.parametrize(("fps", "seconds", "count"), [(25.0, 2.0, 61), (60.0, 1.5, 46)])
def test_a_synthetic_source_resamples_to_the_right_count_by_linear_interpolation(
    fps: float, seconds: float, count: int
) -> None:
    t = np.arange(round(seconds * fps) + 1) / fps
    joints = _wavy(t).astype(np.float32)
    assert frame_range(0.0, float(t[-1]), 0.0) == (0, count)
    blocks = list(
        resample(
            _chunks(t, joints, np.ones(t.size, bool), 7),
            shift_s=0.0,
            first_frame=0,
            n_frames=count,
            max_gap_s=0.1,
            block_frames=16,
        )
    )
    out, _, missing = _concat(blocks)
    assert out.shape == (count, JOINTS, 3) and not missing.any()
    grid = np.arange(count) / FPS
    flat = joints.reshape(t.size, -1).astype(np.float64)
    expected = np.stack([np.interp(grid, t, flat[:, c]) for c in range(flat.shape[1])], axis=1)
    assert np.allclose(out.reshape(count, -1), expected, atol=1e-6)
    if fps == 60.0:
        assert np.array_equal(out, joints[::2])


def test_resampling_is_the_same_whatever_the_chunk_and_block_sizes() -> None:
    t = np.arange(0, 300) / 25.0 + 0.013
    present = (np.arange(300) % 7) != 3
    joints = _wavy(t).astype(np.float32)
    runs = []
    for size, block in ((1, 5), (64, 1800), (300, 33)):
        chunks = _chunks(t, joints, present, size)
        runs.append(
            _concat(
                list(
                    resample(
                        chunks,
                        shift_s=1.25,
                        first_frame=20,
                        n_frames=400,
                        max_gap_s=0.1,
                        block_frames=block,
                    )
                )
            )
        )
    for other in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other, strict=True))


def test_a_gap_longer_than_the_limit_is_missing_and_nothing_is_extrapolated() -> None:
    t = np.array([1.0, 1.1, 1.5, 1.6])
    joints = np.ones((4, JOINTS, 3), np.float32) * np.arange(4, dtype=np.float32)[:, None, None]
    blocks = list(
        resample(
            _chunks(t, joints, np.ones(4, bool), 4),
            shift_s=0.5,
            first_frame=0,
            n_frames=90,
            max_gap_s=0.2,
        )
    )
    out, conf, missing = _concat(blocks)
    audio = np.arange(90) / FPS
    shown = ((audio >= 1.5 - 1e-9) & (audio <= 1.6 + 1e-9)) | (
        (audio >= 2.0 - 1e-9) & (audio <= 2.1 + 1e-9)
    )
    assert np.array_equal(~missing, shown)
    assert (out[missing] == 0).all() and (conf[missing] == 0).all()
    k = 46  # audio 1.5333 s: a third of the way from the first to the second pose
    assert out[k, 0, 0] == pytest.approx(1 / 3, abs=1e-6)


def test_an_absent_pose_is_skipped_and_bridged_only_within_the_gap() -> None:
    t = np.arange(5) / 10.0
    present = np.array([True, False, True, False, False])
    joints = np.zeros((5, JOINTS, 3), np.float32)
    joints[2] = 2.0
    out, _, missing = _concat(
        list(
            resample(
                _chunks(t, joints, present, 2),
                shift_s=0.0,
                first_frame=0,
                n_frames=13,
                max_gap_s=0.2,
            )
        )
    )
    assert np.array_equal(~missing, np.arange(13) <= 6)
    assert out[3, 0, 0] == pytest.approx(1.0, abs=1e-6)


# --- BVH files ---------------------------------------------------------------------------------

_BVH_LIMBS = {  # name: (parent, offset)
    "abdomen": ("hip", "0 0.2 0"),
    "chest": ("abdomen", "0 0.2 0"),
    "neck": ("chest", "0 0.15 0"),
    "head": ("neck", "0 0.1 0"),
    "lShldr": ("chest", "0.2 0.1 0"),
    "lForeArm": ("lShldr", "0.25 0 0"),
    "lHand": ("lForeArm", "0.25 0 0"),
    "rShldr": ("chest", "-0.2 0.1 0"),
    "rForeArm": ("rShldr", "-0.25 0 0"),
    "rHand": ("rForeArm", "-0.25 0 0"),
    "lThigh": ("hip", "0.1 0 0"),
    "lShin": ("lThigh", "0 -0.45 0"),
    "lFoot": ("lShin", "0 -0.45 0"),
    "rThigh": ("hip", "-0.1 0 0"),
    "rShin": ("rThigh", "0 -0.45 0"),
    "rFoot": ("rShin", "0 -0.45 0"),
}


def _bvh_joint(name: str, offset: str, depth: int) -> list[str]:
    pad = "  " * depth
    order = "Xrotation Yrotation Zrotation" if depth % 2 else "Zrotation Xrotation Yrotation"
    lines = [
        f"{pad}JOINT {name}",
        f"{pad}{{",
        f"{pad}  OFFSET {offset}",
        f"{pad}  CHANNELS 3 {order}",
    ]
    children = [c for c, (p, _) in _BVH_LIMBS.items() if p == name]
    for child in children:
        lines += _bvh_joint(child, _BVH_LIMBS[child][1], depth + 1)
    if not children:
        lines += [f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 0.05 0", f"{pad}  }}"]
    return [*lines, f"{pad}}}"]


def _bvh_text(
    rows: list[str], frames: int | None = None, rename: dict[str, str] | None = None
) -> str:
    body = [
        "HIERARCHY",
        "ROOT hip",
        "{",
        "  OFFSET 0 0 0",
        "  CHANNELS 6 Xposition Yposition Zposition Yrotation Xrotation Zrotation",
    ]
    for child in (c for c, (p, _) in _BVH_LIMBS.items() if p == "hip"):
        body += _bvh_joint(child, _BVH_LIMBS[child][1], 1)
    body += [
        "}",
        "MOTION",
        f"Frames: {len(rows) if frames is None else frames}",
        "Frame Time: 0.04",
        *rows,
    ]
    text = "\n".join(body) + "\n"
    for old, new in (rename or {}).items():
        text = text.replace(f"JOINT {old}\n", f"JOINT {new}\n")
    return text


def _row(x: float = 0.0, yaw: float = 0.0) -> str:
    return " ".join([f"{x:g}", "1", "0", f"{yaw:g}"] + ["0"] * (2 + 3 * len(_BVH_LIMBS)))


def test_a_bvh_file_maps_named_joints_and_turns_with_the_root(tmp_path: Path) -> None:
    path = tmp_path / "take.bvh"
    path.write_text(_bvh_text([_row(), _row(0.5, 90.0)]))
    source = read_motion(path)
    assert (source.format, source.name, source.fps, source.dims) == ("bvh", "take", 25.0, 3)
    t, joints, _ = _source_arrays(source.chunks())
    assert np.array_equal(t, [0.0, 0.04])
    ls, lh = COCO_INDEX["left_shoulder"], COCO_INDEX["left_ankle"]
    assert np.allclose(joints[0, ls], [0.2, 1.5, 0.0]) and np.allclose(joints[0, lh], [0.1, 0.1, 0])
    assert np.allclose(joints[1, ls], [0.5, 1.5, -0.2], atol=1e-6)  # 90° about y: x → −z
    assert np.allclose(joints[0, COCO_INDEX["nose"]][[0, 2]], [0.0, 0.11], atol=1e-6)
    assert read_bvh(path, fps=50.0).fps == 50.0


def test_asf_style_joint_names_are_understood(tmp_path: Path) -> None:
    names = {
        "lShldr": "LeftArm",
        "lForeArm": "LeftForeArm",
        "lHand": "LeftHand",
        "lThigh": "LeftUpLeg",
        "lShin": "LeftLeg",
        "lFoot": "LeftFoot",
        "head": "Head",
        "rShldr": "RightArm",
        "rForeArm": "RightForeArm",
        "rHand": "RightHand",
        "rThigh": "RightUpLeg",
        "rShin": "RightLeg",
        "rFoot": "RightFoot",
    }
    path = tmp_path / "asf.bvh"
    path.write_text(_bvh_text([_row()], rename=names))
    _, joints, _ = _source_arrays(read_bvh(path).chunks())
    assert np.allclose(joints[0, COCO_INDEX["right_wrist"]], [-0.7, 1.5, 0.0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_bvh_text([_row(), _row()[:-4]]), r"line \d+: expected 54 values, found 52"),
        (_bvh_text([_row()], frames=2), r"line \d+: the motion is truncated: 1 of 2 frames"),
        (_bvh_text([_row(), "0 x" + _row()[3:]]), r"line \d+: 'x' is not a finite number"),
        (_bvh_text([_row()]).replace("End Site", "Tail Site", 1), r"line \d+: unknown keyword"),
        (_bvh_text([_row()], rename={"lShin": "lCalf"}), "no joint for COCO left_knee"),
    ],
    ids=["short-line", "truncated", "not-a-number", "unknown-keyword", "missing-joint"],
)
def test_a_broken_bvh_file_is_refused_naming_the_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "broken.bvh"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        list(read_bvh(path).chunks())
    assert str(path) in str(error.value)


# --- NDJSON files ------------------------------------------------------------------------------


def _ndjson_line(t: float, points: list[list[float]] | None, key: str = "t") -> str:
    return json.dumps({key: t, "format": "coco17", "keypoints": points})


def test_an_ndjson_file_streams_2d_and_3d_poses_and_empty_frames(tmp_path: Path) -> None:
    flat = [[float(j), 2.0 * j, 0.5] for j in range(JOINTS)]
    path = tmp_path / "phone.ndjson"
    path.write_text(
        "\n".join(
            [
                _ndjson_line(0.0, flat, "t_server"),
                "",
                _ndjson_line(0.1, None, "t_server"),
                _ndjson_line(0.2, [], "t_server"),
            ]
        )
        + "\n"
    )
    source = read_ndjson(path, time_key="t_server")
    assert (source.dims, source.fps, source.name) == (2, pytest.approx(10.0), "phone")
    t, joints, present = _source_arrays(source.chunks())
    assert np.array_equal(t, [0.0, 0.1, 0.2]) and present.tolist() == [True, False, False]
    assert joints[0, 3].tolist() == [3.0, 6.0, 0.0]
    deep = tmp_path / "depth.jsonl"
    deep.write_text(_ndjson_line(0.0, [[1.0, 2.0, 3.0, 0.9]] * JOINTS) + "\n")
    source = read_motion(deep, fps=30.0)
    assert (source.format, source.dims, source.fps) == ("ndjson", 3, 30.0)
    assert next(iter(source.chunks())).joints[0, 0].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"t": 0.2, "keypoints": [[1, 2, 1]', "line 3: malformed JSON"),
        (_ndjson_line(0.2, [[1.0, 2.0, 1.0]] * 16), "line 3: expected 17 keypoints, found 16"),
        (_ndjson_line(0.05, None), r"line 3: time 0.05 s does not follow 0.1 s"),
        ('{"keypoints": null}', "line 3: 't' must be a number"),
    ],
    ids=["bad-json", "joint-count", "time-order", "no-time"],
)
def test_a_bad_ndjson_line_is_refused_naming_its_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join([_ndjson_line(0.0, None), _ndjson_line(0.1, None), line]) + "\n")
    with pytest.raises(InputError, match=message) as error:
        list(read_ndjson(path).chunks())
    assert str(path) in str(error.value)


def test_unknown_formats_and_unreadable_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot tell the motion format"):
        read_motion(tmp_path / "take.mp4")
    with pytest.raises(InputError, match="unknown motion format 'c3d'"):
        read_motion(tmp_path / "take.bvh", format="c3d")
    with pytest.raises(InputError, match="cannot read"):
        read_motion(tmp_path / "absent.bvh")
    broken = tmp_path / "pose.json"
    broken.write_text('{"fps": 10, "frames": [{"frame": 0, "kp2d": [[0, 0, 0, 1]]}]}')
    with pytest.raises(InputError, match=r"frames\[0\] 'kp2d' must be 33 rows"):
        read_mediapipe(broken)


# --- Motion features --------------------------------------------------------------------------


def _standing(torso: float) -> np.ndarray:
    pose = np.zeros((JOINTS, 3))
    for name, (x, y) in {
        "left_shoulder": (0.2, torso),
        "right_shoulder": (-0.2, torso),
        "left_hip": (0.1, 0.0),
        "right_hip": (-0.1, 0.0),
    }.items():
        pose[COCO17.index(name), :2] = (x, y)
    pose[COCO17.index("nose"), 1] = torso + 0.3
    return pose


def test_constant_velocity_gives_its_velocity_and_kinetic_energy_in_torso_lengths() -> None:
    velocity = np.array([0.6, -0.3, 0.2])
    frames = np.arange(20)[:, None, None] / FPS
    joints = (_standing(0.5)[None] + 2.0 + frames * velocity).astype(np.float32)
    features = motion_features(joints, np.zeros(20, bool), dims=3)
    assert features.scale == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(features.positions[0, COCO_INDEX["left_hip"]], [0.2, 0.0, 0.0], atol=1e-5)
    expected = velocity / 0.5
    assert np.allclose(features.velocities, expected, atol=1e-3)
    assert np.allclose(features.kinetic, 0.5 * JOINTS * float(expected @ expected), rtol=1e-3)
    assert np.allclose(features.speed, np.linalg.norm(expected), rtol=1e-3)
    assert features.positions.dtype == features.kinetic.dtype == np.float32


def test_a_still_pose_has_no_motion_and_missing_frames_break_velocity() -> None:
    joints = np.repeat(_standing(100.0)[None], 6, axis=0).astype(np.float32)
    still = motion_features(joints, np.zeros(6, bool), dims=2)
    assert not still.velocities.any() and not still.kinetic.any() and not still.speed.any()
    assert still.positions[0, COCO_INDEX["left_shoulder"], 1] == pytest.approx(-1.0)  # y → up
    moving = joints + np.arange(6, dtype=np.float32)[:, None, None]
    missing = np.array([False, False, False, True, False, False])
    features = motion_features(moving, missing, dims=2)
    assert features.speed[[2, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    assert features.speed[1] > 0 and features.speed[5] > 0
    assert not features.positions[3].any()
    again = motion_features(moving, missing, dims=2)
    assert features.velocities.tobytes() == again.velocities.tobytes()
