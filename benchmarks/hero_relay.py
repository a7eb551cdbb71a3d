"""Hero relay: frame rate, glass-to-glass latency, switch time and CPU, at 640x480 and 30 fps.

It starts `manage.py serve` (tests.support.server) in a fresh folder, embedded (SQLite and the
in-memory channel layer), with the relay offering 127.0.0.1 as its ICE host candidate. It
registers 4 cameras through the device API and keeps them online with a heartbeat each per
second, logs an operator in through the login form, creates a session and starts it (every
online camera takes part; Cam 1 is on air first).

Every peer of the benchmark runs in this process, on loopback: publishers are aiortc peers whose
track draws a frame code (devices/video_code.py: source and CLOCK_MONOTONIC stamp) into each
640x480 frame, 30 a second, and publishes it with WHIP (`POST /api/v1/whip`); viewers are aiortc
peers that watch the session's hero with WHEP (`POST /sessions/<id>/whep`) and read the code of
every decoded frame. Per codec (VP8, H.264; the offers prefer it on both sides) it measures
configurations of 1, 2 and 4 publishers and 1 and 3 viewers, in an order that adds or removes
peers one step at a time. For each:

- the frames each viewer decoded per second over `--seconds` (mean and lowest over viewers);
- glass-to-glass latency: `age_ms(code.stamp_ms, stamp_now())` at the arrival of every decoded
  frame at every viewer, p50/p95/max;
- the CPU of the server (the serve process, its threads and any child process) over the same
  window as % of one core, and that divided by the viewers; this process's own CPU and the
  machine's (the two cores are shared by the encoders and decoders here and by the server);
- with 2 or more publishers, `--switches` hero switches spaced `--spacing` s, cycling over the
  publishers through the operator's `POST /registry/devices/<id>/hero`: from just before the
  request until the first frame of the new source at each viewer, p50/p95 (null for 1).

The floor, in the same run, per codec: one publishing peer straight to one viewing peer in this
process (no relay, one encode and one decode), same size, rate and codec. The relay's addition
is the relay's p50 with 1 publisher and 1 viewer minus the floor's p50. Aims: that addition
<= 33 ms, and switches <= 100 ms at p95 in every configuration; the script prints MET or NOT MET.

    .venv/bin/python benchmarks/hero_relay.py [--seconds 8] [--quick] [--json PATH] [--keep]

The JSON report goes to stdout (and --json PATH); progress and the table go to stderr. Times on
both sides of the process boundary are CLOCK_MONOTONIC of the one machine (Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit_report, log, percentile, work_directory  # noqa: E402
from benchmarks.machine import machine_busy_s, process_cpu_s  # noqa: E402
from devices.ice import ice_host_addresses_apply  # noqa: E402
from devices.video_code import STAMP_MASK, age_ms  # noqa: E402
from director.hero.sdp import SDP_TYPE, answer_codec  # noqa: E402
from tests.support.api import heartbeat_body, register_body  # noqa: E402
from tests.support.server import RunningServer, running_server  # noqa: E402
from tests.support.webrtc import CodedTrack, Sink, answer, offer_publish, offer_watch  # noqa: E402

SIZE = (640, 480)
FPS = 30
CODECS = ("vp8", "h264")
PUBLISHERS = (1, 2, 4)
VIEWERS = (1, 3)
# Each step adds or removes peers from the last, so no configuration starts from nothing.
ORDER = ((1, 1), (1, 3), (2, 3), (2, 1), (4, 1), (4, 3))
CAMERAS = max(PUBLISHERS)
AIM_ADDED_P50_MS = 33.0
AIM_SWITCH_P95_MS = 100.0
LOOPBACK = "127.0.0.1"
# The server's heartbeat interval: a camera is offline after 3 missed (6 s); this process
# beats every second, so a busy second or two here does not take a camera off the session.
SERVER_HEARTBEAT_INTERVAL_S = 2
BEAT_EVERY_S = 1.0
REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
# Frames of the on-air camera every viewer must decode before a window begins.
FIRST_FRAMES = 10
SWITCH_TIMEOUT_S = 3.0
POLL_S = 0.01
# No run may take longer than this, whatever the options: the heartbeats stop here too.
RUN_LIMIT_S = 1800.0
STARTED = time.monotonic()


@dataclass(frozen=True)
class Plan:
    seconds: float  # each measured window (steady and floor)
    settle_s: float  # after the first frames, before a window: the encoders' rate settles
    switches: int
    spacing_s: float


FULL = Plan(seconds=8.0, settle_s=1.0, switches=10, spacing_s=0.5)
QUICK = Plan(seconds=1.5, settle_s=0.3, switches=3, spacing_s=0.35)


def step(message: str) -> None:
    log(f"[{time.monotonic() - STARTED:6.1f} s] {message}")


def ms_summary(values: list[float]) -> dict[str, Any]:
    """n, p50, p95, max and mean in ms, rounded to 0.1 ms (None for none)."""
    ordered = sorted(values)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "n": len(ordered),
        "p50": r(percentile(ordered, 50)),
        "p95": r(percentile(ordered, 95)),
        "max": r(ordered[-1] if ordered else None),
        "mean": r(sum(ordered) / len(ordered) if ordered else None),
    }


def arrival_age_ms(stamp_ms: int, at: float) -> int:
    """The frame's age when it arrived: `age_ms(stamp, stamp_now())` as read at `at` (the
    sink notes time.monotonic() on arrival, the clock stamp_now() reads)."""
    return age_ms(stamp_ms, int(at * 1000) & STAMP_MASK)


# --- CPU ------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (serve starts children only for some settings)."""
    found: list[int] = []
    queue = [pid]
    for _ in range(1000):  # a bound: a process tree here has a handful
        if not queue:
            break
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
                found += [int(c) for c in children]
                queue += [int(c) for c in children]
    return found


