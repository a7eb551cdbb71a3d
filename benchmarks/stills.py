"""Stills benchmark: 12 MP JPEG uploads against a real server, until the operator sees them.

It starts `manage.py serve` in a temporary folder of its own (tests.support.server), registers
one camera per client through the API, logs an operator in and opens the registry's WebSocket
with that login's session cookie. Then `--clients` cameras upload `--uploads` distinct 12 MP
JPEGs (4032x3024, gradient under noise, 3-6 MB, every file unique so nothing deduplicates)
through `POST /api/v1/stills`, one request in flight per camera.

For every still it measures the upload's answer time and the time from the request's start
until a strip pushed on the operator's socket carries that still's id (upload to thumbnail
visible); then every thumbnail URL must answer 200. It also copies the same bytes to a file in
the same temporary folder with fsync, to put the upload rate next to the disk's own.

    .venv/bin/python benchmarks/stills.py [--clients 4] [--uploads 48] [--json PATH] [--keep]

With DATABASE_URL (PostgreSQL) and REDIS_URL set, the server runs in the scaled mode with a
fresh database of its own. The JSON report goes to stdout (and --json PATH); progress and the
table go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    emit_report,
    log,
    ratio,
    seconds_summary,
    work_directory,
)
from benchmarks.machine import CpuSample, cpu_shares  # noqa: E402
from director.stills import images  # noqa: E402  (Pillow only: no Django setup needed)
from tests.director.stills_support import meta_for  # noqa: E402
from tests.support.api import register_body  # noqa: E402
from tests.support.server import RunningServer, running_server  # noqa: E402

AIM_P95_S = 0.250
WIDTH, HEIGHT = 4032, 3024
DISTINCT_PICTURES = 3
REQUEST_TIMEOUT_S = 30.0
# After the last upload answers, how long pushes may still arrive before a still counts as
# never shown.
SETTLE_S = 5.0
STILL_ID = re.compile(r'data-still-id="([0-9a-f-]{36})"')
MB = 1_000_000


# --- Pictures --------------------------------------------------------------------------------


def base_picture(seed: int) -> bytes:
    """A 12 MP JPEG with photo-like entropy: gradients under gaussian noise."""
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    radial = Image.radial_gradient("L").resize((WIDTH, HEIGHT))
    channels = []
    for index, base in enumerate((gradient, radial, gradient.rotate(180))):
        noise = Image.effect_noise((WIDTH, HEIGHT), 10 + 2 * seed + index)
        channels.append(ImageChops.add(base, noise, 1, -128 + 8 * seed))
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, "JPEG", quality=90)
    return out.getvalue()


def unique_copy(picture: bytes, label: str) -> bytes:
    """The same picture with a JPEG comment segment after SOI: other bytes, same pixels."""
    comment = f"motionmix benchmark {label}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return picture[:2] + segment + picture[2:]


# --- Operator side ---------------------------------------------------------------------------


def operator_cookie(server: RunningServer) -> str:
    """Log in through the login form, as a person would; returns the session cookie."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError("the login page has no CSRF token")
        answer = client.post(
            "/accounts/login/",
            data={
                "username": server.username,
                "password": server.password,
                "csrfmiddlewaretoken": token.group(1),
            },
        )
        if answer.status_code != 302 or "sessionid" not in client.cookies:
            raise RuntimeError(f"logging in answered {answer.status_code}")
        return str(client.cookies["sessionid"])


@dataclass
class Watcher:
    """The operator's registry socket: when each still id first appeared in a push."""

    seen: dict[str, float] = field(default_factory=dict)
    pushes: int = 0
    bytes_received: int = 0
    wanted: set[str] = field(default_factory=set)
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def watch(self, socket: Any) -> None:
        async for message in socket:
            now = time.perf_counter()
            text = message if isinstance(message, str) else message.decode()
            self.pushes += 1
            self.bytes_received += len(text)
            for still_id in STILL_ID.findall(text):
                self.seen.setdefault(still_id, now)
            self.check()

    def check(self) -> None:
        if self.wanted and self.wanted <= self.seen.keys():
            self.all_seen.set()


