"""Ledger sync benchmark: how far behind the production ledger in Convex runs, and how it recovers.

Against the real local Convex bridge (convex/bridge: the functions of convex/ in convex-test,
started by `tests.support.bridge.Bridge` on a loopback port with a data file), in three phases:

1. Ceiling: the bridge's own mutation throughput, `ConvexLedger().append_events` with batches
   of 100 fresh events for a bounded time on a fresh store (a bridge and data file of its own),
   and how the time of one batch grows with the store. `--restored-probes` adds batch times on
   bridges started from data files of N documents (slow: each reload and batch scans them all).
2. Steady load: one thread records `device.online` events of one session through
   `ledger.record(...)` inside `transaction.atomic()`, paced by the clock at --rate for
   --duration, on its own connection. A flusher thread stands in for the `ledger_sync --loop`
   child that `serve` starts: `outbox_flush()` when a commit set `FLUSH_WANTED` (looked at every
   50 ms, as the ticker does before it writes to the child's wake pipe) and at least every
   --flush-interval (5 s, the child's default). The thread shares the recorder's GIL, which the
   child does not; on SQLite both share the one write lock either way. Lag per event is
   synced_at - occurred_at, read back once everything is synced; then `sessionTimeline` must
   hold exactly the recorded event ids, once each, seqs 1..n.
3. Outage: the bridge stops, the same load runs for --outage seconds, the bridge restarts on the
   same port and data file, and the benchmark times the catch-up of that backlog (recording
   stops at the restart). It reports the Convex-wide backoff (`ledger.sync.OUTAGE_KEY`: each
   failure's count and wait), the flush calls that reached Convex against those the backoff
   skipped, and the recording rate during the outage against the steady one.

Both checks also read the order in which events reached Convex: the bridge stamps
`_creationTime` at insert, so an event stored after one of a higher seq of its stream is late.
The flusher passes `outbox_flush` a `ConvexLedger` subclass that times each appendEvents call.
With no environment this runs the embedded mode (SQLite in a temporary folder, never var/).
With DATABASE_URL set to a PostgreSQL server on this machine it creates a throwaway database
`mmbench_<random>` and drops it at the end. REDIS_URL is ignored.

    .venv/bin/python benchmarks/ledger_sync.py [--rate 200] [--duration 30] [--outage 30]
        [--ceiling-duration 10] [--restored-probes] [--json result.json] [--keep]

The JSON report goes to stdout (and to --json PATH); progress and the table go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    emit_report,
    log,
    percentile,
    ratio,
    seconds_summary,
    work_directory,
)
from benchmarks.ledger_harness import (  # noqa: E402
    AppendCall,
    Flusher,
    TimedLedger,
    calls_summary,
    close_database,
    event_doc,
    flush_summary,
    prepare_environment,
    record_phase,
    setup_django,
    stream_rows,
    unsynced_count,
    verify_convex,
    wait_synced,
)
from benchmarks.machine import machine_busy_s, process_cpu_s  # noqa: E402
from tests.support.bridge import Bridge  # noqa: E402

SNAPSHOT_FORMAT = {"format": "motionmix-convex-bridge", "version": 1}
AIM_LAG_P95_S = 1.0
APPEND_MAX = 100  # production:appendEvents takes at most 100 events
MAX_CEILING_BATCHES = 10_000
PROBE_BATCHES = 3


def busy_pct(before: tuple[float, float]) -> float | None:
    """The whole machine's busy share since `before` (machine_busy_s()), all cores."""
    busy, total = machine_busy_s()
    return round(100 * (busy - before[0]) / (total - before[1]), 1) if total > before[1] else None


# --- 1. Ceiling --------------------------------------------------------------------------------


def growth_slope(calls: list[AppendCall]) -> float | None:
    """Least squares over the batches: what 1000 more stored events add to one batch, in ms."""
    if len(calls) < 3:
        return None
    xs = [c.store_before / 1000 for c in calls]
    slope, _ = statistics.linear_regression(xs, [c.seconds * 1000 for c in calls])
    return round(slope, 1)