@dataclass(frozen=True)
class Cpu:
    wall: float
    server: float  # the serve process: Daphne, the relay, every thread
    server_children: float
    benchmark: float
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, server_pid: int) -> Cpu:
        busy, total = machine_busy_s()
        return cls(
            wall=time.perf_counter(),
            server=process_cpu_s(server_pid),
            server_children=sum(process_cpu_s(c) for c in descendants(server_pid)),
            benchmark=time.process_time(),
            machine_busy=busy,
            machine_total=total,
        )


def cpu_pct(before: Cpu, after: Cpu, *, viewers: int | None) -> dict[str, Any]:
    """% of one core between two samples."""
    wall = max(after.wall - before.wall, 1e-9)
    cores = os.cpu_count() or 1
    server = (after.server - before.server) / wall
    children = max(0.0, after.server_children - before.server_children) / wall
    benchmark = (after.benchmark - before.benchmark) / wall
    machine = cores * (after.machine_busy - before.machine_busy)
    machine /= max(after.machine_total - before.machine_total, 1e-9)
    pct: dict[str, Any] = {
        "server": round(100 * server, 1),
        "server_children": round(100 * children, 1),
        "server_total": round(100 * (server + children), 1),
        "benchmark": round(100 * benchmark, 1),
        "machine": round(100 * machine, 1),
        "machine_capacity": 100 * cores,
        "rest_of_machine": round(100 * max(0.0, machine - server - children - benchmark), 1),
    }
    if viewers:
        pct["server_per_viewer"] = round(100 * (server + children) / viewers, 1)
    return pct


# --- The operator and the cameras, over HTTP -------------------------------------------------


@dataclass
class Camera:
    index: int  # its frames carry source index + 1
    device_id: str
    token: str
    pc: RTCPeerConnection | None = None
    track: CodedTrack | None = None
    location: str | None = None
    codec: str = ""

    @property
    def source(self) -> int:
        return self.index + 1


@dataclass
class Watcher:
    pc: RTCPeerConnection
    sink: Sink
    location: str
    codec: str


