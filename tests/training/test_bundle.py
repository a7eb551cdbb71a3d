"""Reading session bundles: clocks, music takes, the zip form and every refusal."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.bundle import Bundle, read_bundle
from training.timeline import InputError, MotionChunk

START = 1_795_600_000.0  # the session went live (server clock, unix s)
END = START + 1200.0
SESSION_ID = "5b0e4a8c-1d3f-4c2a-9e7b-2f6d8a1c3e5f"
TRACK_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
CAM_A = "11111111-1111-4111-8111-111111111111"  # offset +2.75 s, no drift
CAM_B = "22222222-2222-4222-8222-222222222222"  # offset -1.5 s, 40 then 50 ppm, two segments
CAM_C = "33333333-3333-4333-8333-333333333333"  # no pose
TRACK_S = 120.0


def _segment(start: float, end: float, offset: float, drift: float, at: float) -> dict[str, Any]:
    return {
        "start": start,
        "end": end,
        "offset_s": offset,
        "drift_ppm": drift,
        "at": at,
        "uncertainty_s": 0.002,
        "samples": 40,
        "best_delay_s": 0.004,
        "method": "fit",
    }


B_SEGMENTS = [
    _segment(START, START + 600, -1.5, 40.0, START + 300),
    # continuous at the boundary: -1.5 + 40e-6 × 300 = -1.488 = offset_s - 50e-6 × 300
    _segment(START + 600, END, -1.473, 50.0, START + 900),
]


def _true_server(t_device: float, segments: list[dict[str, Any]], s_hint: float) -> float:
    """The exact solution of s = t - offset(s) in the segment holding `s_hint`."""
    seg = next(g for g in segments if g["start"] <= s_hint < g["end"])
    d = seg["drift_ppm"] * 1e-6
    return (t_device - seg["offset_s"] + d * seg["at"]) / (1 + d)


def _pose(segments: list[dict[str, Any]], times: np.ndarray, fmt: str = "coco17") -> tuple:
    """Pose lines at true server `times`, and the exact server times of their device times."""
    lines, truth = [], []
    size = {"coco17": 17, "mediapipe33": 33, "vision19": 19}[fmt]
    for i, s in enumerate(times):
        seg = next(g for g in segments if g["start"] <= s < g["end"])
        offset = seg["offset_s"] + seg["drift_ppm"] * 1e-6 * (s - seg["at"])
        t_device = round(float(s) + offset, 6)
        exact = _true_server(t_device, segments, float(s))
        points = [[round(0.01 * j, 4), round(0.5 + 0.001 * (i % 100), 4), 0.9] for j in range(size)]
        line = {"format": fmt, "keypoints": points, "t_device": t_device}
        line["t_server"] = round(exact, 6)
        lines.append(json.dumps(line, sort_keys=True, separators=(",", ":")))
        truth.append(exact)
    return lines, np.array(truth)


def _cues() -> list[dict[str, Any]]:
    def cue(seq: int, action: str, position: float, at: float) -> dict[str, Any]:
        return {
            "seq": seq,
            "event_id": f"e{seq}",
            "track_id": TRACK_ID,
            "action": action,
            "position_s": position,
            "server_time": START + at,
            "by": "op",
            "client_time": None,
        }

    return [
        cue(1, "play", 3.0, 10.0),
        cue(2, "pause", 13.0, 20.0),
        cue(3, "play", 13.0, 25.0),
        cue(4, "seek", 40.0, 30.0),  # while playing: a new take from 40 s
        cue(5, "ended", TRACK_S, 110.0),
        cue(6, "play", 50.0, 200.0),
        cue(7, "pause", 50.5, 200.5),  # half a second: dropped
        cue(8, "play", 0.0, 1190.0),  # cut by the span's end after 10 s
    ]


def _write_checksums(root: Path) -> None:
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != "checksums.sha256"
    )
    lines = [f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}  {n}\n" for n in files]
    (root / "checksums.sha256").write_text("".join(lines))


def _device(
    device_id: str, name: str, segments: list[dict], pose: int, fmt: str = "coco17"
) -> dict[str, Any]:
    return {
        "id": device_id,
        "name": name,
        "kind": "iphone",
        "member": True,
        "clock": {"samples": [], "method": "fit", "segments": segments},
        "pose": {
            "file": f"pose/{device_id}.ndjson" if pose else None,
            "frames": pose,
            "formats": [fmt] if pose else [],
        },
    }


def make_bundle(root: Path, a_format: str = "coco17", **overrides: Any) -> dict[str, np.ndarray]:
    """Write a small honest bundle under `root`; returns the true server times per camera."""
    root.mkdir(parents=True)
    (root / "pose").mkdir()
    (root / "audio").mkdir()
    a_segments = [_segment(START, END, 2.75, 0.0, START + 600)]
    a_lines, a_truth = _pose(a_segments, START + 5 + np.arange(600) / 30, a_format)
    b_lines, b_truth = _pose(B_SEGMENTS, START + 5 + np.arange(4760) * 0.25)
    (root / "pose" / f"{CAM_A}.ndjson").write_text("".join(f"{x}\n" for x in a_lines))
    (root / "pose" / f"{CAM_B}.ndjson").write_text("".join(f"{x}\n" for x in b_lines))
    audio = b"not really ogg, the bundle reader never decodes it"
    (root / "audio" / "song.ogg").write_bytes(audio)
    cues = _cues()
    (root / "audio" / "cues.ndjson").write_text("".join(json.dumps(c) + "\n" for c in cues))
    (root / "events.ndjson").write_text("")
    (root / "stills.ndjson").write_text("")
    track = {
        "track_id": TRACK_ID,
        "file": "audio/song.ogg",
        "file_name": "song.ogg",
        "sha256": hashlib.sha256(audio).hexdigest(),
        "duration_s": TRACK_S,
        "replaced_at": None,
        "beats": [],
    }
    document = {
        "format": "motionmix.session-bundle",
        "format_version": 1,
        "clock": "server",
        "session": {"id": SESSION_ID, "name": "Studio B", "span": {"start": START, "end": END}},
        "devices": [
            _device(CAM_A, "A", a_segments, len(a_lines), a_format),
            _device(CAM_B, "B", B_SEGMENTS, len(b_lines)),
            _device(CAM_C, "C", [_segment(START, END, 0.0, 0.0, START)], 0),
        ],
        "audio": {"tracks": [track], "cues": {"file": "audio/cues.ndjson", "count": len(cues)}},
        "events": {"file": "events.ndjson", "count": 0},
        "stills": {"file": "stills.ndjson", "count": 0, "copied": False},
    }
    document.update(overrides)
    (root / "session.json").write_text(json.dumps(document, sort_keys=True, indent=2) + "\n")
    _write_checksums(root)
    return {CAM_A: a_truth, CAM_B: b_truth}


def _zip(root: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                name = p.relative_to(root).as_posix()
                archive.write(p, f"motionmix-session-{SESSION_ID}/{name}")
    return target


def _times(bundle: Bundle, device_id: str) -> np.ndarray:
    source = next(m for m in bundle.motion if m.name == device_id)
    chunks: list[MotionChunk] = list(source.chunks())
    assert all(len(c) <= 1024 for c in chunks)
    return np.concatenate([c.t for c in chunks])


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "bundle"
    return root, make_bundle(root)


def test_device_clocks_map_pose_onto_the_server_clock(folder: tuple, tmp_path: Path) -> None:
    root, truth = folder
    bundle = read_bundle(root, tmp_path / "cache")
    assert bundle.session_id == SESSION_ID and bundle.session_name == "Studio B"
    assert [m.name for m in bundle.motion] == [CAM_A, CAM_B]
    for device_id, expected in truth.items():
        got = _times(bundle, device_id)
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) < 1e-6
        assert np.all(np.diff(got) > 0)
    a, b, c = (bundle.clock_report[d] for d in (CAM_A, CAM_B, CAM_C))
    assert a["offset_s"] == pytest.approx(2.75) and a["drift_ppm"] == 0.0
    assert a["method"] == "fit" and a["frames"] == 600
    assert b["segments"] == 2 and b["frames"] == 4760
    assert b["offset_s"] == pytest.approx(-1.488)  # at the middle of the span
    assert a["max_t_server_disagreement_s"] < 2e-6 and b["max_t_server_disagreement_s"] < 2e-6
    assert c["frames"] == 0 and c["max_t_server_disagreement_s"] is None
    chunk = next(iter(bundle.motion[0].chunks()))
    assert chunk.joints.shape == (1024, 17, 3) or chunk.joints.shape[1:] == (17, 3)
    assert chunk.joints.dtype == np.float32 and np.all(chunk.joints[:, :, 2] == 0)
    assert np.allclose(chunk.conf, 0.9) and chunk.present.all()
    assert bundle.motion[0].dims == 2 and bundle.motion[0].fps == pytest.approx(30, rel=1e-3)


def test_takes_follow_play_pause_seek_and_end(folder: tuple, tmp_path: Path) -> None:
    root, _ = folder
    takes = read_bundle(root, tmp_path / "cache").takes
    expected = [  # (track start, track end, server start)
        (3.0, 13.0, START + 10),
        (13.0, 18.0, START + 25),
        (40.0, TRACK_S, START + 30),
        (0.0, 10.0, START + 1190),
    ]
    assert len(takes) == len(expected)
    for take, (p0, p1, s0) in zip(takes, expected, strict=True):
        assert take.track_id == TRACK_ID and take.audio_path == root / "audio" / "song.ogg"
        assert take.track_start_s == pytest.approx(p0, abs=1e-6)
        assert take.track_end_s == pytest.approx(p1, abs=1e-6)
        assert take.server_start_s == pytest.approx(s0, abs=1e-6)
        assert take.shift_s == pytest.approx(p0 - s0, abs=1e-6)


def test_the_zip_download_reads_the_same(folder: tuple, tmp_path: Path) -> None:
    root, _ = folder
    cache = tmp_path / "cache"
    from_folder = read_bundle(root, cache)
    archive = _zip(root, tmp_path / "bundle.zip")
    from_zip = read_bundle(archive, cache)
    assert from_zip.files == [("bundle.zip", archive)]
    assert from_zip.clock_report == from_folder.clock_report
    for device_id in (CAM_A, CAM_B):
        assert np.array_equal(_times(from_zip, device_id), _times(from_folder, device_id))
    assert [(t.track_start_s, t.shift_s) for t in from_zip.takes] == [
        (t.track_start_s, t.shift_s) for t in from_folder.takes
    ]
    extracted = from_zip.takes[0].audio_path
    assert extracted.is_relative_to(cache / "bundles")
    assert extracted.read_bytes() == (root / "audio" / "song.ogg").read_bytes()
    assert read_bundle(archive, cache).takes[0].audio_path == extracted  # reused


def test_a_checksum_mismatch_is_refused_naming_the_file(folder: tuple, tmp_path: Path) -> None:
    root, _ = folder
    pose = root / "pose" / f"{CAM_A}.ndjson"
    pose.write_text(pose.read_text().replace('"t_device":1', '"t_device":2', 1))
    with pytest.raises(InputError, match=rf"{CAM_A}\.ndjson: sha256 does not match"):
        read_bundle(root, tmp_path / "cache")


def test_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    make_bundle(root, format_version=2)
    with pytest.raises(InputError, match="format_version 2 is not supported"):
        read_bundle(root, tmp_path / "cache")


def test_a_malformed_pose_line_is_refused_with_its_line(folder: tuple, tmp_path: Path) -> None:
    root, _ = folder
    pose = root / "pose" / f"{CAM_A}.ndjson"
    lines = pose.read_text().splitlines(keepends=True)
    lines[6] = lines[6][:40] + "\n"
    pose.write_text("".join(lines))
    _write_checksums(root)
    with pytest.raises(InputError, match=rf"{CAM_A}\.ndjson:7: not valid JSON"):
        read_bundle(root, tmp_path / "cache")


def test_missing_files_are_refused(folder: tuple, tmp_path: Path) -> None:
    root, _ = folder
    (root / "pose" / f"{CAM_B}.ndjson").unlink()
    with pytest.raises(InputError, match=r"listed in checksums\.sha256 but missing"):
        read_bundle(root, tmp_path / "cache")
    _write_checksums(root)
    with pytest.raises(InputError, match=rf"{CAM_B}\.ndjson: missing from the bundle"):
        read_bundle(root, tmp_path / "cache")
    (root / "session.json").unlink()
    with pytest.raises(InputError, match=r"session\.json: missing"):
        read_bundle(root, tmp_path / "cache")


def test_bad_session_json_is_refused(folder: tuple, tmp_path: Path) -> None:
    root, _ = folder
    (root / "session.json").write_text('{"format": "motionmix.session-bundle",\n  oops}\n')
    with pytest.raises(InputError, match=r"session.json: not valid JSON .*line 2"):
        read_bundle(root, tmp_path / "cache")


def test_mediapipe_keypoints_become_coco17_and_vision19_is_skipped(tmp_path: Path) -> None:
    make_bundle(tmp_path / "mp", a_format="mediapipe33")
    bundle = read_bundle(tmp_path / "mp", tmp_path / "cache")
    chunk = next(iter(bundle.motion[0].chunks()))
    # x was 0.01 × the MediaPipe index: COCO's left shoulder is MediaPipe's 11, left ankle 27
    assert chunk.joints[0, 5, 0] == pytest.approx(0.11)
    assert chunk.joints[0, 15, 0] == pytest.approx(0.27)
    make_bundle(tmp_path / "v", a_format="vision19")
    bundle = read_bundle(tmp_path / "v", tmp_path / "cache")
    assert [m.name for m in bundle.motion] == [CAM_B]
    summary = next(d for d in bundle.devices if d["id"] == CAM_A)
    assert summary["skipped"] == "keypoint format vision19 has no COCO-17 mapping"
