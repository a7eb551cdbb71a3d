"""Capture-all spread: how close together simulated iPhones fire when the operator presses
"Capture all", after the server maps every phone's clock.

It starts a real server (`tests.support.server.running_server`: `manage.py serve` on a loopback
port with a database of its own) and runs the simulator in this process, so the benchmark knows
each phone's true clock error (each is off by a random few hundred ms). It logs in as an
operator and presses Capture all through the same HTTP call as the page, --rounds times, and
waits for every phone's still. For each round it reports:

- the mapped spread: max - min of the stills' capture times on the server's clock, as the
  Live Director's strip shows it (each phone's own clock mapped with the offset the server
  estimated from heartbeat round trips);
- the true spread: the same from the simulation's truth (device time minus the phone's real
  offset): what a stopwatch beside the phones would see. Mapped and true differ by the error of
  the clock estimates, which the report also lists per phone;
- the lead the server chose (fire_at - issued_at) and the delivery latency of each command.

    .venv/bin/python benchmarks/capture_spread.py [--phones 6] [--rounds 10] [--json out.json]

Half the phones take commands on the device WebSocket, half by long poll, as in `make run`.
With DATABASE_URL/REDIS_URL set it runs the scaled mode (a throwaway PostgreSQL database, Celery).
The JSON report goes to stdout (and to --json PATH); progress and the table go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.common import emit_report, log, percentile, work_directory  # noqa: E402
from tests.support.server import RunningServer, running_server  # noqa: E402

AIM_SPREAD_MS = 20.0


def _django(server: RunningServer) -> None:
    """Read the server's database from this process (stills, commands, clock estimates)."""
    for key in ("DATABASE_URL", "MOTIONMIX_SQLITE_PATH", "MOTIONMIX_VAR_DIR"):
        if key in server.env:
            os.environ[key] = server.env[key]
    os.environ.pop("REDIS_URL", None)  # reads only; no pushes from here
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "motionmix.settings")
    import django

    django.setup()


def _operator(server: RunningServer) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30)
    client.get("/accounts/login/")
    token = client.cookies["csrftoken"]
    response = client.post(
        "/accounts/login/",
        data={"username": server.username, "password": server.password},
        headers={"X-CSRFToken": token, "Referer": server.url + "/accounts/login/"},
    )
    if response.status_code != 302:
        raise RuntimeError(f"the operator login failed ({response.status_code})")
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    client.headers["HX-Request"] = "true"
    return client