@dataclass
class Shoot:
    """The session, its cameras and the peers of this process; `close()` ends every peer."""

    server: RunningServer
    operator: httpx.AsyncClient
    devices: httpx.AsyncClient
    cameras: list[Camera]
    session_id: str = ""
    hero: int = 0  # index of the camera on air
    watchers: list[Watcher] = field(default_factory=list)
    # Floor peers, open only while the floor is measured, listed here so an error closes them.
    loose: list[RTCPeerConnection] = field(default_factory=list)

    @property
    def publishing(self) -> list[Camera]:
        return [c for c in self.cameras if c.pc is not None]

    def csrf(self) -> dict[str, str]:
        return {"X-CSRFToken": self.operator.cookies.get("csrftoken") or ""}

    async def publish(self, camera: Camera, codec: str) -> None:
        track = CodedTrack(camera.source, fps=FPS, size=SIZE)
        pc = await offer_publish(track, codec=codec)
        camera.pc, camera.track = pc, track
        reply = await self.devices.post(
            "/api/v1/whip",
            content=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {camera.token}", "Content-Type": SDP_TYPE},
        )
        if reply.status_code != 201:
            raise RuntimeError(
                f"WHIP for camera {camera.source} answered {reply.status_code}: {reply.text[:300]}"
            )
        camera.location = reply.headers["Location"]
        camera.codec = answer_codec(reply.text)
        await answer(pc, reply.text)

    async def unpublish(self, camera: Camera) -> None:
        pc, track, location = camera.pc, camera.track, camera.location
        camera.pc, camera.track, camera.location = None, None, None
        try:
            if location is not None:
                with contextlib.suppress(httpx.HTTPError):
                    await self.devices.delete(
                        location, headers={"Authorization": f"Bearer {camera.token}"}
                    )
        finally:
            if track is not None:
                track.stop()
            if pc is not None:
                await pc.close()

    async def watch(self, codec: str) -> Watcher:
        sink = Sink()
        pc = await offer_watch(sink, codec=codec)
        watcher = Watcher(pc=pc, sink=sink, location="", codec="")
        self.watchers.append(watcher)
        reply = await self.operator.post(
            f"/sessions/{self.session_id}/whep",
            content=pc.localDescription.sdp,
            headers={"Content-Type": SDP_TYPE, **self.csrf()},
        )
        if reply.status_code != 201:
            raise RuntimeError(f"WHEP answered {reply.status_code}: {reply.text[:300]}")
        watcher.location = reply.headers["Location"]
        watcher.codec = answer_codec(reply.text)
        await answer(pc, reply.text)
        return watcher

    async def unwatch(self, watcher: Watcher) -> None:
        self.watchers.remove(watcher)
        watcher.sink.stop()
        try:
            if watcher.location:
                with contextlib.suppress(httpx.HTTPError):
                    await self.operator.delete(watcher.location, headers=self.csrf())
        finally:
            await watcher.pc.close()

    async def switch(self, index: int) -> int:
        """Put camera `index` on air as the operator does; the HTTP status."""
        reply = await self.operator.post(
            f"/registry/devices/{self.cameras[index].device_id}/hero", headers=self.csrf()
        )
        if reply.status_code == 200:
            self.hero = index
        return reply.status_code

    async def close(self) -> None:
        for watcher in list(self.watchers):
            with contextlib.suppress(Exception):
                await self.unwatch(watcher)
        for camera in self.cameras:
            with contextlib.suppress(Exception):
                await self.unpublish(camera)
        for pc in self.loose:
            with contextlib.suppress(Exception):
                await pc.close()
        self.loose.clear()


async def register_cameras(client: httpx.AsyncClient, code: str) -> list[Camera]:
    cameras = []
    for index in range(CAMERAS):
        body = register_body(code, install_id=f"bench-hero-{index}", name=f"Relay cam {index + 1}")
        reply = await client.post("/api/v1/devices/register", json=body)
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"registering camera {index + 1} answered {reply.status_code}")
        data = reply.json()
        cameras.append(Camera(index=index, device_id=data["device_id"], token=data["token"]))
    return cameras


async def heartbeats(client: httpx.AsyncClient, cameras: list[Camera], stop: asyncio.Event) -> None:
    """Every camera beats once a second until `stop` (or the run's limit)."""
    for _ in range(int(RUN_LIMIT_S / BEAT_EVERY_S)):
        for camera in cameras:
            with contextlib.suppress(httpx.HTTPError):
                await client.post(
                    "/api/v1/devices/heartbeat",
                    json=heartbeat_body(),
                    headers={"Authorization": f"Bearer {camera.token}"},
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BEAT_EVERY_S)
        if stop.is_set():
            return


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> None:
    """Through the login form, as a person would; the client keeps the cookies."""
    page = await client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    if token is None:
        raise RuntimeError("the login page has no CSRF token")
    reply = await client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
    )
    if reply.status_code != 302 or "sessionid" not in client.cookies:
        raise RuntimeError(f"logging in answered {reply.status_code}")


