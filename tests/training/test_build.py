"""`python -m training build` on the real recordings in ../shared/data: the CMU salsa pair
(leader and follower, 120 fps) and the 10 fps MediaPipe street pose with dropouts, each paired
with "Chaos God" through a sidecar. Built twice: same bytes, same ids; verify; the loader; the
CLI; windows by rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training
from tests.support.shared_data import SHARED_DATA
from training.build import build
from training.config import BuildConfig, config_from_dict
from training.formats import read_motion
from training.progress import Progress
from training.resample import frame_range, resample
from training.timeline import FPS, InputError
from training.verify import verify
from training.windows import assign_splits, window_count, window_starts

ROOT = Path(__file__).resolve().parents[2]
SONG = SHARED_DATA / "music" / "muldjord-chaos-god" / "song.ogg"
SALSA = SHARED_DATA / "motion" / "cmu-salsa"
STREET = SHARED_DATA / "pose" / "vtest_mediapipe_pose.json.gz"
SALSA_OFFSET_S = 10.0


def folders(root: Path) -> list[str]:
    for path in (SONG, SALSA / "60_10_scaled.bvh", STREET):
        if not path.exists():
            pytest.skip(f"the shared recordings are not at {SHARED_DATA} (../shared/data)")
    salsa = root / "salsa"
    salsa.mkdir()
    (salsa / "pairing.json").write_text(
        json.dumps(
            {
                "source": "cmu-salsa",
                "audio": str(SONG),
                "motion": [
                    {
                        "file": str(SALSA / "60_10_scaled.bvh"),
                        "name": "leader",
                        "fps": 120,
                        "offset_s": SALSA_OFFSET_S,
                    },
                    {
                        "file": str(SALSA / "61_10_scaled.bvh"),
                        "name": "follower",
                        "fps": 120,
                        "offset_s": SALSA_OFFSET_S,
                    },
                ],
            }
        )
    )
    street = root / "street"
    street.mkdir()
    (street / "pairing.json").write_text(
        json.dumps(
            {
                "source": "vtest-street",
                "audio": str(SONG),
                "motion": [
                    {"file": str(STREET), "format": "mediapipe", "fps": 10, "name": "walker"}
                ],
            }
        )
    )
    return [str(salsa), str(street)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("build")
    inputs = folders(root)
    cache = root / "cache"
    quiet = Progress(quiet=True)
    first = build(inputs, root / "out1", BuildConfig(), cache_dir=cache, progress=quiet)
    second = build(inputs, root / "out2", BuildConfig(), cache_dir=cache, progress=quiet)
    return {"root": root, "inputs": inputs, "cache": cache, "first": first, "second": second}


def pairs_by_id(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {pair["pair_id"]: pair for pair in manifest["pairs"]}


def test_building_twice_gives_identical_bytes_and_the_same_ids(built: dict[str, Any]) -> None:
    one, two = built["root"] / "out1", built["root"] / "out2"
    names = sorted(path.name for path in one.iterdir())
    assert names == sorted(path.name for path in two.iterdir())
    assert {"manifest.json", "config.json", "checksums.sha256", "train-00000.npz"} <= set(names)
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert built["first"]["dataset_id"] == built["second"]["dataset_id"]
    assert built["first"]["run_id"] == built["second"]["run_id"]
    assert len(built["first"]["dataset_id"]) == 64


def test_the_manifest_names_inputs_outputs_config_versions_and_the_command(
    built: dict[str, Any],
) -> None:
    manifest = built["first"]
    given = [entry["given"] for entry in manifest["inputs"]]
    assert given == built["inputs"]
    hashed = {
        file["name"]: file["sha256"] for entry in manifest["inputs"] for file in entry["files"]
    }
    assert hashed[str(SONG)] == training.audio.sha256_file(SONG)
    assert set(manifest["toolchain"]) >= {"python", "numpy", "librosa", "av"}
    assert manifest["config"]["window_frames"] == 150 and manifest["config"]["stride_frames"] == 75
    assert manifest["reproduce"] == [
        "python",
        "-m",
        "training",
        "build",
        *built["inputs"],
        "--out",
        "<DIR>",
    ]
    outputs = {entry["name"] for entry in manifest["outputs"]}
    assert "config.json" in outputs and all(
        name.endswith(".npz") for name in outputs - {"config.json"}
    )


def test_leader_and_follower_land_on_one_clock_at_30_fps(built: dict[str, Any]) -> None:
    pairs = pairs_by_id(built["first"])
    leader, follower = pairs["cmu-salsa/leader"], pairs["cmu-salsa/follower"]
    # 1197 frames at 120 fps span 9.9667 s: 300 frames at 30 fps, from audio time 10 s.
    for pair in (leader, follower):
        assert pair["frames"] == 300
        assert pair["first_frame"] == round(SALSA_OFFSET_S * FPS)
        assert pair["missing_frames"] == 0
        assert pair["windows"] == {"total": 3, "kept": 3, "dropped": 0}
        assert pair["split"] == leader["split"]


def test_the_street_pose_counts_missing_frames_and_drops_windows_by_rule(
    built: dict[str, Any],
) -> None:
    pair = pairs_by_id(built["first"])["vtest-street/walker"]
    config = BuildConfig()
    assert pair["missing_frames"] > 0
    assert pair["windows"]["dropped"] > 0 and pair["windows"]["kept"] > 0
    assert pair["windows"]["total"] == window_count(pair["frames"], 150, 75)
    # Re-derive which windows the rule keeps, from the motion resampled here.
    source = read_motion(STREET, format="mediapipe", fps=10, name="walker")
    blocks = list(
        resample(
            source.chunks(),
            shift_s=0.0,
            first_frame=pair["first_frame"],
            n_frames=pair["frames"],
            max_gap_s=config.max_gap_s,
        )
    )
    missing = np.concatenate([block.missing for block in blocks])
    assert int(missing.sum()) == pair["missing_frames"]
    expected = [
        index
        for index, start in enumerate(window_starts(pair["frames"], 150, 75))
        if missing[start : start + 150].mean() <= config.max_missing_fraction
    ]
    dataset = training.load(built["root"] / "out1")
    kept = [w.window_index for w in dataset if w.pair_id == "vtest-street/walker"]
    assert kept == expected
    assert len(expected) == pair["windows"]["kept"]


def test_sources_split_whole_and_the_loader_yields_every_kept_window(built: dict[str, Any]) -> None:
    manifest = built["first"]
    splits = {pair["source"]: pair["split"] for pair in manifest["pairs"]}
    assert sorted(splits.values()) == ["train", "val"]
    assert splits == assign_splits(list(splits), 0.2, 0)
    dataset = training.load(built["root"] / "out1")
    windows = list(dataset)
    assert len(windows) == len(dataset) == manifest["summary"]["windows"]["kept"]
    for window in windows:
        assert window.split == splits[window.pair_id.split("/")[0]]
        assert window.audio.shape == (150, 35) and window.audio.dtype == np.float32
        assert window.positions.shape == window.velocities.shape == (150, 17, 3)
        assert window.kinetic.shape == window.missing.shape == (150,)
        assert window.missing.mean() <= 0.2
        assert window.window_id.endswith(f"/w{window.window_index:05d}")
    assert [w.split for w in training.load(built["root"] / "out1", split="val")] == [
        "val"
    ] * manifest["splits"]["val"]["windows"]


def test_a_windows_audio_is_its_tracks_features_at_its_frames(built: dict[str, Any]) -> None:
    from training.audio import decode_audio
    from training.audio_features import audio_features

    features = audio_features(decode_audio(SONG, built["cache"]), built["cache"]).features
    window = next(iter(training.load(built["root"] / "out1")))
    start = window.start_frame
    assert np.array_equal(window.audio, np.asarray(features[start : start + 150]))


def test_verify_passes_then_detects_a_changed_byte(built: dict[str, Any], tmp_path: Path) -> None:
    assert verify(built["root"] / "out1").ok
    for name in ("train-00000.npz", "manifest.json", "config.json"):
        copy = tmp_path / name
        shutil.copytree(built["root"] / "out1", copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        result = verify(copy)
        assert not result.ok, name
        assert any(problem.startswith(name) for problem in result.problems), result.problems


def test_the_cli_builds_verifies_reports_and_inspects(
    built: dict[str, Any], tmp_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "training", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={"PATH": "/usr/bin:/bin", "MOTIONMIX_TRAINING_CACHE": str(built["cache"])},
        )

    out = tmp_path / "cli"
    result = run("build", *built["inputs"], "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "pairs" in result.stderr and "done in" in result.stderr  # progress
    assert (out / "manifest.json").read_bytes() == (
        built["root"] / "out1" / "manifest.json"
    ).read_bytes()
    verified = run("verify", str(out))
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout
    report = run("report", str(out))
    assert report.returncode == 0, report.stderr
    manifest = built["first"]
    for text in (
        "== promotion decision ==",
        manifest["run_id"],
        manifest["dataset_id"],
        "reproduce:  python -m training build",
        "Beat Align Score (σ = 0.1 s)",
        "FACT (over motion beats)",
        "Bailando (over music beats)",
        "tempo agreement",
        "missing-frame rate",
        "alignment confidence",
    ):
        assert text in report.stdout, text
    inspected = run("inspect", str(out))
    assert inspected.returncode == 0, inspected.stderr
    assert "(150, 35)" in inspected.stdout and "(150, 17, 3)" in inspected.stdout
    (out / "val-00000.npz").write_bytes(b"not a shard")
    broken = run("verify", str(out))
    assert broken.returncode == 1 and "FAIL val-00000.npz" in broken.stdout
    refused = run("build", *built["inputs"], "--out", str(out))
    assert refused.returncode == 2 and "not an empty folder" in refused.stderr


@pytest.mark.parametrize(
    ("length", "expected"), [(0, 0), (149, 0), (150, 1), (224, 1), (225, 2), (300, 3), (1000, 12)]
)
def test_window_counts_follow_the_formula(length: int, expected: int) -> None:
    assert window_count(length, 150, 75) == expected
    assert len(window_starts(length, 150, 75)) == expected
    if length >= 150:
        assert expected == (length - 150) // 75 + 1


def test_the_split_is_by_source_seeded_and_stable() -> None:
    sources = [f"session-{n}" for n in range(10)]
    split = assign_splits(sources, 0.2, 7)
    assert sorted(split.values()).count("val") == 2
    assert assign_splits(list(reversed(sources)), 0.2, 7) == split
    assert assign_splits(sources, 0.2, 8) != split
    assert assign_splits(["only"], 0.2, 0) == {"only": "train"}
    assert sorted(assign_splits(["a", "b"], 0.01, 0).values()) == ["train", "val"]


def test_a_config_with_an_unknown_key_or_a_bad_value_is_refused() -> None:
    with pytest.raises(InputError, match="unknown setting 'windows'"):
        config_from_dict({"windows": 3})
    with pytest.raises(InputError, match="window_s must be a float"):
        config_from_dict({"window_s": "5"})
    with pytest.raises(InputError, match="fps is fixed at 30"):
        config_from_dict({"fps": 60})
    assert config_from_dict({"window_s": 4, "stride_s": 2}).window_frames == 120


def test_inputs_that_are_not_inputs_are_refused_with_the_reason(tmp_path: Path) -> None:
    quiet = Progress(quiet=True)
    with pytest.raises(InputError, match="no such file or folder"):
        build(
            [str(tmp_path / "nope")],
            tmp_path / "o",
            BuildConfig(),
            cache_dir=tmp_path,
            progress=quiet,
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an input"):
        build(
            [str(tmp_path / "empty")],
            tmp_path / "o",
            BuildConfig(),
            cache_dir=tmp_path,
            progress=quiet,
        )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pairing.json").write_text('{"audio": "song.ogg", ')
    with pytest.raises(InputError, match=r"pairing\.json: the sidecar is not valid JSON"):
        build([str(bad)], tmp_path / "o", BuildConfig(), cache_dir=tmp_path, progress=quiet)
    assert not (tmp_path / "o").exists()


def test_frame_range_covers_the_motion_on_the_grid() -> None:
    first, count = frame_range(0.0, 1197 / 120 - 1 / 120, SALSA_OFFSET_S)
    assert (first, count) == (300, 300)
