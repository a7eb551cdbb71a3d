"""How fast a recorded session exports, and whether its memory depends on the session's length.

Two sessions are recorded straight through the services into a database of this run (SQLite in
a temporary folder, or a throwaway PostgreSQL database with DATABASE_URL): four cameras
streaming 30 fps coco17 pose of the procedural dancer in 300-frame batches, a heartbeat round
trip every 2 s per camera, for `--short-minutes` and `--minutes` (default 15 and 60).

Each is then exported by `manage.py export_session` in a child process (its peak RSS is the
export's memory, Django included), twice for the short one (the two bundles must be
byte-identical), and the long one is also zipped as the session page does
(`director.export.jobs.session_export_run`). The floor is reading the same pose rows and
parsing their JSON, nothing else, in this process.

    .venv/bin/python benchmarks/session_export.py [--minutes 60] [--short-minutes 15] [--json F]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import emit_report, log, ratio, work_directory  # noqa: E402
from benchmarks.ledger_harness import (  # noqa: E402
    close_database,
    prepare_environment,
    setup_django,
)

FPS = 30
BATCH = 300
CAMERAS = 4
OFFSETS = (0.3125, -0.2, 1.75, -0.05)


def record(minutes: float, *, name: str, seed: int) -> str:
    """A stopped session of `minutes` with four cameras' pose and clock samples; its id."""
    from django.contrib.auth import get_user_model

    from devices import services as device_services
    from devices.models import ClockSample
    from devices.services.pose import pose_batch_ingest
    from devices.simulator_motion import ProceduralDancer
    from devices.simulator_pose import PinholeCamera
    from director import services
    from director.models import PhotoshootSession

    user, _ = get_user_model().objects.get_or_create(username="bench-operator")
    devices = [
        device_services.device_register(
            pairing_code=device_services.pairing_code_get_or_rotate().code,
            address="127.0.0.1",
            install_id=f"{name}-{i}",
            name=f"Cam {i + 1}",
            kind="iphone",
            model="iPhone 15 Pro",
            os_version="18.1",
            app_version="1.0",
            lenses=[{"id": "wide", "zoom": 1.0, "hfov_deg": 73.0}],
        ).device
        for i in range(CAMERAS)
    ]
    session = services.session_create(name=name, operator=user)
    services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])
    length_s = minutes * 60
    start = time.time() - length_s - 5
    dancer = ProceduralDancer()
    rng = random.Random(seed)
    for index, device in enumerate(devices):
        camera = PinholeCamera.from_placement(
            azimuth_deg=index * 90.0, distance_m=3.0, height_m=1.4, hfov_deg=73.0
        )
        offset = OFFSETS[index]
        frames_total = int(length_s * FPS)
        for first in range(0, frames_total, BATCH):
            ks = np.arange(first, min(frames_total, first + BATCH))
            points = camera.keypoints(dancer.joints_at_many(ks / FPS))
            frames = [
                {"t": start + k / FPS + offset, "keypoints": np.round(p, 4).tolist()}
                for k, p in zip(ks.tolist(), points, strict=True)
            ]
            pose_batch_ingest(device_id=device.pk, format="coco17", frames=frames)
        samples = []
        t = start - 30
        while t < start + length_s + 30:
            out, back = 0.002 + rng.expovariate(300), 0.002 + rng.expovariate(300)
            received, answered = t + out, t + out + 0.0005
            returned = answered + back
            sent_d, returned_d = t + offset, returned + offset
            samples.append(
                ClockSample(
                    device=device,
                    at=datetime.fromtimestamp(answered, tz=UTC),
                    sent_at=sent_d,
                    received_at=received,
                    server_time=answered,
                    returned_at=returned_d,
                    offset_s=((sent_d - received) + (returned_d - answered)) / 2,
                    delay_s=(returned_d - sent_d) - (answered - received),
                )
            )
            t += 2.0
        ClockSample.objects.bulk_create(samples, batch_size=2000)
    services.session_stop(session_id=session.pk)
    began = datetime.fromtimestamp(start, tz=UTC)
    PhotoshootSession.objects.filter(pk=session.pk).update(
        started_at=began, ended_at=began + timedelta(seconds=length_s + 1)
    )
    return str(session.pk)


def floor_read(session_id: str) -> tuple[float, int]:
    """Read and parse every pose row of the session: the least an export must do."""
    from devices.models import PoseBatch

    began = time.perf_counter()
    frames = 0
    rows = PoseBatch.objects.filter(session_id=session_id).values_list("frames", flat=True)
    for text in rows.iterator(chunk_size=200):
        frames += len(json.loads(text))
    return time.perf_counter() - began, frames