async def start_session(shoot: Shoot) -> None:
    """Create a session and start it through the operator's pages (all cameras online)."""
    reply = await shoot.operator.post(
        "/sessions/new", data={"name": "Hero relay benchmark"}, headers=shoot.csrf()
    )
    if reply.status_code != 302:
        raise RuntimeError(f"creating the session answered {reply.status_code}")
    page = await shoot.operator.get("/")
    found = re.search(r"/sessions/([0-9a-f-]{36})/start", page.text)
    if found is None:
        raise RuntimeError("the session list shows no session to start")
    shoot.session_id = found.group(1)
    reply = await shoot.operator.post(f"/sessions/{shoot.session_id}/start", headers=shoot.csrf())
    if reply.status_code != 200:
        raise RuntimeError(f"starting the session answered {reply.status_code}: {reply.text[:200]}")
    shoot.hero = 0  # the first camera by name goes on air


# --- Measuring --------------------------------------------------------------------------------


async def wait_for_frames(sinks: list[Sink], source: int, since: float, what: str) -> None:
    """Until every sink decoded FIRST_FRAMES frames of `source` after `since`."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        short = [
            i
            for i, sink in enumerate(sinks)
            if sum(1 for at, c in sink.frames if at >= since and c and c.source == source)
            < FIRST_FRAMES
        ]
        if not short:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what}: viewers {short} got fewer than {FIRST_FRAMES} frames of source "
                f"{source} in {CONNECT_TIMEOUT_S:g} s; see the server log (--keep)"
            )
        await asyncio.sleep(0.05)


def window(sinks: list[Sink], begin: float, end: float) -> dict[str, Any]:
    """Frame rate and latency of the sinks' frames that arrived in [begin, end). A frame whose
    code does not read (a decode damaged by a lost packet) counts in the rate, not in the
    latency."""
    seconds = end - begin
    ages: list[float] = []
    viewers: list[dict[str, Any]] = []
    for sink in sinks:
        got = [(at, code) for at, code in sink.frames if begin <= at < end]
        mine = [arrival_age_ms(code.stamp_ms, at) for at, code in got if code is not None]
        ages += mine
        viewers.append(
            {
                "fps": round(len(got) / seconds, 1),
                "frames": len(got),
                "unreadable_frames": len(got) - len(mine),
                "latency_p50_ms": percentile(sorted(mine), 50),
            }
        )
    rates = [v["fps"] for v in viewers]
    frames = sum(v["frames"] for v in viewers)
    unreadable = sum(v["unreadable_frames"] for v in viewers)
    return {
        "fps_mean": round(sum(rates) / len(rates), 1) if rates else None,
        "fps_min": min(rates) if rates else None,
        "frames": frames,
        "unreadable_frames": unreadable,
        "unreadable_share": round(unreadable / frames, 3) if frames else None,
        "latency_ms": ms_summary(ages),
        "per_viewer": viewers,
    }


async def measure_window(
    sinks: list[Sink], server_pid: int, seconds: float, *, viewers: int | None
) -> dict[str, Any]:
    before = Cpu.take(server_pid)
    begin = time.monotonic()
    await asyncio.sleep(seconds)
    end = time.monotonic()
    after = Cpu.take(server_pid)
    return {
        "seconds": round(end - begin, 2),
        **window(sinks, begin, end),
        "cpu_pct_of_one_core": cpu_pct(before, after, viewers=viewers),
    }


async def measure_switches(shoot: Shoot, plan: Plan) -> dict[str, Any]:
    """Cycle the hero over the publishers; per switch and viewer, from just before the request
    to the first frame of the new source there."""
    sinks = [w.sink for w in shoot.watchers]
    count = len(shoot.publishing)
    samples: list[float] = []
    requests: list[float] = []
    last_viewer: list[float] = []
    after_answer: list[float] = []
    missed = 0
    refused = 0
    for _ in range(plan.switches):
        target = (shoot.hero + 1) % count
        source = shoot.cameras[target].source
        marks = [len(sink.frames) for sink in sinks]
        t0 = time.monotonic()
        status = await shoot.switch(target)
        answered = time.monotonic()
        slot = t0 + plan.spacing_s
        if status != 200:
            refused += 1
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            continue
        requests.append((answered - t0) * 1000)
        firsts: list[float | None] = [None] * len(sinks)
        deadline = t0 + SWITCH_TIMEOUT_S
        while any(f is None for f in firsts) and time.monotonic() < deadline:
            for i, sink in enumerate(sinks):
                if firsts[i] is not None:
                    continue
                for at, code in sink.frames[marks[i] :]:
                    if code is not None and code.source == source and at >= t0:
                        firsts[i] = at
                        break
                marks[i] = len(sink.frames)  # nothing awaited since the scan: all seen
            await asyncio.sleep(POLL_S)
        seen = [(f - t0) * 1000 for f in firsts if f is not None]
        missed += len(firsts) - len(seen)
        samples += seen
        # Negative when the frame came before the answer (the relay acts on the commit).
        after_answer += [(f - answered) * 1000 for f in firsts if f is not None]
        if len(seen) == len(firsts):
            last_viewer.append(max(seen))
        await asyncio.sleep(max(0.0, slot - time.monotonic()))
    return {
        "switches": plan.switches,
        "refused": refused,
        "missed": missed,
        "switch_ms": ms_summary(samples),
        "last_viewer_ms": ms_summary(last_viewer),
        "request_ms": ms_summary(requests),
        "after_answer_ms": ms_summary(after_answer),
    }


async def measure_floor(shoot: Shoot, codec: str, plan: Plan, server_pid: int) -> dict[str, Any]:
    """One publishing peer straight to one viewing peer in this process: no relay."""
    track = CodedTrack(0, fps=FPS, size=SIZE)
    sink = Sink()
    publisher = await offer_publish(track, codec=codec)
    shoot.loose.append(publisher)
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    shoot.loose.append(viewer)

    @viewer.on("track")
    def on_track(received: MediaStreamTrack) -> None:
        sink.start(received)

    try:
        await viewer.setRemoteDescription(publisher.localDescription)
        await viewer.setLocalDescription(await viewer.createAnswer())
        await answer(publisher, viewer.localDescription.sdp)
        await wait_for_frames([sink], 0, 0.0, f"floor {codec}")
        await asyncio.sleep(plan.settle_s)
        result = await measure_window([sink], server_pid, plan.seconds, viewers=None)
        return {"codec": answer_codec(viewer.localDescription.sdp), **result}
    finally:
        sink.stop()
        track.stop()
        for pc in (viewer, publisher):
            await pc.close()
            shoot.loose.remove(pc)


async def arrange(shoot: Shoot, codec: str, publishers: int, viewers: int) -> None:
    """Publish cameras 1..publishers (the rest stop), keep `viewers` viewers, put a publishing
    camera on air, and wait for the viewers' first frames of it."""
    for camera in shoot.cameras:
        if camera.index < publishers and camera.pc is None:
            await shoot.publish(camera, codec)
        elif camera.index >= publishers and camera.pc is not None:
            await shoot.unpublish(camera)
    while len(shoot.watchers) > viewers:
        await shoot.unwatch(shoot.watchers[-1])
    while len(shoot.watchers) < viewers:
        await shoot.watch(codec)
    since = time.monotonic()
    if shoot.hero >= publishers:
        status = await shoot.switch(0)
        if status != 200:
            raise RuntimeError(f"putting Cam 1 back on air answered {status}")
    await wait_for_frames(
        [w.sink for w in shoot.watchers],
        shoot.cameras[shoot.hero].source,
        since,
        f"{codec} {publishers} publishers {viewers} viewers",
    )


