"""How fast `python -m training build` turns an hour of audio and pose into a dataset, and
whether its memory depends on the length.

The shared recordings (../shared/data) are looped to `--minutes` (default 60) and to
`--short-minutes` (default 15):

- audio: "Chaos God" decoded and repeated, written as FLAC (44.1 kHz mono) with PyAV;
- pose: the CMU salsa leader (`60_10`, BVH, 120 fps) repeated, and the MediaPipe street pose
  (10 fps, with its dropouts) as NDJSON keypoints repeated, each paired with that audio by a
  sidecar.

So an hour means one hour of audio with two hours of pose paired to it. Each length is built
by `python -m training build` in a child process with an empty cache (decoding included) and
rebuilt once with the warm cache (the second build must be byte-identical); each child reports
its own peak RSS. Real-time multiple = audio length / build wall time.

    .venv/bin/python benchmarks/training_build.py [--minutes 60] [--short-minutes 15] [--json F]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import emit_report, log, ratio, work_directory  # noqa: E402
from training.skeleton import MEDIAPIPE33_TO_COCO17  # noqa: E402

SHARED = Path(os.environ.get("MOTIONMIX_SHARED_DATA", ROOT.parent / "shared" / "data"))
SONG = SHARED / "music" / "muldjord-chaos-god" / "song.ogg"
LEADER = SHARED / "motion" / "cmu-salsa" / "60_10_scaled.bvh"
STREET = SHARED / "pose" / "vtest_mediapipe_pose.json.gz"
RATE = 44100

CHILD = """
import resource, runpy, sys
sys.argv = ["training", *sys.argv[1:]]
try:
    runpy.run_module("training", run_name="__main__")
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def looped_audio(seconds: float, out: Path) -> None:
    """The song, decoded to mono 44.1 kHz and repeated to `seconds`, as FLAC."""
    with av.open(str(SONG)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pieces = [
            frame.to_ndarray()[0]
            for decoded in container.decode(audio=0)
            for frame in resampler.resample(decoded)
        ]
    song = np.concatenate(pieces)
    total = int(seconds * RATE)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("flac", rate=RATE, layout="mono")
        written = 0
        while written < total:
            block = song[: min(len(song), total - written)]
            for start in range(0, len(block), 65536):
                piece = np.ascontiguousarray(block[start : start + 65536])[None, :]
                frame = av.AudioFrame.from_ndarray(piece, format="s16", layout="mono")
                frame.sample_rate = RATE
                frame.pts = written + start
                frame.time_base = Fraction(1, RATE)
                for packet in stream.encode(frame):
                    container.mux(packet)
            written += len(block)
        for packet in stream.encode(None):
            container.mux(packet)


def looped_bvh(seconds: float, out: Path) -> int:
    """The leader's take repeated to `seconds` (its frames in a loop)."""
    text = LEADER.read_text()
    head, _, motion = text.partition("MOTION")
    lines = motion.strip().splitlines()
    frame_time = float(lines[1].split(":")[1])
    frames = lines[2:]
    total = int(seconds / frame_time)
    with out.open("w") as file:
        file.write(f"{head}MOTION\nFrames: {total}\nFrame Time: {frame_time:.8f}\n")
        for index in range(total):
            file.write(frames[index % len(frames)] + "\n")
    return total


def looped_street(seconds: float, out: Path) -> int:
    """The street pose (10 fps) as NDJSON COCO-17 keypoints, repeated to `seconds`."""
    with gzip.open(STREET, "rt") as file:
        frames = json.load(file)["frames"]
    total = int(seconds * 10)
    with out.open("w") as file:
        for index in range(total):
            frame = frames[index % len(frames)]
            points = frame.get("kp2d")
            keypoints = (
                [[points[i][0], points[i][1], points[i][3]] for i in MEDIAPIPE33_TO_COCO17]
                if points
                else None
            )
            file.write(json.dumps({"t": index / 10, "keypoints": keypoints}) + "\n")
    return total


def make_inputs(minutes: float, root: Path) -> list[str]:
    root.mkdir(parents=True)
    seconds = minutes * 60
    looped_audio(seconds, root / "song.flac")
    bvh_frames = looped_bvh(seconds, root / "leader.bvh")
    street_frames = looped_street(seconds, root / "street.ndjson")
    pairing = {
        "source": f"bench-{minutes:g}",
        "audio": "song.flac",
        "motion": [
            {"file": "leader.bvh", "fps": 120, "name": "leader"},
            {"file": "street.ndjson", "fps": 10, "name": "street"},
        ],
    }
    (root / "pairing.json").write_text(json.dumps(pairing))
    log(f"  {minutes:g} min: {bvh_frames} BVH frames, {street_frames} NDJSON frames")
    return [str(root)]


def build_child(inputs: list[str], out: Path, cache: Path) -> dict[str, Any]:
    env = dict(os.environ, MOTIONMIX_TRAINING_CACHE=str(cache))
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "build", *inputs, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"training build failed: {done.stderr[-3000:]}")
    peak_kb = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    steps = [line for line in done.stderr.splitlines() if " done in " in line]
    return {
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "steps": steps,
        "stdout": done.stdout.strip().splitlines(),
    }


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def measure(minutes: float, workdir: Path) -> dict[str, Any]:
    log(f"Looping the shared data to {minutes:g} minutes…")
    inputs = make_inputs(minutes, workdir / f"in-{minutes:g}")
    cache = workdir / f"cache-{minutes:g}"
    log(f"Building {minutes:g} minutes (cold cache)…")
    cold = build_child(inputs, workdir / f"out-{minutes:g}-a", cache)
    log(f"Rebuilding {minutes:g} minutes (warm cache)…")
    warm = build_child(inputs, workdir / f"out-{minutes:g}-b", cache)
    manifest = json.loads((workdir / f"out-{minutes:g}-a" / "manifest.json").read_text())
    summary = manifest["summary"]
    identical = tree_digest(workdir / f"out-{minutes:g}-a") == tree_digest(
        workdir / f"out-{minutes:g}-b"
    )
    seconds = minutes * 60
    return {
        "minutes": minutes,
        "audio_seconds": seconds,
        "pose_hours": summary["hours"],
        "windows_kept": summary["windows"]["kept"],
        "windows_dropped": summary["windows"]["dropped"],
        "cold_seconds": cold["seconds"],
        "cold_times_real_time": round(seconds / cold["seconds"], 1),
        "warm_seconds": warm["seconds"],
        "warm_times_real_time": round(seconds / warm["seconds"], 1),
        "cold_peak_rss_mb": cold["peak_rss_mb"],
        "warm_peak_rss_mb": warm["peak_rss_mb"],
        "byte_identical": identical,
        "dataset_bytes": sum(p.stat().st_size for p in (workdir / f"out-{minutes:g}-a").iterdir()),
        "cold_steps": cold["steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--short-minutes", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    for path in (SONG, LEADER, STREET):
        if not path.exists():
            raise SystemExit(f"the shared recordings are not at {SHARED}: {path} is missing")

    with work_directory(keep=args.keep, prefix="mm-training-bench-") as workdir:
        short = measure(args.short_minutes, workdir)
        long = measure(args.minutes, workdir)

    report = {
        "benchmark": "training_build",
        "cpus": os.cpu_count(),
        "short": short,
        "long": long,
        "ratios": {
            "rss_long_over_short": ratio(long["cold_peak_rss_mb"], short["cold_peak_rss_mb"]),
            "length_long_over_short": ratio(long["minutes"], short["minutes"]),
            "seconds_long_over_short": ratio(long["cold_seconds"], short["cold_seconds"]),
        },
    }
    rows = [
        f"{'':<28}{short['minutes']:>10g} min{long['minutes']:>10g} min",
        f"{'pose paired (h)':<28}{short['pose_hours']:>14.2f}{long['pose_hours']:>14.2f}",
        f"{'windows kept / dropped':<28}"
        f"{short['windows_kept']:>8}/{short['windows_dropped']:<5}"
        f"{long['windows_kept']:>8}/{long['windows_dropped']:<5}",
        f"{'build, cold cache (s)':<28}{short['cold_seconds']:>14.1f}{long['cold_seconds']:>14.1f}",
        f"{'  × real time':<28}{short['cold_times_real_time']:>14.1f}"
        f"{long['cold_times_real_time']:>14.1f}",
        f"{'rebuild, warm cache (s)':<28}{short['warm_seconds']:>14.1f}"
        f"{long['warm_seconds']:>14.1f}",
        f"{'  × real time':<28}{short['warm_times_real_time']:>14.1f}"
        f"{long['warm_times_real_time']:>14.1f}",
        f"{'peak RSS, cold (MB)':<28}{short['cold_peak_rss_mb']:>14.1f}"
        f"{long['cold_peak_rss_mb']:>14.1f}",
        f"{'rebuild byte-identical':<28}{short['byte_identical']!s:>14}"
        f"{long['byte_identical']!s:>14}",
        f"peak RSS long/short: {report['ratios']['rss_long_over_short']} for "
        f"{report['ratios']['length_long_over_short']}× the length",
    ]
    emit_report(report, json_path=args.json, table="\n".join(rows))


if __name__ == "__main__":
    main()