# --- Device side -----------------------------------------------------------------------------


@dataclass
class Upload:
    index: int
    size: int
    started: float
    answered: float = 0.0
    status: int = 0
    still_id: str = ""
    error: str = ""


async def register(client: httpx.AsyncClient, code: str, index: int) -> tuple[str, str]:
    body = register_body(code, install_id=f"bench-still-{index}", name=f"Bench cam {index}")
    answer = await client.post("/api/v1/devices/register", json=body)
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"registering camera {index} answered {answer.status_code}")
    return answer.json()["device_id"], answer.json()["token"]


async def camera(
    url: str,
    token: str,
    todo: asyncio.Queue[tuple[int, bytes]],
    results: list[Upload],
    pace_s: float | None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    first = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for round_index in range(todo.qsize()):  # a bound: the queue only shrinks
            if todo.empty():
                return
            if pace_s is not None:
                # Every camera fires at the same instants, as in a capture-all every pace_s.
                await asyncio.sleep(max(0.0, first + round_index * pace_s - time.perf_counter()))
            index, data = todo.get_nowait()
            meta = meta_for(data)
            upload = Upload(index=index, size=len(data), started=time.perf_counter())
            try:
                answer = await client.post(
                    "/api/v1/stills",
                    headers=headers,
                    files={"file": (f"IMG_{index:04d}.JPG", data, "image/jpeg")},
                    data={"meta": json.dumps(meta)},
                )
                upload.status = answer.status_code
                if answer.status_code == 201:
                    upload.still_id = answer.json()["still_id"]
                else:
                    upload.error = answer.text[:300]
            except httpx.HTTPError as exc:
                upload.error = f"{type(exc).__name__}: {exc}"
            upload.answered = time.perf_counter()
            results.append(upload)


async def upload_all(
    url: str, tokens: list[str], pictures: list[tuple[int, bytes]], pace_s: float | None
) -> tuple[list[Upload], float]:
    todo: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in pictures:
        todo.put_nowait(item)
    results: list[Upload] = []
    started = time.perf_counter()
    await asyncio.gather(*(camera(url, token, todo, results, pace_s) for token in tokens))
    return results, time.perf_counter() - started


# --- Disk floor ------------------------------------------------------------------------------


def raw_copy_rate(workdir: Path, pictures: list[bytes]) -> dict[str, float]:
    """The same bytes written to files in the same folder, each fsynced: the disk's rate."""
    folder = workdir / "rawcopy"
    folder.mkdir()
    started = time.perf_counter()
    for index, data in enumerate(pictures):
        with open(folder / f"{index:04d}.jpg", "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    elapsed = time.perf_counter() - started
    total = sum(len(p) for p in pictures)
    return {"seconds": round(elapsed, 3), "mb_per_s": round(total / MB / elapsed, 1)}


def thumbnail_cost(picture: bytes, workdir: Path, rounds: int = 5) -> dict[str, float | None]:
    """The server's check-and-thumbnail step on one 12 MP JPEG, timed in this process."""
    path = workdir / "thumb-probe.jpg"
    path.write_bytes(picture)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        images.inspect(path, images.JPEG)
        times.append(time.perf_counter() - started)
    return seconds_summary(times)


# --- Run -------------------------------------------------------------------------------------


def describe_mode() -> dict[str, str]:
    database = os.environ.get("DATABASE_URL", "")
    db = "postgresql" if database.startswith(("postgres://", "postgresql://")) else "sqlite"
    layer = "redis" if os.environ.get("REDIS_URL") else "in-memory"
    mode = {("sqlite", "in-memory"): "embedded", ("postgresql", "redis"): "scaled"}.get(
        (db, layer), "mixed"
    )
    return {"mode": mode, "database": db, "channel_layer": layer}


async def measure(
    server: RunningServer, args: argparse.Namespace, warmup: list[bytes], timed: list[bytes]
) -> dict[str, Any]:
    cookie = operator_cookie(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:
        code = server.pairing_code()
        cameras = [await register(client, code, i + 1) for i in range(args.clients)]
    tokens = [token for _, token in cameras]
    ws_url = f"ws://127.0.0.1:{server.port}/ws/director/registry/"
    watcher = Watcher()
    async with websockets.connect(
        ws_url,
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": server.url},
        max_size=8 * 1024 * 1024,
    ) as socket:
        watching = asyncio.create_task(watcher.watch(socket))
        log(f"Warming up with {len(warmup)} uploads ...")
        await upload_all(server.url, tokens, list(enumerate(warmup)), None)
        log(f"Uploading {len(timed)} stills from {args.clients} cameras ...")
        before, client_cpu = CpuSample.take(server), time.process_time()
        uploads, elapsed = await upload_all(
            server.url,
            tokens,
            [(i + len(warmup), data) for i, data in enumerate(timed)],
            args.pace,
        )
        after, client_cpu = CpuSample.take(server), time.process_time() - client_cpu
        watcher.wanted = {u.still_id for u in uploads if u.still_id}
        watcher.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.all_seen.wait(), SETTLE_S)
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await watching

    stored = [u for u in uploads if u.status == 201]
    answer_s = [u.answered - u.started for u in stored]
    visible_s = [watcher.seen[u.still_id] - u.started for u in stored if u.still_id in watcher.seen]
    thumbs_ok = 0
    with httpx.Client(base_url=server.url, timeout=10, cookies={"sessionid": cookie}) as client:
        for upload in stored:
            answer = client.get(f"/stills/{upload.still_id}/thumb.jpg")
            thumbs_ok += answer.status_code == 200 and answer.content[:3] == b"\xff\xd8\xff"
    total_bytes = sum(u.size for u in stored)
    return {
        "uploads": len(uploads),
        "stored": len(stored),
        "errors": [f"{u.status}: {u.error}" for u in uploads if u.status != 201][:5],
        "elapsed_s": round(elapsed, 3),
        "mb_uploaded": round(total_bytes / MB, 1),
        "mean_file_mb": round(total_bytes / MB / max(len(stored), 1), 2),
        "throughput_mb_per_s": round(total_bytes / MB / elapsed, 1),
        "stills_per_s": round(len(stored) / elapsed, 2),
        "answer_s": seconds_summary(answer_s),
        "visible_s": seconds_summary(visible_s),
        "never_visible": len(stored) - len(visible_s),
        "thumbnails_ok": thumbs_ok,
        "socket_pushes": watcher.pushes,
        "socket_mb": round(watcher.bytes_received / MB, 2),
        # Shares of one core over the timed phase: 100 is one core busy all the time.
        "cpu_pct_of_one_core": cpu_shares(before, after, client_cpu),
        "server_cpu_ms_per_still": round(
            1000 * (after.server - before.server) / max(len(stored), 1), 1
        ),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    mode = describe_mode()
    load_before = os.getloadavg()
    log(f"Making {DISTINCT_PICTURES} distinct {WIDTH}x{HEIGHT} JPEGs ...")
    bases = [base_picture(seed) for seed in range(DISTINCT_PICTURES)]
    warmup = [unique_copy(bases[i % len(bases)], f"warmup {i}") for i in range(args.clients)]
    timed = [unique_copy(bases[i % len(bases)], f"still {i}") for i in range(args.uploads)]
    thumbnail = thumbnail_cost(bases[0], workdir)
    extra_env = {"MOTIONMIX_HEARTBEAT_INTERVAL_S": "60"}
    log(f"Starting the server ({mode['mode']} mode) in {workdir} ...")
    with running_server(workdir, extra_env=extra_env) as server:
        result = asyncio.run(measure(server, args, warmup, timed))
    # After the server: the disk is then not shared with the uploads being measured.
    disk = raw_copy_rate(workdir, timed)
    p95 = result["visible_s"]["p95"]
    met = (
        p95 is not None
        and p95 <= AIM_P95_S
        and result["stored"] == args.uploads
        and result["never_visible"] == 0
        and result["thumbnails_ok"] == result["stored"]
    )
    return {
        "benchmark": "stills",
        **mode,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "clients": args.clients,
        "pace_s": args.pace,
        "picture": {"width": WIDTH, "height": HEIGHT, "distinct": DISTINCT_PICTURES},
        "thumbnail_in_process_s": thumbnail,
        **result,
        "disk_raw_copy": disk,
        "upload_vs_disk": ratio(result["throughput_mb_per_s"], disk["mb_per_s"]),
        "aim": {"visible_p95_s": AIM_P95_S, "met": met},
    }


def render_table(report: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}"

    answer, visible, thumb = (
        report["answer_s"],
        report["visible_s"],
        report["thumbnail_in_process_s"],
    )
    rows = [
        ("", "p50 ms", "p95 ms", "max ms"),
        ("upload answered", ms(answer["p50"]), ms(answer["p95"]), ms(answer["max"])),
        ("thumbnail visible", ms(visible["p50"]), ms(visible["p95"]), ms(visible["max"])),
        ("check + thumbnail (1 JPEG)", ms(thumb["p50"]), ms(thumb["p95"]), ms(thumb["max"])),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    disk = report["disk_raw_copy"]
    lines = [
        f"Stills benchmark: {report['mode']} mode ({report['database']}, "
        f"{report['channel_layer']} channel layer), {report['machine']['cores']} cores, "
        f"load average before {report['machine']['loadavg_before'][0]}",
        f"{report['stored']}/{report['uploads']} stills of {report['mean_file_mb']} MB "
        f"({WIDTH}x{HEIGHT} JPEG) from {report['clients']} cameras in {report['elapsed_s']} s, "
        + (
            "each camera's next upload as soon as its last is answered"
            if report["pace_s"] is None
            else f"all cameras together every {report['pace_s']} s"
        ),
        "",
    ]
    lines += ["  ".join(v.rjust(widths[i]) for i, v in enumerate(row)) for row in rows]
    lines += [
        "",
        f"upload throughput     {report['throughput_mb_per_s']} MB/s "
        f"({report['stills_per_s']} stills/s)",
        f"disk raw copy (fsync) {disk['mb_per_s']} MB/s, same folder, same bytes",
        f"upload / disk         {report['upload_vs_disk']}",
        f"server CPU per still  {report['server_cpu_ms_per_still']} ms",
        "CPU, % of one core    "
        + ", ".join(f"{k} {v}" for k, v in report["cpu_pct_of_one_core"].items()),
        f"thumbnails answering  {report['thumbnails_ok']}/{report['stored']}; never visible: "
        f"{report['never_visible']}; socket pushes: {report['socket_pushes']}",
        "",
        f"Aim: upload to thumbnail visible p95 <= {AIM_P95_S * 1000:.0f} ms, every still "
        f"stored and shown: {'MET' if report['aim']['met'] else 'NOT MET'}",
    ]
    lines += [f"  error: {error}" for error in report["errors"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="Cameras uploading at once.")
    parser.add_argument("--uploads", type=int, default=48, help="Stills uploaded in all.")
    parser.add_argument(
        "--pace",
        type=float,
        default=None,
        metavar="S",
        help="Every camera uploads at the same instants, every S seconds (a capture-all every "
        "S s), instead of its next still as soon as the last is answered.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 32 or not 1 <= args.uploads <= 1000:
        parser.error("--clients must be 1..32 and --uploads 1..1000")
    if args.pace is not None and not 0 < args.pace <= 60:
        parser.error("--pace must be more than 0 and at most 60 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with work_directory(keep=args.keep, prefix="mm-stills-") as workdir:
        report = run(args, workdir)
    emit_report(report, json_path=args.json, table=render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