async def measure_codec(
    shoot: Shoot, codec: str, plan: Plan, server_pid: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    step(f"{codec}: floor (direct peer to peer, no relay) ...")
    floor = await measure_floor(shoot, codec, plan, server_pid)
    rows = []
    for publishers, viewers in ORDER:
        step(f"{codec}: {publishers} publishers, {viewers} viewers ...")
        await arrange(shoot, codec, publishers, viewers)
        await asyncio.sleep(plan.settle_s)
        steady = await measure_window(
            [w.sink for w in shoot.watchers], server_pid, plan.seconds, viewers=viewers
        )
        switching = await measure_switches(shoot, plan) if publishers > 1 else None
        rows.append(
            {
                "codec": codec,
                "publishers": publishers,
                "viewers": viewers,
                "publisher_codecs": sorted({c.codec for c in shoot.publishing}),
                "viewer_codecs": sorted({w.codec for w in shoot.watchers}),
                **steady,
                "switch": switching,
            }
        )
    # The next codec starts from nothing: every peer negotiated this one.
    for watcher in list(shoot.watchers):
        await shoot.unwatch(watcher)
    for camera in shoot.publishing:
        await shoot.unpublish(camera)
    return floor, rows


async def measure(server: RunningServer, plan: Plan, codecs: list[str]) -> dict[str, Any]:
    assert server.server is not None
    server_pid = server.server.pid
    code = await asyncio.to_thread(server.pairing_code)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=timeout) as devices,
        httpx.AsyncClient(base_url=server.url, timeout=timeout) as beats,
        httpx.AsyncClient(base_url=server.url, timeout=timeout) as operator,
    ):
        cameras = await register_cameras(devices, code)
        stop = asyncio.Event()
        beating = asyncio.create_task(heartbeats(beats, cameras, stop))
        shoot = Shoot(server=server, operator=operator, devices=devices, cameras=cameras)
        floors: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        try:
            await log_in(operator, server.username, server.password)
            await start_session(shoot)
            step(f"Session {shoot.session_id} is live with {len(cameras)} cameras.")
            idle = await measure_window([], server_pid, 1.0, viewers=None)
            for codec in codecs:
                floors[codec], codec_rows = await measure_codec(shoot, codec, plan, server_pid)
                rows += codec_rows
        finally:
            await shoot.close()
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(beating, REQUEST_TIMEOUT_S)
    return {
        "session_id": shoot.session_id,
        "idle_cpu_pct_of_one_core": idle["cpu_pct_of_one_core"],
        "floor": floors,
        "configs": rows,
    }