def _run_simulator(simulator: Any, loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_until_complete(simulator.run())


def _wait(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s:g} s")


def measure(server: RunningServer, *, phones: int, rounds: int) -> dict[str, Any]:
    _django(server)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("motionmix.simulator").setLevel(logging.WARNING)
    from devices.models import Device, DeviceCommand
    from devices.simulator import Simulator
    from director.models import Still

    code = server.pairing_code()

    async def code_source() -> str:
        return code

    simulator = Simulator(
        url=server.url, count=phones, code_source=code_source, seed=7, still_size=(1008, 756)
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_simulator, args=(simulator, loop), daemon=True)
    thread.start()
    try:
        log(f"waiting for {phones} phones to register and estimate their clocks…")
        _wait(
            "clock estimates",
            lambda: (
                Device.objects.filter(status="online", clock_delay_s__isnull=False).count()
                >= phones
            ),
            60,
        )
        time.sleep(3)  # a few more round trips, so each phone's best sample is a good one
        truth = {phone.device_id: phone.clock_offset_s for phone in simulator.phones}
        operator = _operator(server)
        results = []
        for index in range(rounds):
            response = operator.post("/registry/capture-all")
            if response.status_code != 200:
                raise RuntimeError(f"capture all answered {response.status_code}: {response.text}")
            batch = (
                DeviceCommand.objects.filter(type="capture_still", batch__isnull=False)
                .order_by("-issued_at")
                .values_list("batch", flat=True)
                .first()
            )
            _wait(
                f"the stills of round {index + 1}",
                lambda b=batch: Still.objects.filter(batch=b).count() >= phones,
                30,
            )
            stills = list(Still.objects.filter(batch=batch))
            commands = list(DeviceCommand.objects.filter(batch=batch))
            mapped = [s.captured_at.timestamp() for s in stills]
            true = [s.captured_at_device - truth[str(s.device_id)] for s in stills]
            fire_at = commands[0].fire_at.timestamp()  # type: ignore[union-attr]
            results.append(
                {
                    "mapped_spread_ms": round((max(mapped) - min(mapped)) * 1000, 2),
                    "true_spread_ms": round((max(true) - min(true)) * 1000, 2),
                    "true_vs_fire_at_ms": [round((t - fire_at) * 1000, 1) for t in sorted(true)],
                    "lead_ms": round(
                        (commands[0].fire_at - commands[0].issued_at).total_seconds() * 1000, 1
                    ),  # type: ignore[operator]
                    "delivery_ms": sorted(
                        round((c.delivered_at - c.issued_at).total_seconds() * 1000, 1)
                        for c in commands
                        if c.delivered_at
                    ),
                    "via": sorted({c.delivered_via for c in commands}),
                }
            )
            log(
                f"round {index + 1}: mapped spread {results[-1]['mapped_spread_ms']} ms, "
                f"true spread {results[-1]['true_spread_ms']} ms, lead {results[-1]['lead_ms']} ms"
            )
            time.sleep(1.0)
        estimates = {str(d.pk): d.clock_offset_s for d in Device.objects.filter(pk__in=list(truth))}
        clock_errors = [
            {
                "device": name,
                "true_offset_ms": round(truth[device_id] * 1000, 1),
                "estimated_offset_ms": round((estimates[device_id] or 0) * 1000, 1),
                "error_ms": round(((estimates[device_id] or 0) - truth[device_id]) * 1000, 2),
            }
            for device_id, name in Device.objects.filter(pk__in=list(truth)).values_list(
                "pk", "name"
            )
            for device_id in [str(device_id)]
        ]
    finally:
        loop.call_soon_threadsafe(simulator.stop)
        thread.join(timeout=20)
    mapped = sorted(r["mapped_spread_ms"] for r in results)
    true = sorted(r["true_spread_ms"] for r in results)
    return {
        "phones": phones,
        "rounds": rounds,
        "mapped_spread_ms": ms_summary(mapped),
        "true_spread_ms": ms_summary(true),
        "aim_spread_ms": AIM_SPREAD_MS,
        "aim_met": mapped[-1] <= AIM_SPREAD_MS and true[-1] <= AIM_SPREAD_MS,
        "clock_estimates": sorted(clock_errors, key=lambda e: e["device"]),
        "rounds_detail": results,
    }


def ms_summary(ordered: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "max": ordered[-1] if ordered else None,
    }


def _table(report: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms"

    lines = [
        f"Capture all: {report['phones']} simulated iPhones, {report['rounds']} rounds "
        f"({report['mode']})",
        "",
        f"{'':28} {'p50':>10} {'p95':>10} {'max':>10}",
    ]
    for label, key in (
        ("mapped spread (server clock)", "mapped_spread_ms"),
        ("true spread", "true_spread_ms"),
    ):
        row = report[key]
        lines.append(f"{label:28} {ms(row['p50']):>10} {ms(row['p95']):>10} {ms(row['max']):>10}")
    lines.append("")
    verdict = "met" if report["aim_met"] else "NOT met"
    lines.append(f"aim: spread <= {report['aim_spread_ms']:g} ms: {verdict}")
    lines.append("")
    lines.append(f"{'phone':10} {'true offset':>12} {'estimated':>12} {'error':>10}")
    for row in report["clock_estimates"]:
        lines.append(
            f"{row['device']:10} {row['true_offset_ms']:>9.1f} ms "
            f"{row['estimated_offset_ms']:>9.1f} ms {row['error_ms']:>7.2f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the server's logs")
    args = parser.parse_args()
    mode = "scaled" if os.environ.get("DATABASE_URL") else "embedded"
    with work_directory(keep=args.keep, prefix="mm-capture-") as workdir:
        log(f"starting a {mode} server in {workdir}…")
        with running_server(workdir) as server:
            report = measure(server, phones=args.phones, rounds=args.rounds)
    report["mode"] = mode
    emit_report(report, json_path=args.json, table=_table(report))


if __name__ == "__main__":
    main()
