"""Device API benchmark: heartbeats per second against a real server, next to the `/_ping` floor.

It starts `manage.py serve` as its own process (tests.support.server.running_server), registers
N simulated devices through the public API, then drives `POST /api/v1/devices/heartbeat` from
all of them at once, as fast as the server answers, each device on its own keep-alive
connection with one request in flight. The same connections then drive the bare ASGI
`GET /_ping` for as long, so the run shows what Django, the API and the database add over
Daphne itself. `--rate` paces the same load instead, to read latency at a given load.

The load comes from a small hand-written HTTP/1.1 client (asyncio streams, Content-Length
framing) in several processes, so that the client costs little next to the server; the
report shows the CPU the client processes, the server and the rest of the machine used.

    .venv/bin/python benchmarks/device_api.py [--duration 10] [--rate N] [--json result.json]

With no environment this runs the embedded default (SQLite, in-memory channel layer). With
DATABASE_URL=postgres://... and REDIS_URL=redis://... it runs the scaled mode: the server gets
a fresh PostgreSQL database of its own, the Redis channel layer and a Celery worker.

The JSON report goes to stdout (and to --json PATH); the table and progress go to stderr.
`--py-spy DIR` samples the server during each measured phase (pip install py-spy first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.httpclient import Connection, ProtocolError, http_request, open_all  # noqa: E402
from benchmarks.machine import CpuSample, start_profiler, stop_profiler  # noqa: E402
from tests.support.api import heartbeat_body, register_body  # noqa: E402
from tests.support.server import running_server  # noqa: E402

AIM_HEARTBEATS_PER_S = 1000.0
AIM_P99_MS = 50.0

REQUEST_TIMEOUT_S = 10.0
# However fast the server is, no device loop runs longer than this many requests in one phase.
MAX_REQUESTS_PER_DEVICE_PHASE = 1_000_000
REGISTER_CONCURRENCY = 8
REGISTER_TIMEOUT_S = 180.0
MAX_ERROR_SAMPLES = 5

Kind = Literal["heartbeat", "ping"]


# --- Requests --------------------------------------------------------------------------------


@dataclass
class Device:
    index: int
    token: str
    last_sent_at: float = 0.0

    def next_sent_at(self) -> float:
        # The server ignores a beat older than the last one it stored; keep each device's
        # clock strictly increasing even when two beats fall in the same clock tick.
        self.last_sent_at = max(time.time(), self.last_sent_at + 1e-6)
        return self.last_sent_at


class RequestMaker:
    def __init__(self, *, host: str, port: int) -> None:
        self.host_header = f"{host}:{port}"
        self.ping = http_request("GET", "/_ping", self.host_header, {})
        self.beat = heartbeat_body()

    def heartbeat(self, device: Device) -> bytes:
        body = json.dumps({**self.beat, "sent_at": device.next_sent_at()}).encode()
        headers = {"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"}
        return http_request("POST", "/api/v1/devices/heartbeat", self.host_header, headers, body)

    def register(self, code: str, index: int) -> bytes:
        body = json.dumps(
            register_body(code, install_id=f"bench-{index:04d}", name=f"Bench {index}")
        ).encode()
        headers = {"Content-Type": "application/json"}
        return http_request("POST", "/api/v1/devices/register", self.host_header, headers, body)


# --- Client processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    kind: Kind
    duration_s: float
    measured: bool


@dataclass
class PhaseStats:
    """What one client process saw in one phase."""

    latencies_s: array[float] = field(default_factory=lambda: array("d"))
    errors_by_status: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    # Paced runs only: send slots skipped because the answer to the previous beat came late.
    missed_slots: int = 0

    def sample(self, text: str) -> None:
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text[:300])


@dataclass(frozen=True)
class WorkerSpec:
    host: str
    port: int
    devices: list[tuple[int, str]]
    phases: list[Phase]
    barrier_timeout_s: float
    # Seconds between one device's requests when the load is paced; None: as fast as answered.
    period_s: float | None = None
    # Paced devices start spread over one period, as a fleet's phones do: each device's delay.
    start_offsets_s: list[float] = field(default_factory=list)


async def _drive(
    conn: Connection,
    device: Device,
    kind: Kind,
    maker: RequestMaker,
    deadline: float,
    stats: PhaseStats,
    period: float | None,
    first_at: float,
) -> None:
    next_at = first_at
    for _ in range(MAX_REQUESTS_PER_DEVICE_PHASE):
        if period is not None:
            # One request in flight per device, as a phone does: a late answer delays the next
            # beat; slots that passed meanwhile are skipped, not sent in a burst.
            now = time.perf_counter()
            if next_at >= deadline:
                return
            if next_at > now:
                await asyncio.sleep(next_at - now)
            elif now - next_at >= period:
                skipped = int((now - next_at) // period)
                stats.missed_slots += skipped
                next_at += skipped * period
            next_at += period
        if time.perf_counter() >= deadline:
            return
        raw = maker.heartbeat(device) if kind == "heartbeat" else maker.ping
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                response = await conn.request(raw)
        except (OSError, EOFError, TimeoutError, ValueError, ProtocolError) as exc:
            # EOFError covers IncompleteReadError; ValueError a bad number or an overlong line.
            stats.transport_errors[type(exc).__name__] += 1
            detail = (
                f"no answer in {REQUEST_TIMEOUT_S:.0f} s" if isinstance(exc, TimeoutError) else exc
            )
            stats.sample(f"{type(exc).__name__}: {detail}")
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await conn.reopen()
            await asyncio.sleep(0.01)
            continue
        latency = time.perf_counter() - started
        if response.status == 200:
            stats.latencies_s.append(latency)
        else:
            stats.errors_by_status[response.status] += 1
            stats.sample(f"{response.status}: {response.body[:200].decode(errors='replace')}")
        if response.close:
            with contextlib.suppress(OSError, TimeoutError):
                await conn.reopen()


async def _worker(spec: WorkerSpec, barrier: Barrier) -> list[PhaseStats]:
    maker = RequestMaker(host=spec.host, port=spec.port)
    devices = [Device(index=index, token=token) for index, token in spec.devices]
    connections = [Connection(spec.host, spec.port) for _ in devices]
    await open_all(connections, timeout_s=REQUEST_TIMEOUT_S)
    results: list[PhaseStats] = []
    try:
        for phase in spec.phases:
            await asyncio.to_thread(barrier.wait, spec.barrier_timeout_s)
            stats = PhaseStats()
            cpu_before = time.process_time()
            started = time.perf_counter()
            deadline = started + phase.duration_s
            offsets = spec.start_offsets_s or [0.0] * len(devices)
            await asyncio.gather(
                *(
                    _drive(
                        conn,
                        device,
                        phase.kind,
                        maker,
                        deadline,
                        stats,
                        spec.period_s,
                        started + delay,
                    )
                    for conn, device, delay in zip(connections, devices, offsets, strict=True)
                )
            )
            stats.elapsed_s = time.perf_counter() - started
            stats.cpu_s = time.process_time() - cpu_before
            await asyncio.to_thread(barrier.wait, spec.barrier_timeout_s)
            results.append(stats)
    finally:
        await asyncio.gather(*(conn.close() for conn in connections))
    return results


def worker_main(spec: WorkerSpec, barrier: Barrier, results: Any) -> None:
    try:
        results.put(("ok", asyncio.run(_worker(spec, barrier))))
    except BaseException as exc:
        barrier.abort()  # so the others do not wait out the timeout
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


# --- Registration ----------------------------------------------------------------------------


async def register_devices(*, host: str, port: int, code: str, count: int) -> list[tuple[int, str]]:
    maker = RequestMaker(host=host, port=port)
    todo: asyncio.Queue[int] = asyncio.Queue()
    for index in range(1, count + 1):
        todo.put_nowait(index)
    tokens: dict[int, str] = {}

    async def registrar() -> None:
        conn = Connection(host, port)
        try:
            while not todo.empty():
                index = todo.get_nowait()
                response = await conn.request(maker.register(code, index))
                if response.status not in (200, 201):
                    raise RuntimeError(
                        f"registering device {index} answered {response.status}: "
                        f"{response.body[:300].decode(errors='replace')}; "
                        "see the server log in the work directory"
                    )
                tokens[index] = json.loads(response.body)["token"]
                if response.close:
                    await conn.reopen()
        finally:
            await conn.close()

    async with asyncio.timeout(REGISTER_TIMEOUT_S):
        await asyncio.gather(*(registrar() for _ in range(REGISTER_CONCURRENCY)))
    return sorted(tokens.items())


# --- Report ----------------------------------------------------------------------------------


def percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in ms."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return round(ordered[rank] * 1000, 2)


def summarize(per_worker: list[PhaseStats], before: CpuSample, after: CpuSample) -> dict[str, Any]:
    latencies = sorted(x for stats in per_worker for x in stats.latencies_s)
    elapsed = max(stats.elapsed_s for stats in per_worker)
    by_status: Counter[int] = Counter()
    transport: Counter[str] = Counter()
    samples: list[str] = []
    for stats in per_worker:
        by_status.update(stats.errors_by_status)
        transport.update(stats.transport_errors)
        samples += stats.error_samples
    wall = after.wall - before.wall
    client_cpu = sum(stats.cpu_s for stats in per_worker)
    cores = os.cpu_count() or 1
    cpu = {
        "server": 100 * (after.server - before.server) / wall,
        "server_helpers": 100 * (after.helpers - before.helpers) / wall,
        "clients": 100 * client_cpu / wall,
        "machine": 100
        * cores
        * (after.machine_busy - before.machine_busy)
        / max(after.machine_total - before.machine_total, 1e-9),
    }
    # Everything else that ran: the database and Redis in the scaled mode, and whatever else
    # shares the machine. A busy rest of the machine makes the figures lower than they can be.
    cpu["rest_of_machine"] = max(
        0.0, cpu["machine"] - cpu["server"] - cpu["server_helpers"] - cpu["clients"]
    )
    return {
        "requests_ok": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": percentile_ms(latencies, 50),
        "p90_ms": percentile_ms(latencies, 90),
        "p99_ms": percentile_ms(latencies, 99),
        "max_ms": percentile_ms(latencies, 100),
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 2) if latencies else None,
        "errors": sum(by_status.values()) + sum(transport.values()),
        "errors_by_status": {str(k): v for k, v in sorted(by_status.items())},
        "transport_errors": dict(transport),
        "error_samples": samples[:MAX_ERROR_SAMPLES],
        "elapsed_s": round(elapsed, 3),
        "missed_slots": sum(stats.missed_slots for stats in per_worker),
        # CPU shares are of one core: 100 is one core busy for the whole phase.
        "cpu_pct_of_one_core": {name: round(value, 1) for name, value in cpu.items()},
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def verdict(heartbeat: dict[str, Any], concurrency: int, paced: bool) -> dict[str, Any]:
    rate_met = heartbeat["per_s"] >= AIM_HEARTBEATS_PER_S
    p99 = heartbeat["p99_ms"]
    latency_met = p99 is not None and p99 <= AIM_P99_MS
    met = rate_met and latency_met and heartbeat["errors"] == 0
    return {
        "heartbeats_per_s": AIM_HEARTBEATS_PER_S,
        "p99_ms": AIM_P99_MS,
        "throughput_met": rate_met,
        "latency_met": latency_met,
        "no_errors": heartbeat["errors"] == 0,
        "met": met,
        # Little's law: with every device waiting for its answer before the next beat, the
        # mean latency is concurrency / throughput, so p99 <= 50 ms at saturation needs at
        # least concurrency / 0.05 s answers per second. A paced run is not at saturation.
        "saturation_rate_needed_for_p99_aim": (
            None if paced else round(concurrency / (AIM_P99_MS / 1000))
        ),
    }


def describe_mode(env: dict[str, str]) -> dict[str, str]:
    database = env.get("DATABASE_URL", "")
    db = "postgresql" if database.startswith(("postgres://", "postgresql://")) else "sqlite"
    if database and db == "sqlite":
        db = database.partition(":")[0] or "sqlite"
    layer = "redis" if env.get("REDIS_URL") else "in-memory"
    if db == "postgresql" and layer == "redis":
        mode = "scaled"
    elif db == "sqlite" and layer == "in-memory":
        mode = "embedded"
    else:
        mode = "mixed"
    return {"mode": mode, "database": db, "channel_layer": layer}


def render_table(report: dict[str, Any]) -> str:
    hb, ping, rt, aim = report["heartbeat"], report["ping"], report["ratio"], report["aim"]

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value}"

    rows = [
        ("", "heartbeat", "ping", "heartbeat/ping"),
        ("requests/s", cell(hb["per_s"]), cell(ping["per_s"]), cell(rt["throughput"])),
        ("p50 ms", cell(hb["p50_ms"]), cell(ping["p50_ms"]), cell(rt["p50_latency"])),
        ("p99 ms", cell(hb["p99_ms"]), cell(ping["p99_ms"]), cell(rt["p99_latency"])),
        ("max ms", cell(hb["max_ms"]), cell(ping["max_ms"]), ""),
        ("ok", cell(hb["requests_ok"]), cell(ping["requests_ok"]), ""),
        ("errors", cell(hb["errors"]), cell(ping["errors"]), ""),
    ]
    if report["offered_per_s"] is not None:
        rows.append(("missed slots", cell(hb["missed_slots"]), cell(ping["missed_slots"]), ""))
    for who in ("server", "server_helpers", "clients", "rest_of_machine", "machine"):
        rows.append(
            (
                f"cpu {who} %",
                cell(hb["cpu_pct_of_one_core"][who]),
                cell(ping["cpu_pct_of_one_core"][who]),
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"Device API benchmark: {report['mode']} mode ({report['database']}, "
        f"{report['channel_layer']} channel layer), {report['machine']['cores']} cores",
        f"{report['devices']} devices on {report['concurrency']} keep-alive connections from "
        f"{report['client_processes']} client processes, {report['duration_s']} s per endpoint, "
        + (
            "as fast as answered"
            if report["offered_per_s"] is None
            else f"paced at {report['offered_per_s']} requests/s"
        ),
        f"load average before the run: {report['machine']['loadavg_before'][0]}",
        "",
    ]
    for row in rows:
        lines.append("  ".join(value.rjust(widths[i]) for i, value in enumerate(row)))
    lines.append("")
    lines.append(
        f"Aim: >= {aim['heartbeats_per_s']:.0f} heartbeats/s with p99 <= {aim['p99_ms']:.0f} ms "
        f"and no errors: {'MET' if aim['met'] else 'NOT MET'} "
        f"(throughput {'met' if aim['throughput_met'] else 'not met'}, "
        f"p99 {'met' if aim['latency_met'] else 'not met'})"
    )
    if aim["saturation_rate_needed_for_p99_aim"] is not None:
        lines.append(
            f"  (with {report['concurrency']} requests always in flight, p99 <= "
            f"{aim['p99_ms']:.0f} ms needs about {aim['saturation_rate_needed_for_p99_aim']} "
            "answers/s)"
        )
    for name, stats in (("heartbeat", hb), ("ping", ping)):
        for sample in stats["error_samples"]:
            lines.append(f"  {name} error: {sample}")
    return "\n".join(lines)


# --- Main ------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    mode = describe_mode(dict(os.environ))
    # Beats here come far faster than the interval; a long interval keeps the offline sweep
    # from marking the fleet offline during the ping phase, which would load the server with
    # 200 transactions that belong to neither endpoint.
    extra_env = {"MOTIONMIX_HEARTBEAT_INTERVAL_S": str(args.heartbeat_interval)}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--server-env takes NAME=VALUE, not {item!r}")
        extra_env[name] = value
    load_before = os.getloadavg()
    log(f"Starting the server ({mode['mode']} mode) in {workdir} ...")
    with running_server(workdir, extra_env=extra_env) as server:
        host, port = "127.0.0.1", server.port
        code = server.pairing_code()
        log(f"Registering {args.devices} devices ...")
        started = time.perf_counter()
        devices = asyncio.run(register_devices(host=host, port=port, code=code, count=args.devices))
        register_s = time.perf_counter() - started

        phases = [
            Phase("warmup-heartbeat", "heartbeat", args.warmup, measured=False),
            Phase("warmup-ping", "ping", args.warmup, measured=False),
            Phase("heartbeat", "heartbeat", args.duration, measured=True),
            Phase("ping", "ping", args.duration, measured=True),
        ]
        phases = [phase for phase in phases if phase.duration_s > 0]
        barrier_timeout = max(phase.duration_s for phase in phases) + 2 * REQUEST_TIMEOUT_S + 30
        period = args.devices / args.rate if args.rate else None
        offsets = [(period or 0.0) * j / args.devices for j in range(args.devices)]
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(args.clients + 1)
        results = ctx.Queue()
        workers = [
            ctx.Process(
                target=worker_main,
                args=(
                    WorkerSpec(
                        host=host,
                        port=port,
                        devices=devices[i :: args.clients],
                        phases=phases,
                        barrier_timeout_s=barrier_timeout,
                        period_s=period,
                        start_offsets_s=offsets[i :: args.clients],
                    ),
                    barrier,
                    results,
                ),
                name=f"bench-client-{i}",
            )
            for i in range(args.clients)
        ]
        for worker in workers:
            worker.start()
        samples: dict[str, tuple[CpuSample, CpuSample]] = {}
        try:
            for phase in phases:
                log(f"Phase {phase.name}: {phase.duration_s} s ...")
                barrier.wait(barrier_timeout)
                before = CpuSample.take(server)
                profiler = None
                if args.py_spy is not None and phase.measured and server.server is not None:
                    profiler = start_profiler(
                        args.py_spy,
                        name=phase.name,
                        duration_s=phase.duration_s,
                        pid=server.server.pid,
                        flags=args.py_spy_flag,
                    )
                barrier.wait(barrier_timeout)
                samples[phase.name] = (before, CpuSample.take(server))
                stop_profiler(profiler)
            per_worker: list[list[PhaseStats]] = []
            for _ in workers:
                status, payload = results.get(timeout=barrier_timeout)
                if status != "ok":
                    raise RuntimeError(f"a client process failed: {payload}")
                per_worker.append(payload)
        except threading.BrokenBarrierError:
            failures = []
            with contextlib.suppress(queue.Empty):
                for _ in workers:
                    status, payload = results.get(timeout=5)
                    if status != "ok":
                        failures.append(payload)
            raise RuntimeError(
                f"a client process stopped: {'; '.join(failures) or 'no reason given'}"
            ) from None
        finally:
            for worker in workers:
                worker.join(timeout=15)
                if worker.is_alive():
                    worker.terminate()
                    worker.join(timeout=5)

        report: dict[str, Any] = {
            "benchmark": "device_api",
            **mode,
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_before": [round(x, 2) for x in load_before],
            },
            "devices": args.devices,
            "client_processes": args.clients,
            "concurrency": args.devices,
            "duration_s": args.duration,
            "offered_per_s": args.rate,
            "warmup_s": args.warmup,
            "register_s": round(register_s, 2),
            "server_env": extra_env,
        }
        for index, phase in enumerate(phases):
            if phase.measured:
                before, after = samples[phase.name]
                stats = [worker[index] for worker in per_worker]
                report[phase.kind] = summarize(stats, before, after)
    hb, ping = report["heartbeat"], report["ping"]
    report["ratio"] = {
        "throughput": ratio(hb["per_s"], ping["per_s"]),
        "p50_latency": ratio(hb["p50_ms"], ping["p50_ms"]),
        "p99_latency": ratio(hb["p99_ms"], ping["p99_ms"]),
    }
    report["aim"] = verdict(hb, args.devices, paced=args.rate is not None)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per endpoint.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured seconds first.")
    parser.add_argument("--devices", type=int, default=200, help="Devices, one connection each.")
    parser.add_argument("--clients", type=int, default=2, help="Client processes.")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Pace the load at this many requests/s in all (spread over the devices) instead "
        "of as fast as the server answers; shows latency at a given load.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=60.0,
        help="MOTIONMIX_HEARTBEAT_INTERVAL_S for the server (keeps the fleet online).",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Extra environment for the server, e.g. DJANGO_DEBUG=0 (repeatable).",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="Sample the server with py-spy during each measured phase; collapsed stacks to DIR.",
    )
    parser.add_argument(
        "--py-spy-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="Extra py-spy record flag, e.g. --py-spy-flag=--gil or --py-spy-flag=--idle.",
    )
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be more than 0 and at most 600 s")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be between 0 and 60 s")
    if args.rate is not None and not 0 < args.rate <= 100_000:
        parser.error("--rate must be more than 0 and at most 100000 requests/s")
    if not 1 <= args.clients <= 16 or not args.clients <= args.devices <= 5000:
        parser.error("--clients must be 1..16 and --devices between --clients and 5000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="mm-bench-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mm-bench-")))
        report = run(args, workdir)
        if args.keep:
            log(f"Logs kept in {workdir}")
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text, flush=True)
    log("")
    log(render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
