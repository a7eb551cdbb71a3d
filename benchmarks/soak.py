"""Soak: a whole shoot for a bounded time, then counts, errors, memory and the ledger checked
end to end (recorded = synced = in Convex).

It starts the local Convex bridge (`tests.support.bridge.Bridge`) and a real server
(`tests.support.server.running_server`: `manage.py serve` on a loopback port with a fresh
database of its own, and CONVEX_URL pointing at the bridge, so the server's own sync runs: the
`ledger_sync --loop` child in the embedded mode, the Celery worker in the scaled one). Then:

1. `manage.py simulate_devices` runs --devices simulated iPhones in a process of its own: they
   pair, register, heartbeat every 2 s (the production interval), stream `coco17` pose at
   --pose-fps in a batch every 0.5 s, obey commands (half on the device WebSocket, half by long
   poll) and upload the stills they capture. Its stand-in operator (`--stand-in`, the `stand-in`
   login) starts a "Demo shoot" with every camera once all are online, puts Ghost in supervised
   mode and accepts, vetoes or lets run out each of Ghost's proposals on its default schedule.
   Ghost's own policies run on the server's schedule, with hero-staleness and the cooldowns
   shortened so that proposals come within minutes.
2. The director login presses Capture all (`POST /registry/capture-all`, as the page does) every
   --still-every seconds, and --pages operator pages hold the session's Live Director socket
   (`/ws/director/sessions/<id>/`, reconnecting as the page does: `tests.project.faults_support.
   LiveSocket`) and count every push by the parts it carries.
3. After --warmup seconds the measured window of --duration seconds starts: the server's RSS
   (and that of its helpers, the simulator and the bridge) is read from /proc every
   --sample-every seconds with the database's counts; CPU is taken at both ends of the window.
4. Teardown: the last captures land, the simulator stops (the phones unpublish), the director
   stops the session, and the run waits (bounded) until every camera is offline, no command is
   open and no new ledger event appears; then (bounded by --drain) until every outbox row is
   synced; then it reads every stream back from Convex (`sessionTimeline`, page by page, with
   the bridge's admin key as CONVEX_DEPLOY_KEY) and compares ids, counts and order
   (`benchmarks.ledger_harness.verify_convex`).

Video: every camera of a live session is asked to publish WHIP video, and the simulator has no
switch to refuse (a relay that refuses counts as an error on every camera, asked again every
30 s). The soak keeps it at the floor the simulator takes, 320x240 at --video-fps 1: 30 VP8
encodes a second in the simulator and 30 decodes in the server instead of 900 each at 30 fps.

    .venv/bin/python benchmarks/soak.py [--devices 30] [--duration 180] [--still-every 5] \
        [--pose-fps 10] [--pages 3] [--json PATH] [--keep]

With DATABASE_URL (PostgreSQL) and REDIS_URL set, both on this machine, it runs the scaled mode:
the server gets a fresh database of its own (dropped at the end), the Redis channel layer and a
Celery worker with beat. Traffic goes to 127.0.0.1 only. The JSON report goes to stdout (and
--json PATH); progress and the table go to stderr.

This module holds one soak's orchestration and main; the rest is beside it: soak_config.py
(the knobs), soak_proc.py (/proc), soak_reads.py (the server's database and the logs),
soak_operator.py (the operator's side and the loops) and soak_report.py (the report and table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit_report, log, work_directory  # noqa: E402
from benchmarks.machine import CpuSample, cpu_shares  # noqa: E402
from benchmarks.soak_config import (  # noqa: E402
    CAPTURE_GRACE_S,
    DEFAULT_DEVICES,
    DEFAULT_DRAIN_S,
    DEFAULT_DURATION_S,
    DEFAULT_PAGES,
    DEFAULT_POSE_FPS,
    DEFAULT_STILL_EVERY_S,
    DEFAULT_STILL_SIZE,
    DEFAULT_VIDEO_FPS,
    DEFAULT_WARMUP_S,
    LIVE_SESSION_TIMEOUT_S,
    LOOPBACK,
    QUIET_STEADY_S,
    QUIET_TIMEOUT_S,
    SAMPLE_EVERY_S,
    SIMULATOR_STOP_S,
    VIDEO_SIZE,
)
from benchmarks.soak_operator import (  # noqa: E402
    Page,
    Run,
    capture_loop,
    db_latencies,
    drain_pages,
    ping_loop,
    ping_report,
    post,
    sample_loop,
    take_sample,
    wait_for,
)
from benchmarks.soak_proc import Processes, status_kb  # noqa: E402
from benchmarks.soak_reads import (  # noqa: E402
    Database,
    db_final,
    db_sample,
    django_for,
    ledger_read_back,
    live_session_id,
    stand_in_login,
)
from benchmarks.soak_report import (  # noqa: E402
    build_report,
    describe_mode,
    render_table,
    run_server_env,
)
from director.bridge import bridge_unavailable_reason  # noqa: E402
from tests.project.faults_support import LiveSocket, Operator  # noqa: E402
from tests.support.bridge import Bridge  # noqa: E402
from tests.support.server import RunningServer, free_port, running_server  # noqa: E402

# --- One soak ----------------------------------------------------------------------------------


def start_simulator(
    server: RunningServer, args: argparse.Namespace, login: Path
) -> subprocess.Popen[bytes]:
    log_file = (server.workdir / "simulator.log").open("ab")
    command = [
        sys.executable,
        str(ROOT / "manage.py"),
        "simulate_devices",
        "--count",
        str(args.devices),
        "--url",
        server.url,
        "--install-prefix",
        "soak",
        "--seed",
        "7",
        "--still-size",
        args.still_size,
        "--video-size",
        VIDEO_SIZE,
        "--video-fps",
        str(args.video_fps),
        "--pose-fps",
        str(args.pose_fps),
        "--stand-in",
        str(login),
        "--stand-in-start-session",
        # A bound of its own: it never outlives the soak, whatever happens here.
        "--duration",
        str(int(args.budget_s)),
    ]
    # Its own process group, so nothing it starts outlives it.
    return subprocess.Popen(
        command,
        env=server.env,
        cwd=ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_simulator(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM (the phones unpublish and it prints its summary); returns the seconds it took."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SIMULATOR_STOP_S)
        except subprocess.TimeoutExpired:
            log("  the simulator did not stop in time; killed (no summary from it)")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    return round(time.monotonic() - started, 1)


async def soak(server: RunningServer, bridge: Bridge, args: argparse.Namespace) -> dict[str, Any]:
    db = Database()
    login = await db.run(stand_in_login)
    log(f"Starting {args.devices} simulated iPhones and the stand-in operator ...")
    simulator = start_simulator(server, args, login)
    assert bridge.running is not None
    run = Run(
        args=args,
        server=server,
        processes=Processes(server=server, simulator=simulator, bridge_pid=bridge.running.proc.pid),
        db=db,
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        return await soak_with(run, tasks)
    finally:
        run.stop_captures.set()
        run.stop_sampling.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for page in run.pages:
            await page.socket.stop()
        await asyncio.to_thread(stop_simulator, simulator)
        db.close()


async def soak_with(run: Run, tasks: list[asyncio.Task[None]]) -> dict[str, Any]:
    args, server, db = run.args, run.server, run.db
    simulator = run.processes.simulator

    async def session_live() -> str | None:
        if simulator.poll() is not None:
            raise RuntimeError(f"the simulator exited early; see {server.workdir}/simulator.log")
        return await db.run(live_session_id)

    session_id = await wait_for(
        "the stand-in's live session", session_live, timeout_s=LIVE_SESSION_TIMEOUT_S
    )
    live_after_s = round(run.elapsed(), 1)
    log(f"Session {session_id} is live after {live_after_s} s; {args.pages} pages open ...")
    # Operator logs in through the login form and raises if the login is refused.
    control = await asyncio.to_thread(Operator, server.url, server.username, server.password)
    try:
        for index in range(args.pages):
            operator = await asyncio.to_thread(
                Operator, server.url, server.username, server.password
            )
            try:
                answer = await asyncio.to_thread(operator.client.get, f"/sessions/{session_id}/")
                run.requests.record("GET /sessions/<id>/", answer.status_code)
                socket = LiveSocket(
                    url=server.url,
                    path=f"/ws/director/sessions/{session_id}/",
                    cookie=operator.cookie,
                )
            finally:
                # The socket carries the login's cookie; the page's HTTP client is done.
                await asyncio.to_thread(operator.close)
            socket.start()
            run.pages.append(Page(index=index + 1, socket=socket))
        tasks.append(asyncio.create_task(sample_loop(run)))
        tasks.append(asyncio.create_task(drain_pages(run)))
        tasks.append(asyncio.create_task(ping_loop(run)))
        captures = asyncio.create_task(capture_loop(run, control))
        tasks.append(captures)

        log(f"Warm-up: {args.warmup:g} s ...")
        await asyncio.sleep(args.warmup)
        run.phase = "window"
        window_start = await take_sample(run)
        cpu_before = CpuSample.take(server)
        others_before = run.processes.cpu_s()
        log(f"Soak window: {args.duration:g} s ...")
        await asyncio.sleep(args.duration)
        window_end = await take_sample(run)
        cpu_after = CpuSample.take(server)
        others_after = run.processes.cpu_s()
        hwm_kb = status_kb(run.processes.server_pid, "VmHWM")
        run.phase = "teardown"

        log("Teardown: the last captures land, the simulator stops, then the session ...")
        run.stop_captures.set()
        await captures  # a press still in flight is answered first
        # The last Capture all fires up to 3 s ahead: its stills are part of the window's work.
        with contextlib.suppress(TimeoutError):
            await wait_for(
                "the last captures",
                lambda: captures_done(run),
                timeout_s=CAPTURE_GRACE_S,
                every_s=0.5,
            )
        simulator_stop_s = await asyncio.to_thread(stop_simulator, simulator)
        await asyncio.to_thread(
            post, control, run.requests, "POST /sessions/<id>/stop", f"/sessions/{session_id}/stop"
        )
    finally:
        await asyncio.to_thread(control.close)

    quiet_s = await wait_quiet(run)
    for page in run.pages:
        await page.socket.stop()
    run.pushes()
    run.phase = "drain"
    log(f"Draining the outbox to Convex (at most {args.drain:g} s) ...")
    drain_s = await wait_synced(run)
    run.stop_sampling.set()
    log("Reading every stream back from Convex ...")
    convex = await db.run(ledger_read_back)
    final = await db.run(db_final, session_id)
    latency = await db.run(db_latencies, window_start["wall"], window_end["wall"])
    latency["ping"] = ping_report(run.pings)
    last = await take_sample(run)

    cpu = cpu_shares(
        cpu_before,
        cpu_after,
        sum(others_after[k] - others_before[k] for k in others_after),
    )
    wall = cpu_after.wall - cpu_before.wall
    for role in others_after:
        cpu[role] = round(100 * (others_after[role] - others_before[role]) / wall, 1)
    return build_report(
        run,
        session_id=session_id,
        live_after_s=live_after_s,
        window=(window_start, window_end),
        window_s=wall,
        hwm_kb=hwm_kb,
        cpu=cpu,
        phases={
            "simulator_stop_s": simulator_stop_s,
            "quiet_after_stop_s": quiet_s,
            "drain_s": drain_s,
        },
        last=last,
        convex=convex,
        final=final,
        latency=latency,
    )


async def captures_done(run: Run) -> bool:
    return (await run.db.run(db_sample))["open_captures"] == 0


async def wait_quiet(run: Run) -> float | None:
    """Until every camera is offline, no command is open and the outbox stopped growing: the
    session's last events (offline, expired commands) are recorded. None at the bound."""
    started = time.monotonic()
    last: int | None = None
    steady_since = started
    while time.monotonic() - started < QUIET_TIMEOUT_S:
        counts = await run.db.run(db_sample)
        recorded = counts["events_recorded"]
        if recorded != last:
            last, steady_since = recorded, time.monotonic()
        quiet = counts["devices_online"] == 0 and counts["open_commands"] == 0
        if quiet and time.monotonic() - steady_since >= QUIET_STEADY_S:
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)
    log(f"  still not quiet after {QUIET_TIMEOUT_S:g} s; going on")
    return None