# --- Report -----------------------------------------------------------------------------------


def find_row(rows: list[dict[str, Any]], codec: str, publishers: int, viewers: int) -> Any:
    for row in rows:
        if (row["codec"], row["publishers"], row["viewers"]) == (codec, publishers, viewers):
            return row
    return None


def build_report(
    args: argparse.Namespace,
    plan: Plan,
    measured: dict[str, Any],
    load_before: tuple[float, float, float],
    elapsed_s: float,
) -> dict[str, Any]:
    rows = measured["configs"]
    floors = measured["floor"]
    added: dict[str, float | None] = {}
    marginal: dict[str, float | None] = {}
    for codec in args.codecs:
        relay = find_row(rows, codec, 1, 1)
        floor_p50 = floors.get(codec, {}).get("latency_ms", {}).get("p50")
        relay_p50 = relay["latency_ms"]["p50"] if relay else None
        added[codec] = (
            round(relay_p50 - floor_p50, 1)
            if relay_p50 is not None and floor_p50 is not None
            else None
        )
        for publishers in PUBLISHERS:
            one = find_row(rows, codec, publishers, 1)
            three = find_row(rows, codec, publishers, 3)
            if one and three:
                cost = three["cpu_pct_of_one_core"]["server_total"]
                cost -= one["cpu_pct_of_one_core"]["server_total"]
                marginal[f"{codec}/{publishers}"] = round(cost / 2, 1)
    switch_p95 = {
        f"{r['codec']}/{r['publishers']}/{r['viewers']}": r["switch"]["switch_ms"]["p95"]
        for r in rows
        if r["switch"] is not None
    }
    switch_missed = sum(r["switch"]["missed"] + r["switch"]["refused"] for r in rows if r["switch"])
    added_values = [v for v in added.values() if v is not None]
    switch_values = [v for v in switch_p95.values() if v is not None]
    return {
        "benchmark": "hero_relay",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "size": list(SIZE),
        "fps": FPS,
        "quick": args.quick,
        "plan": {
            "seconds": plan.seconds,
            "settle_s": plan.settle_s,
            "switches": plan.switches,
            "switch_spacing_s": plan.spacing_s,
        },
        "server": {
            "database": "sqlite",
            "channel_layer": "in-memory",
            "session_id": measured["session_id"],
        },
        "idle_cpu_pct_of_one_core": measured["idle_cpu_pct_of_one_core"],
        "floor": floors,
        "configs": rows,
        "relay_added_p50_ms": added,
        "marginal_server_cpu_pct_per_extra_viewer": marginal,
        "aims": {
            "relay_added_p50_ms": {
                "aim": AIM_ADDED_P50_MS,
                "measured": added,
                "met": len(added_values) == len(args.codecs)
                and all(v <= AIM_ADDED_P50_MS for v in added_values),
            },
            "switch_p95_ms": {
                "aim": AIM_SWITCH_P95_MS,
                "measured": switch_p95,
                "missed_or_refused": switch_missed,
                "met": bool(switch_values)
                and len(switch_values) == len(switch_p95)
                and switch_missed == 0
                and all(v <= AIM_SWITCH_P95_MS for v in switch_values),
            },
        },
        "elapsed_s": round(elapsed_s, 1),
    }