def export_child(session_id: str, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """`manage.py export_session` in a child; its wall time and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "export_session", session_id, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"export_session failed: {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "seconds": round(elapsed, 3),
        # ru_maxrss of children is the largest child so far: a later, smaller child shows no
        # new peak, so it is measured against what came before (see the table's note).
        "peak_rss_mb": round(peak / 1024, 1),
        "new_peak": peak > before,
        "output": done.stdout.strip(),
    }


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--short-minutes", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    with work_directory(keep=args.keep, prefix="mm-export-bench-") as workdir:
        drop = prepare_environment(workdir)
        import os

        env = dict(os.environ)
        try:
            mode = setup_django()
            log(f"Recording {args.short_minutes:g} and {args.minutes:g} minutes of 4 cameras…")
            t0 = time.perf_counter()
            short_id = record(args.short_minutes, name="bench-short", seed=1)
            long_id = record(args.minutes, name="bench-long", seed=2)
            record_s = time.perf_counter() - t0
            close_database()

            log("Floor: reading the long session's pose rows…")
            floor_s, frames = floor_read(long_id)
            close_database()
            # The short one first: each child's peak then shows as a new maximum.
            log("Exporting the short session twice…")
            short_a = export_child(short_id, workdir / "short-a", env)
            short_b = export_child(short_id, workdir / "short-b", env)
            identical = tree_digest(workdir / "short-a") == tree_digest(workdir / "short-b")
            log("Exporting the long session…")
            long_run = export_child(long_id, workdir / "long", env)
            bundle_bytes = sum(
                p.stat().st_size for p in (workdir / "long").rglob("*") if p.is_file()
            )

            log("Zipping the long session as the session page does…")
            from django.conf import settings

            from director.export.jobs import session_export_run
            from director.export.services import session_export_request

            settings.MEDIA_ROOT = str(workdir / "media")
            export = session_export_request(session_id=uuid.UUID(long_id), requested_by="bench")
            began = time.perf_counter()
            finished = session_export_run(export_id=export.pk)
            zip_s = time.perf_counter() - began
            assert finished is not None and finished.state == "done", finished and finished.error
            close_database()
        finally:
            if drop is not None:
                close_database()
                drop()

    length_s = args.minutes * 60
    report = {
        "benchmark": "session_export",
        "mode": mode,
        "cameras": CAMERAS,
        "fps": FPS,
        "record_seconds": round(record_s, 1),
        "long": {
            "minutes": args.minutes,
            "frames": frames,
            "export_seconds": long_run["seconds"],
            "frames_per_second": round(frames / long_run["seconds"]),
            "times_real_time": round(length_s / long_run["seconds"], 1),
            "peak_rss_mb": long_run["peak_rss_mb"],
            "bundle_bytes": bundle_bytes,
            "zip_job_seconds": round(zip_s, 3),
            "zip_bytes": finished.size_bytes,
        },
        "short": {
            "minutes": args.short_minutes,
            "export_seconds": [short_a["seconds"], short_b["seconds"]],
            "peak_rss_mb": short_a["peak_rss_mb"],
            "byte_identical": identical,
        },
        "floor": {"read_and_parse_seconds": round(floor_s, 3)},
        "ratios": {
            "export_over_floor": ratio(long_run["seconds"], floor_s),
            "rss_long_over_short": ratio(long_run["peak_rss_mb"], short_a["peak_rss_mb"]),
            "long_peak_is_new": long_run["new_peak"],
        },
    }
    lo, sh = report["long"], report["short"]
    table = "\n".join(
        [
            f"Session export ({mode}), {CAMERAS} cameras at {FPS} fps",
            f"{'':28}{'short':>12}{'long':>12}",
            f"{'minutes':28}{sh['minutes']:>12g}{lo['minutes']:>12g}",
            f"{'export s (child process)':28}{sh['export_seconds'][0]:>12.2f}"
            f"{lo['export_seconds']:>12.2f}",
            f"{'peak RSS MB':28}{sh['peak_rss_mb']:>12.1f}{lo['peak_rss_mb']:>12.1f}",
            f"long: {lo['frames']:,} frames, {lo['frames_per_second']:,} frames/s, "
            f"{lo['times_real_time']}x real time; bundle {lo['bundle_bytes'] / 1e6:.1f} MB, "
            f"zip {lo['zip_bytes'] / 1e6:.1f} MB in {lo['zip_job_seconds']:.1f} s (bundle + zip)",
            f"floor (read + parse the rows): {report['floor']['read_and_parse_seconds']:.2f} s; "
            f"export / floor = {report['ratios']['export_over_floor']}",
            f"RSS long / short = {report['ratios']['rss_long_over_short']} "
            f"(long peak {'is' if lo and report['ratios']['long_peak_is_new'] else 'is not'} "
            "above the short's; 'is not' means it stayed at or below it)",
            f"short exported twice: byte-identical = {sh['byte_identical']}",
        ]
    )
    emit_report(report, json_path=args.json, table=table)


if __name__ == "__main__":
    main()