async def wait_synced(run: Run) -> float | None:
    """Until every outbox row is synced (or refused for good); None at the bound."""
    started = time.monotonic()
    while time.monotonic() - started < run.args.drain:
        counts = await run.db.run(db_sample)
        if counts["events_synced"] + counts["events_failed"] >= counts["events_recorded"]:
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)
    return None


# --- Main ------------------------------------------------------------------------------------


def check_loopback() -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        url = os.environ.get(name, "")
        if url and (urlsplit(url).hostname or "") not in LOOPBACK:
            raise SystemExit(f"{name} points away from this machine; the soak talks to 127.0.0.1.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION_S, help="The measured window, s."
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=DEFAULT_WARMUP_S,
        help="Seconds of the same traffic after the session is live, before the window.",
    )
    parser.add_argument("--still-every", type=float, default=DEFAULT_STILL_EVERY_S, metavar="S")
    parser.add_argument("--still-size", default=DEFAULT_STILL_SIZE, metavar="WxH")
    parser.add_argument("--pose-fps", type=int, default=DEFAULT_POSE_FPS)
    parser.add_argument(
        "--video-fps", type=int, default=DEFAULT_VIDEO_FPS, help=f"The cameras' {VIDEO_SIZE} feed."
    )
    parser.add_argument("--pages", type=int, default=DEFAULT_PAGES)
    parser.add_argument("--sample-every", type=float, default=SAMPLE_EVERY_S, metavar="S")
    parser.add_argument(
        "--drain",
        type=float,
        default=DEFAULT_DRAIN_S,
        metavar="S",
        help="At most this long for the outbox to reach Convex after the session stops.",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Extra environment for the server (and the simulator), e.g. Ghost's thresholds.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 200:
        parser.error("--devices must be 1..200")
    if not 10 <= args.duration <= 3600 or not 0 <= args.warmup <= 600:
        parser.error("--duration must be 10..3600 s and --warmup 0..600 s")
    if not 1 <= args.still_every <= 600 or not 0 <= args.pose_fps <= 240:
        parser.error("--still-every must be 1..600 s and --pose-fps 0..240")
    if not 1 <= args.video_fps <= 60 or not 0 <= args.pages <= 20:
        parser.error("--video-fps must be 1..60 and --pages 0..20")
    if not 1 <= args.sample_every <= 60 or not 10 <= args.drain <= 1800:
        parser.error("--sample-every must be 1..60 s and --drain 10..1800 s")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    # Everything this run may take, all bounds included: every loop stops by it.
    args.budget_s = (
        LIVE_SESSION_TIMEOUT_S
        + args.warmup
        + args.duration
        + CAPTURE_GRACE_S
        + SIMULATOR_STOP_S
        + QUIET_TIMEOUT_S
        + args.drain
        + 60
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_loopback()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "motionmix.settings")
    mode = describe_mode(dict(os.environ))
    args.loadavg_before = [round(x, 2) for x in os.getloadavg()]
    with work_directory(keep=args.keep, prefix="mm-soak-") as workdir:
        # The bridge's port (and admin key) are chosen first so the server starts with
        # CONVEX_URL and CONVEX_DEPLOY_KEY; the bridge itself starts once this process's Django
        # points at the server's database (its start reads the settings), before any phone
        # records anything.
        bridge = Bridge(data=workdir / "convex-bridge.json", port=free_port())
        extra_env = {**run_server_env(args), **bridge.env}
        log(f"Starting the server ({mode['mode']} mode) in {workdir} ...")
        with running_server(workdir / "server", extra_env=extra_env) as server:
            django_for(server)
            reason = bridge_unavailable_reason()
            if reason:
                raise SystemExit(f"The soak needs the local Convex bridge: {reason}")
            bridge.start()
            try:
                report = asyncio.run(soak(server, bridge, args))
            finally:
                bridge.stop()
    emit_report(report, json_path=args.json, table=render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