def render_table(report: dict[str, Any]) -> str:
    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f}"

    header = (
        "codec",
        "pub",
        "view",
        "fps mean/min",
        "unread %",
        "latency p50/p95 ms",
        "switch p50/p95 ms",
        "server CPU %",
        "per viewer %",
        "bench CPU %",
        "machine/rest %",
    )
    rows: list[tuple[str, ...]] = [header]
    for codec, floor in report["floor"].items():
        cpu = floor["cpu_pct_of_one_core"]
        rows.append(
            (
                f"{codec} floor",
                "1",
                "1",
                f"{num(floor['fps_mean'], 1)}/{num(floor['fps_min'], 1)}",
                share(floor["unreadable_share"]),
                f"{num(floor['latency_ms']['p50'])}/{num(floor['latency_ms']['p95'])}",
                "direct, no relay",
                num(cpu["server_total"], 1),
                "-",
                num(cpu["benchmark"], 1),
                f"{num(cpu['machine'])}/{num(cpu['rest_of_machine'])}",
            )
        )
    for row in report["configs"]:
        cpu = row["cpu_pct_of_one_core"]
        lat = row["latency_ms"]
        switch = row["switch"]
        rows.append(
            (
                row["codec"],
                str(row["publishers"]),
                str(row["viewers"]),
                f"{num(row['fps_mean'], 1)}/{num(row['fps_min'], 1)}",
                share(row["unreadable_share"]),
                f"{num(lat['p50'])}/{num(lat['p95'])}",
                "null"
                if switch is None
                else f"{num(switch['switch_ms']['p50'])}/{num(switch['switch_ms']['p95'])}"
                + (f" ({switch['missed']} missed)" if switch["missed"] else ""),
                num(cpu["server_total"], 1),
                num(cpu["server_per_viewer"], 1),
                num(cpu["benchmark"], 1),
                f"{num(cpu['machine'])}/{num(cpu['rest_of_machine'])}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    machine = report["machine"]
    plan = report["plan"]
    lines = [
        f"Hero relay, {report['size'][0]}x{report['size'][1]} at {report['fps']} fps, "
        f"{plan['seconds']:g} s windows, {plan['switches']} switches spaced "
        f"{plan['switch_spacing_s']:g} s; {machine['cores']} cores (machine % of "
        f"{100 * (machine['cores'] or 1)}), load average before {machine['loadavg_before'][0]}; "
        f"run {report['elapsed_s']:.0f} s",
        "",
    ]
    lines += [
        "  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row))
        for row in rows
    ]
    idle = report["idle_cpu_pct_of_one_core"]
    lines += [
        "",
        f"Idle server (session live, cameras beating, no peers): {idle['server_total']} % of a "
        "core. CPU % is of one core; server: the serve process and its children; rest: the "
        "machine less the server and this process (other work on a shared machine). unread %: "
        "decoded frames whose code did not read (a damaged picture); they count in fps, not in "
        "latency.",
        "Server CPU per extra viewer (3 viewers minus 1, halved): "
        + ", ".join(
            f"{key} publishers {value} %"
            for key, value in report["marginal_server_cpu_pct_per_extra_viewer"].items()
        ),
        "Switches, p50 of the request (until its answer) and of the first new frame after the "
        "answer: "
        + ", ".join(
            f"{r['codec']}/{r['publishers']}/{r['viewers']} "
            f"{num(r['switch']['request_ms']['p50'])} + "
            f"{num(r['switch']['after_answer_ms']['p50'])} ms"
            for r in report["configs"]
            if r["switch"]
        ),
        "Negotiated: "
        + ", ".join(f"{codec} floor {floor['codec']}" for codec, floor in report["floor"].items())
        + "; relay publishers "
        + ", ".join(sorted({c for r in report["configs"] for c in r["publisher_codecs"]}))
        + ", relay viewers "
        + ", ".join(sorted({c for r in report["configs"] for c in r["viewer_codecs"]})),
    ]
    aims = report["aims"]
    added = aims["relay_added_p50_ms"]
    switch = aims["switch_p95_ms"]
    worst = max((v for v in switch["measured"].values() if v is not None), default=None)
    lines += [
        "",
        f"Aim: the relay adds <= {added['aim']:g} ms at p50 (relay 1 publisher 1 viewer minus "
        "the direct floor): "
        + ", ".join(f"{codec} {num(v, 1)} ms" for codec, v in added["measured"].items())
        + ": "
        + ("MET" if added["met"] else "NOT MET"),
        f"Aim: switches <= {switch['aim']:g} ms at p95: worst {num(worst)} ms, "
        f"{switch['missed_or_refused']} missed or refused: "
        + ("MET" if switch["met"] else "NOT MET"),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        metavar="N",
        help=f"Measured seconds per configuration and floor (default {FULL.seconds:g}, "
        f"{QUICK.seconds:g} with --quick).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"Short windows, {QUICK.switches} switches per configuration: under a minute.",
    )
    parser.add_argument(
        "--codecs", default=",".join(CODECS), help="Comma-separated: vp8, h264 (default both)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
    args = parser.parse_args(argv)
    args.codecs = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    if not args.codecs or any(c not in CODECS for c in args.codecs):
        parser.error(f"--codecs takes a comma-separated list of {', '.join(CODECS)}")
    if args.seconds is not None and not 0.5 <= args.seconds <= 120:
        parser.error("--seconds must be 0.5..120")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    plan = Plan(
        seconds=args.seconds if args.seconds is not None else base.seconds,
        settle_s=base.settle_s,
        switches=base.switches,
        spacing_s=base.spacing_s,
    )
    load_before = os.getloadavg()
    started = time.monotonic()
    # Every peer here is on this machine: offer loopback, which aioice leaves out by default.
    ice_host_addresses_apply([LOOPBACK])
    extra_env = {
        # Embedded: SQLite and the in-memory layer, whatever this shell points at.
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CONVEX_URL": "",
        "MOTIONMIX_ICE_HOST_ADDRESSES": LOOPBACK,
        "MOTIONMIX_HEARTBEAT_INTERVAL_S": str(SERVER_HEARTBEAT_INTERVAL_S),
        # Ghost's policies would add their own periodic work to the server's CPU.
        "MOTIONMIX_GHOST_POLICY_INTERVAL_S": "86400",
        # The viewers' offers choose the codec.
        "MOTIONMIX_HERO_VIEWER_CODEC": "",
    }
    try:
        with work_directory(keep=args.keep, prefix="mm-hero-") as workdir:
            step(f"Starting the server in {workdir} ...")
            with running_server(workdir, extra_env=extra_env, celery=False) as server:
                measured = asyncio.run(measure(server, plan, args.codecs))
    finally:
        ice_host_addresses_apply([])
    report = build_report(args, plan, measured, load_before, time.monotonic() - started)
    emit_report(report, json_path=args.json, table=render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