def probe_restored(workdir: Path, size: int) -> dict[str, Any]:
    """A bridge started from a data file of `size` events: its start and batch times."""
    session, created_ms = str(uuid.uuid4()), time.time() * 1000
    docs = [
        {"_id": str(i), "_creationTime": created_ms + i * 0.001, **event_doc(session, i + 1)}
        for i in range(size)
    ]
    data = workdir / f"restored-{size}.json"
    data.write_text(json.dumps({**SNAPSHOT_FORMAT, "tables": {"productionEvents": docs}}))
    bridge, began = Bridge(data=data), time.monotonic()
    bridge.start()
    start_s = time.monotonic() - began
    try:
        client = TimedLedger(bridge.url, bridge.admin_key)
        for b in range(PROBE_BATCHES):
            first = size + b * APPEND_MAX + 1
            client.append_events([event_doc(session, first + i) for i in range(APPEND_MAX)])
    finally:
        bridge.stop()
        data.unlink(missing_ok=True)
    batch_s = statistics.median(c.seconds for c in client.calls)
    return {"store_size": size, "start_s": round(start_s, 2), "batch_ms": round(batch_s * 1000, 1)}


def measure_ceiling(workdir: Path, seconds: float, restored_sizes: list[int]) -> dict[str, Any]:
    log(f"ceiling: appendEvents x{APPEND_MAX} on a fresh bridge store for {seconds:g} s")
    bridge = Bridge(data=workdir / "bridge-ceiling.json")
    bridge.start()
    assert bridge.running is not None
    pid, session = bridge.running.proc.pid, str(uuid.uuid4())
    try:
        client = TimedLedger(bridge.url, bridge.admin_key)
        cpu_before, started = process_cpu_s(pid), time.monotonic()
        for batch in range(MAX_CEILING_BATCHES):
            if time.monotonic() - started >= seconds:
                break
            first = batch * APPEND_MAX + 1
            client.append_events([event_doc(session, first + i) for i in range(APPEND_MAX)])
        elapsed = time.monotonic() - started
        bridge_cpu_s = process_cpu_s(pid) - cpu_before
    finally:
        bridge.stop()
    calls = client.calls
    first_s = statistics.median(c.seconds for c in calls[:3])
    step = max(1, len(calls) // 12)
    restored = []
    for size in restored_sizes:
        log(f"ceiling: batch time on a bridge restored from {size} documents")
        restored.append(probe_restored(workdir, size))
    return {
        "events_per_s": round(client.stored / elapsed, 1),
        "events": client.stored,
        "elapsed_s": round(elapsed, 2),
        "batches": len(calls),
        "fresh_store_batch_ms": round(first_s * 1000, 1),
        "fresh_store_events_per_s": round(APPEND_MAX / first_s, 1),
        "last_batch_ms": round(calls[-1].seconds * 1000, 1),
        "growth_ms_per_1000_events": growth_slope(calls),
        "bridge_cpu_s": round(bridge_cpu_s, 2),
        "growth_grown": [
            {"store_size": c.store_before, "batch_ms": round(c.seconds * 1000, 1)}
            for c in calls[::step]
        ],
        "growth_restored": restored,
    }


# --- 2. Steady load, 3. outage -----------------------------------------------------------------


def steady_phase(
    args: argparse.Namespace, session_id: uuid.UUID, client: TimedLedger, flusher: Flusher
) -> tuple[dict[str, Any], list[str]]:
    stream = str(session_id)
    log(f"steady: {args.rate:g} events/s for {args.duration:g} s")
    machine = machine_busy_s()
    recording, backlog = record_phase(session_id=session_id, rate=args.rate, seconds=args.duration)
    machine_pct = busy_pct(machine)
    log(f"steady: recorded {len(recording.ids)}; waiting for the sync to drain")
    drained = wait_synced(stream, args.drain_timeout)
    flusher.wait_idle()
    rows = stream_rows(stream)
    mine = [rows[i] for i in recording.ids]
    lags = [(r.synced_at - r.occurred_at).total_seconds() for r in mine if r.synced_at]
    synced_at = [r.synced_at for r in mine if r.synced_at]
    span = (max(synced_at) - min(r.occurred_at for r in mine)).total_seconds() if synced_at else 0
    report = {
        "recording": recording.summary(args.rate),
        "machine_busy_pct": machine_pct,
        "drained_after_recording_s": None if drained is None else round(drained, 2),
        "unsynced_left": len(mine) - len(lags),
        "max_backlog": backlog,
        "lag_s": seconds_summary(lags),
        "sync_events_per_s": round(len(synced_at) / span, 1) if span > 0 else None,
        # Everything so far: the flusher's first run may start before the first record and go
        # on claiming what the recorder commits, batch after batch, for the whole phase.
        "bridge": calls_summary(client.calls_between(0.0)),
        "flush": flush_summary(flusher.runs_between(0.0)),
    }
    log("steady: checking the session in Convex")
    report["verify"] = verify_convex(stream, recording.ids)
    return report, recording.ids


def outage_phase(
    args: argparse.Namespace,
    session_id: uuid.UUID,
    client: TimedLedger,
    flusher: Flusher,
    bridge: Bridge,
    earlier_ids: list[str],
) -> dict[str, Any]:
    from django.core.cache import cache
    from django.utils import timezone

    from ledger.sync import OUTAGE_KEY

    stream = str(session_id)
    log(f"outage: bridge stopped; recording {args.rate:g} events/s for {args.outage:g} s")
    bridge.stop()
    machine, down_at = machine_busy_s(), time.monotonic()
    recording, backlog = record_phase(session_id=session_id, rate=args.rate, seconds=args.outage)
    machine_pct = busy_pct(machine)
    restart_began = time.monotonic()
    bridge.start()
    ready, ready_wall, ready_unix = time.monotonic(), timezone.now(), time.time()
    outage = cache.get(OUTAGE_KEY) or {}
    backoff_left = max(0.0, float(outage["until"]) - ready_unix) if outage else 0.0
    at_restart = {
        "failures": outage.get("failures", 0),
        "until": outage.get("until"),
        "backoff_left_s": round(backoff_left, 2),
        "error": str(outage.get("error", ""))[:200],
        "backlog": unsynced_count(stream),
    }
    log(f"outage: bridge back after {ready - down_at:.1f} s; catching up")
    caught_up = wait_synced(stream, args.catchup_timeout)
    flusher.wait_idle()
    outage_cleared = cache.get(OUTAGE_KEY) is None
    rows = stream_rows(stream)
    mine = [rows[i] for i in recording.ids]
    offsets = sorted((r.synced_at - ready_wall).total_seconds() for r in mine if r.synced_at)
    catchup_s = offsets[-1] if offsets and caught_up is not None else None
    end = ready + (catchup_s or 0.0) + 0.001
    calls = client.calls_between(ready, end)
    first_call = round(calls[0].started - ready, 2) if calls else None
    sending_s = catchup_s - first_call if catchup_s and first_call is not None else None
    runs = flusher.runs_between(ready, end)
    flusher_busy = sum(r.seconds for r in runs)
    during = flush_summary(flusher.runs_between(down_at, ready))
    during["failed_append_calls"] = calls_summary(client.calls_between(down_at, ready))[
        "failed_calls"
    ]
    report = {
        "recording": recording.summary(args.rate),
        "machine_busy_pct": machine_pct,
        "bridge_down_s": round(ready - down_at, 2),
        "bridge_restart_s": round(ready - restart_began, 2),
        "max_backlog": backlog,
        "flush_during_outage": during,
        # Each failure of Convex as a whole: the failure count and the backoff it set.
        "backoff": [
            {"at_s": round(o.at - down_at, 2), "failures": o.failures, "wait_s": round(o.wait_s, 2)}
            for o in flusher.outages_between(down_at, ready)
        ],
        "at_restart": at_restart,
        "caught_up": caught_up is not None,
        "outage_cleared_after": outage_cleared,
        "first_call_after_s": first_call,
        "first_synced_after_s": round(offsets[0], 2) if offsets else None,
        "half_synced_after_s": round(percentile(offsets, 50) or 0, 2) if offsets else None,
        "catchup_s": None if catchup_s is None else round(catchup_s, 2),
        "catchup_events_per_s": (round(len(mine) / catchup_s, 1) if catchup_s else None),
        # From the first call after the restart: the rate once the backoff let it send.
        "sending_events_per_s": (round(len(mine) / sending_s, 1) if sending_s else None),
        "catchup_flusher_busy_s": round(flusher_busy, 2),
        "catchup_flusher_idle_s": None if catchup_s is None else round(catchup_s - flusher_busy, 2),
        "lag_s": seconds_summary(
            [(r.synced_at - r.occurred_at).total_seconds() for r in mine if r.synced_at]
        ),
        "attempts_max": max((r.attempts for r in mine), default=0),
        "bridge": calls_summary(calls),
        "flush_catchup": flush_summary(runs),
    }
    log("outage: checking the whole session in Convex")
    report["verify"] = verify_convex(stream, earlier_ids + recording.ids)
    return report


# --- Report ------------------------------------------------------------------------------------


def verdict(steady: dict[str, Any], outage: dict[str, Any] | None) -> dict[str, Any]:
    p95 = steady["lag_s"]["p95"]
    lag_met = p95 is not None and p95 <= AIM_LAG_P95_S and steady["unsynced_left"] == 0
    checks = [steady["verify"]] + ([outage["verify"]] if outage else [])
    lost_none = all(v["ok"] for v in checks)
    return {
        "lag_p95_s": AIM_LAG_P95_S,
        "lag_met": lag_met,
        "nothing_lost": lost_none,
        "arrived_in_seq_order": all(v["arrival"]["in_seq_order"] for v in checks),
        "met": lag_met and lost_none,
    }


def render_table(report: dict[str, Any]) -> str:
    c, s, o, aim = report["ceiling"], report["steady"], report["outage"], report["aim"]

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    def trio(stats: dict[str, Any]) -> str:
        return " / ".join(cell(stats[k]) for k in ("p50", "p95", "max")) + " s"

    def recorded(rec: dict[str, Any]) -> str:
        return (
            f"{rec['recorded']} events, {rec['achieved_per_s']} of {rec['offered_per_s']} ev/s, "
            f"record p95 {round(rec['record_s']['p95'] * 1000, 1)} ms"
        )

    flush = s["flush"]
    rows = [
        ("mode", f"{report['mode']}, flusher interval {report['flush_interval_s']} s"),
        ("steady: recorded", recorded(s["recording"])),
        ("steady: lag p50 / p95 / max", trio(s["lag_s"])),
        ("steady: max backlog, drained", f"{s['max_backlog']}, {s['drained_after_recording_s']} s"),
        ("steady: sync throughput", f"{cell(s['sync_events_per_s'])} ev/s"),
        ("steady: flushes / batches", f"{flush['calls']} / {flush['batches']}"),
        ("steady: machine busy", f"{cell(s['machine_busy_pct'])} %"),
        ("ceiling: fresh store", f"{c['events_per_s']} ev/s over {c['elapsed_s']} s"),
        ("ceiling: batch at 0 / at end", f"{c['fresh_store_batch_ms']} / {c['last_batch_ms']} ms"),
        ("ceiling: ms per 1000 more stored", cell(c["growth_ms_per_1000_events"])),
        ("steady sync / ceiling", cell(report["ratios"]["steady_sync_to_ceiling"])),
    ]
    if o is not None:
        d, at, rec = o["flush_during_outage"], o["at_restart"], o["recording"]
        waits = ", ".join(f"{b['wait_s']:g}" for b in o["backoff"]) or "-"
        rows += [
            ("outage: bridge down", f"{o['bridge_down_s']} s (restart {o['bridge_restart_s']} s)"),
            ("outage: recorded", recorded(rec)),
            (
                "outage / steady recording rate",
                cell(report["ratios"]["outage_to_steady_recording"]),
            ),
            (
                "outage: flushes hit Convex / backoff",
                f"{d['reached_convex']} / {d['skipped_by_backoff']} of {d['calls']}",
            ),
            ("outage: backoff waits, s", waits),
            ("outage: at restart", f"failures {at['failures']}, {at['backoff_left_s']} s left"),
            ("outage: machine busy", f"{cell(o['machine_busy_pct'])} %"),
            ("catch-up: backlog", cell(at["backlog"])),
            ("catch-up: first call after", f"{cell(o['first_call_after_s'])} s"),
            ("catch-up: time", f"{cell(o['catchup_s'])} s"),
            (
                "catch-up: rate / once sending",
                (f"{cell(o['catchup_events_per_s'])} / {cell(o['sending_events_per_s'])} ev/s"),
            ),
            (
                "catch-up: bridge / flusher / idle",
                f"{o['bridge']['bridge_busy_s']} / {o['catchup_flusher_busy_s']} / "
                f"{cell(o['catchup_flusher_idle_s'])} s",
            ),
            ("catch-up / ceiling", cell(report["ratios"]["catchup_to_ceiling"])),
            ("outage cleared after", cell(o["outage_cleared_after"])),
        ]
    checks = [s["verify"]] + ([o["verify"]] if o else [])
    rows += [
        ("late arrivals steady / session", " / ".join(str(v["arrival"]["late"]) for v in checks)),
        ("verified steady / session", " / ".join(str(v["ok"]) for v in checks)),
    ]
    width = max(len(k) for k, _ in rows)
    machine = report["machine"]
    lines = [f"Ledger sync benchmark: {machine['cores']} cores, load {machine['loadavg_before']}"]
    lines += ["", *(f"{k.ljust(width)}  {v}" for k, v in rows), ""]
    for label, key in (("grown in one bridge", "growth_grown"), ("restored", "growth_restored")):
        points = ", ".join(f"{p['store_size']}: {p['batch_ms']}" for p in c[key])
        lines.append(f"batch ms by store size, {label}: {points or '-'}")
    lines += [
        "",
        f"Aim: lag p95 <= {aim['lag_p95_s']:g} s and nothing lost: "
        f"{'MET' if aim['met'] else 'NOT MET'} (lag {'met' if aim['lag_met'] else 'not met'}, "
        f"nothing lost {'yes' if aim['nothing_lost'] else 'NO'}); arrived in seq order: "
        f"{'yes' if aim['arrived_in_seq_order'] else 'NO'}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    loadavg = [round(x, 2) for x in os.getloadavg()]
    drop_database = prepare_environment(workdir)
    try:
        mode = setup_django()
        from django.conf import settings

        from director.bridge import bridge_unavailable_reason

        if reason := bridge_unavailable_reason():
            raise SystemExit(f"The Convex bridge cannot run: {reason}.")
        log(f"mode: {mode}; work directory {workdir}")
        target = round(args.rate * (args.duration + args.outage))
        sizes = sorted({max(APPEND_MAX, round(target * f / 100) * 100) for f in (0.25, 0.5, 1.0)})
        ceiling = measure_ceiling(
            workdir, args.ceiling_duration, sizes if args.restored_probes else []
        )
        session_id = uuid.uuid4()
        bridge = Bridge(data=workdir / "bridge-sync.json")
        bridge.start()
        try:
            settings.CONVEX_URL = bridge.url
            settings.CONVEX_DEPLOY_KEY = bridge.admin_key
            client = TimedLedger(bridge.url, bridge.admin_key)
            budget = args.duration + args.drain_timeout + args.outage * 3 + args.catchup_timeout
            flusher = Flusher(client, args.flush_interval, max_runtime_s=budget + 600)
            flusher.start()
            try:
                steady, ids = steady_phase(args, session_id, client, flusher)
                outage = None
                if args.outage > 0 and steady["unsynced_left"] == 0:
                    outage = outage_phase(args, session_id, client, flusher, bridge, ids)
                elif args.outage > 0:
                    log("outage: skipped, the steady backlog did not drain")
            finally:
                flusher.halt.set()
                flusher.join(timeout=120)
        finally:
            bridge.stop()
    finally:
        with contextlib.suppress(Exception):  # never keep the throwaway database over this
            close_database()
        if drop_database is not None:
            drop_database()
    node = shutil.which("node") or "node"
    return {
        "benchmark": "ledger_sync",
        "mode": mode,
        "rate": args.rate,
        "duration_s": args.duration,
        "outage_s": args.outage,
        "flush_interval_s": args.flush_interval,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "node": subprocess.run(
                [node, "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "loadavg_before": loadavg,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "ceiling": ceiling,
        "steady": steady,
        "outage": outage,
        "ratios": {
            "steady_sync_to_ceiling": ratio(steady["sync_events_per_s"], ceiling["events_per_s"]),
            "catchup_to_ceiling": ratio(
                outage and outage["catchup_events_per_s"], ceiling["events_per_s"]
            ),
            "outage_to_steady_recording": ratio(
                outage and outage["recording"]["achieved_per_s"],
                steady["recording"]["achieved_per_s"],
            ),
        },
        "aim": verdict(steady, outage),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="Events recorded per second.")
    parser.add_argument("--duration", type=float, default=30.0, help="Steady load, seconds.")
    parser.add_argument(
        "--outage",
        type=float,
        default=30.0,
        help="Seconds recorded with the bridge down (0: no outage phase).",
    )
    parser.add_argument(
        "--ceiling-duration", type=float, default=10.0, help="Seconds of raw appendEvents calls."
    )
    parser.add_argument(
        "--restored-probes",
        action="store_true",
        help="Also time batches on bridges restored from data files of N documents (slow).",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=5.0,
        help="The flusher runs at least this often (the ledger_sync child's --interval).",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="Longest wait for the steady backlog."
    )
    parser.add_argument(
        "--catchup-timeout", type=float, default=900.0, help="Longest wait for the catch-up."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 5000:
        parser.error("--rate must be more than 0 and at most 5000 events/s")
    if not 0 < args.duration <= 600 or not 0 <= args.outage <= 600:
        parser.error("--duration must be in (0, 600] s and --outage in [0, 600] s")
    if not 0 < args.ceiling_duration <= 300:
        parser.error("--ceiling-duration must be in (0, 300] s")
    if not 0.01 <= args.flush_interval <= 60:
        parser.error("--flush-interval must be between 0.01 and 60 s")
    if not 0 < args.drain_timeout <= 3600 or not 0 < args.catchup_timeout <= 3600:
        parser.error("--drain-timeout and --catchup-timeout must be in (0, 3600] s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with work_directory(keep=args.keep, prefix="mm-ledger-bench-") as workdir:
        report = run(args, workdir)
    emit_report(report, json_path=args.json, table=render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
