"""The soak's report: memory per process over the window (growth, trend, peak), the JSON report
built from one run (counts, errors, latency, memory, CPU, the ledger and the verdict), the mode
and the server's environment, and the table on stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from benchmarks.soak_config import KB, MB, SERVER_ENV, VIDEO_SIZE
from benchmarks.soak_operator import Run
from benchmarks.soak_reads import ledger_sync_problems, log_problems, simulator_summary

# --- The report ----------------------------------------------------------------------------------


def memory_report(
    samples: list[dict[str, Any]], window: tuple[dict[str, Any], dict[str, Any]], hwm_kb: int | None
) -> dict[str, Any]:
    start, end = window
    minutes = max((end["t_s"] - start["t_s"]) / 60, 1e-9)
    inside = [s for s in samples if start["t_s"] <= s["t_s"] <= end["t_s"]]
    roles: dict[str, Any] = {}
    for role in start["rss_mb"]:
        first, last = start["rss_mb"][role], end["rss_mb"][role]
        values = [s["rss_mb"][role] for s in inside if s["rss_mb"][role] is not None]
        growth = None if first is None or last is None else round(last - first, 1)
        roles[role] = {
            "start_mb": first,
            "end_mb": last,
            "growth_mb": growth,
            "growth_mb_per_min": None if growth is None else round(growth / minutes, 2),
            "peak_mb": max(values) if values else None,
            # A line through every sample of the window: one spike at either end does not
            # make it.
            "trend_mb_per_min": trend_per_min(
                [(s["t_s"], s["rss_mb"][role]) for s in inside if s["rss_mb"][role] is not None]
            ),
        }
    roles["server"]["peak_since_start_mb"] = None if hwm_kb is None else round(hwm_kb * KB / MB, 1)
    return {
        "sampled_every_s": None,
        "samples_in_window": len(inside),
        "by_process": roles,
        "server_threads": [start["server_threads"], end["server_threads"]],
        "server_fds": [start["server_fds"], end["server_fds"]],
    }


def trend_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return round(slope * 60, 2)


def build_report(
    run: Run,
    *,
    session_id: str,
    live_after_s: float,
    window: tuple[dict[str, Any], dict[str, Any]],
    window_s: float,
    hwm_kb: int | None,
    cpu: dict[str, float],
    phases: dict[str, Any],
    last: dict[str, Any],
    convex: dict[str, Any],
    final: dict[str, Any],
    latency: dict[str, Any],
) -> dict[str, Any]:
    args, server = run.args, run.server
    start, end = window
    delta = {key: end["db"][key] - start["db"][key] for key in start["db"]}
    simulator = simulator_summary(server.log("simulator"))
    server_log = log_problems(server.log("server"))
    simulator_log = log_problems(server.log("simulator"))
    celery_log = log_problems(server.log("celery")) if server.log("celery") else None
    ledger_sync = ledger_sync_problems(server.log("server"))
    phones = simulator["phones"] or {}
    counts_db = last["db"]
    recorded = counts_db["events_recorded"]
    synced = counts_db["events_synced"]
    in_convex = convex["in_convex"]
    pages = [
        page.report((start["pushes"][i], end["pushes"][i]), window_s)
        for i, page in enumerate(run.pages)
    ]
    http_errors = run.requests.errors()
    socket_drops = sum(p["drops"] for p in pages)
    errors = {
        "http_own_requests": http_errors,
        "http_own_requests_total": sum(n for e in http_errors.values() for n in e.values()),
        "http_own_request_samples": run.requests.samples,
        "server_log": server_log,
        "simulator_errors": phones.get("errors"),
        "simulator_log": simulator_log,
        "stand_in_late_decisions": (simulator["stand_in"] or {}).get("late"),
        "celery_log": celery_log,
        "ledger_sync": ledger_sync,
        "socket_drops": socket_drops,
    }
    logs = [server_log, simulator_log, *([celery_log] if celery_log else [])]
    # Failures: a request refused or unanswered, a logged error, a phone's own error count
    # (failed beats, uploads, publishes), a sync round in trouble, an event Convex refused, a
    # page's socket dropped. Tracebacks are listed, not added: each follows a logged line.
    errors["total"] = (
        errors["http_own_requests_total"]
        + server_log["http_4xx_5xx"]
        + sum(item["errors"] for item in logs)  # tracebacks come with a line: not again
        + (phones.get("errors") or 0)
        + ledger_sync["rounds_with_trouble"]
        + counts_db["events_failed"]
        + socket_drops
    )
    # Not failures, but worth reading: e.g. a phone that fired late because its capture
    # command came after the fire time.
    errors["warnings_total"] = sum(item["warnings"] for item in logs)
    capture_commands = final["commands"].get("capture_still", {})
    memory = memory_report(run.samples, window, hwm_kb)
    memory["sampled_every_s"] = args.sample_every
    server_memory = memory["by_process"]["server"]
    ledger = {
        "recorded": recorded,
        "synced": synced,
        "failed": counts_db["events_failed"],
        "in_convex": in_convex,
        "missing_in_convex": convex["missing"],
        "unexpected_in_convex": convex["unexpected"],
        "duplicated_in_convex": convex["duplicated"],
        "late_arrivals": convex["late_arrivals"],
        "read_back_error": convex["read_error"],
        "streams": convex["streams"],
        "drain_s": phases["drain_s"],
        "recorded_in_window": delta["events_recorded"],
        "recorded_per_s_in_window": round(delta["events_recorded"] / window_s, 1),
        "synced_per_s_in_window": round(delta["events_synced"] / window_s, 1),
        "backlog_at_window_end": end["db"]["events_recorded"] - end["db"]["events_synced"],
        "by_type": final["events_by_type"],
        "failed_examples": final["failed_examples"],
        "per_stream": convex["per_stream"],
    }
    verdict = {
        "recorded_equals_synced": recorded == synced,
        "synced_equals_in_convex": synced == in_convex,
        "ledger_consistent": (
            recorded == synced == in_convex
            and convex["missing"] == 0
            and convex["unexpected"] == 0
            and convex["duplicated"] == 0
            and convex["every_stream_ok"]
        ),
        "drained_in_time": phases["drain_s"] is not None,
        "no_errors": errors["total"] == 0,
        "no_socket_drops": socket_drops == 0,
        # Each capture command asks for one still; under load a phone's ack may come after the
        # command expired although its still was stored (counted in capture_commands).
        "every_capture_stored": sum(capture_commands.values()) == counts_db["stills"],
        "every_capture_command_done": set(capture_commands) <= {"done"},
        "server_rss_growth_mb_per_min": server_memory["growth_mb_per_min"],
        "server_rss_trend_mb_per_min": server_memory["trend_mb_per_min"],
    }
    return {
        "benchmark": "soak",
        **describe_mode(server.env),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": args.loadavg_before,
        },
        "settings": {
            "devices": args.devices,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "still_every_s": args.still_every,
            "still_size": args.still_size,
            "pose_fps": args.pose_fps,
            "video": f"{VIDEO_SIZE} at {args.video_fps} fps",
            "pages": args.pages,
            "server_env": run_server_env(args),
        },
        "session_id": session_id,
        "timeline_s": {
            "session_live_after": live_after_s,
            "window": round(window_s, 1),
            **phases,
        },
        "counts": {
            "heartbeats_answered": phones.get("heartbeats"),
            "clock_samples_stored": counts_db["clock_samples"],
            "pose": {
                "frames_sent": phones.get("pose_frames_sent"),
                "frames_accepted": counts_db["pose_frames"],
                "batches_accepted": counts_db["pose_batches"],
                "batches_per_s_in_window": round(delta["pose_batches"] / window_s, 1),
                "frames_per_s_in_window": round(delta["pose_frames"] / window_s, 1),
            },
            "stills": {
                "capture_all_pressed": run.requests.ok("POST /registry/capture-all"),
                "capture_commands": capture_commands,
                "uploaded_by_phones": phones.get("stills_uploaded"),
                "stored": counts_db["stills"],
                "stored_in_session": final["stills_in_session"],
                "stored_per_s_in_window": round(delta["stills"] / window_s, 2),
            },
            "commands_done_by_phones": phones.get("commands_done"),
            "commands": final["commands"],
            "ghost": {
                **final["proposals"],
                "created_in_window": delta["proposals"],
                "stand_in": simulator["stand_in"],
            },
            "devices_registered": final["devices_registered"],
            "pushes": pages,
        },
        "errors": errors,
        # In the window: what the phones and a bare request waited.
        "latency": latency,
        "memory": memory,
        # Per cent of one core over the window.
        "cpu_pct_of_one_core": cpu,
        "ledger": ledger,
        "verdict": verdict,
        "samples": run.samples,
    }


def run_server_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(SERVER_ENV)
    for item in args.server_env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def describe_mode(env: dict[str, str]) -> dict[str, str]:
    database = "postgresql" if env.get("DATABASE_URL") else "sqlite"
    layer = "redis" if env.get("REDIS_URL") else "in-memory"
    mode = {("sqlite", "in-memory"): "embedded", ("postgresql", "redis"): "scaled"}.get(
        (database, layer), "mixed"
    )
    return {"mode": mode, "database": database, "channel_layer": layer}


def render_table(report: dict[str, Any]) -> str:
    s, c, e, m, lg, v = (
        report["settings"],
        report["counts"],
        report["errors"],
        report["memory"]["by_process"],
        report["ledger"],
        report["verdict"],
    )
    pose, stills, ghost = c["pose"], c["stills"], c["ghost"]
    stand_in = ghost["stand_in"] or {}
    cpu = report["cpu_pct_of_one_core"]

    def yes(value: bool) -> str:
        return "yes" if value else "NO"

    lines = [
        f"Soak: {s['devices']} simulated iPhones, {report['timeline_s']['window']:.0f} s window "
        f"after {s['warmup_s']:g} s warm-up, {report['mode']} mode ({report['database']}, "
        f"{report['channel_layer']}), {report['machine']['cores']} cores, load average before "
        f"{report['machine']['loadavg_before'][0]}",
        f"pose {s['pose_fps']} fps, Capture all every {s['still_every_s']:g} s "
        f"({s['still_size']}), video {s['video']}, {s['pages']} operator pages",
        "",
        "counts (whole run)",
        f"  heartbeats answered        {c['heartbeats_answered']} "
        f"(clock samples stored {c['clock_samples_stored']})",
        f"  pose frames sent/accepted  {pose['frames_sent']} / {pose['frames_accepted']} in "
        f"{pose['batches_accepted']} batches ({pose['batches_per_s_in_window']} batches/s, "
        f"{pose['frames_per_s_in_window']} frames/s in the window)",
        f"  stills                     {stills['capture_all_pressed']} Capture all, "
        f"{sum(stills['capture_commands'].values())} capture commands "
        f"{stills['capture_commands']}, {stills['uploaded_by_phones']} uploaded, "
        f"{stills['stored']} stored",
        f"  Ghost proposals            {ghost['created']} created, {ghost['decided']} decided "
        f"{ghost['by_state']}; stand-in accepted {stand_in.get('accepted')}, vetoed "
        f"{stand_in.get('vetoed')}, let run out {stand_in.get('waited')}, late "
        f"{stand_in.get('late')}",
    ]
    for page in c["pushes"]:
        lines.append(
            f"  page {page['page']} pushes            {page['pushes']} "
            f"({page['pushes_per_s_in_window']}/s in the window, {page['mb_received']} MB), "
            f"connects {page['connects']}, drops {page['drops']}"
        )
    lat = report["latency"]
    ping, beat, delivery = lat["ping"], lat["heartbeat_round_trip_s"], lat["capture_delivery_s"]
    lines += [
        "",
        "latency in the window, p50 / p95 / max",
        f"  /_ping                     {ms(ping['p50'])} / {ms(ping['p95'])} / {ms(ping['max'])} "
        f"ms ({ping['failed']} of {ping['sent']} unanswered)",
        f"  heartbeat round trip       {ms(beat['p50'])} / {ms(beat['p95'])} / {ms(beat['max'])} "
        f"ms ({beat['n']} beats, the phones' clocks)",
        f"  capture command delivery   {ms(delivery['p50'])} / {ms(delivery['p95'])} / "
        f"{ms(delivery['max'])} ms; lead p50 {ms(lat['capture_lead_s']['p50'])} ms; delivered "
        f"after the fire time {lat['captures_delivered_after_fire_time']}",
    ]
    lines += [
        "",
        f"errors                       {e['total']}: own HTTP {e['http_own_requests_total']}, "
        f"server 4xx/5xx {e['server_log']['http_4xx_5xx']}, server log errors "
        f"{e['server_log']['errors']} (+{e['server_log']['tracebacks']} tracebacks), "
        f"simulator {e['simulator_errors']} (log errors {e['simulator_log']['errors']}), "
        f"ledger sync rounds in trouble {e['ledger_sync']['rounds_with_trouble']}, socket drops "
        f"{e['socket_drops']}; warnings {e['warnings_total']}",
    ]
    for kind, n in list(e["ledger_sync"]["errors"].items())[:3]:
        lines.append(f"  ledger sync {n} x {kind}")
    lines += [f"  own request refused: {sample}" for sample in e["http_own_request_samples"]]
    for kind, n in list(e["server_log"]["http_by_reason_and_path"].items())[:5]:
        lines.append(f"  server answered {n} x {kind}")
    for kind, n in list(e["server_log"]["by_kind"].items())[:5]:
        lines.append(f"  server log {n} x {kind}")
    for kind, n in list(e["simulator_log"]["by_kind"].items())[:5]:
        lines.append(f"  simulator log {n} x {kind}")
    for kind, n in list((e["celery_log"] or {}).get("by_kind", {}).items())[:5]:
        lines.append(f"  celery log {n} x {kind}")
    lines += [
        "",
        f"{'RSS MB':18} {'start':>8} {'end':>8} {'growth':>8} {'MB/min':>8} {'trend':>8} "
        f"{'peak':>8}",
    ]
    for role, row in m.items():
        lines.append(
            f"{role:18} {fmt(row['start_mb']):>8} {fmt(row['end_mb']):>8} "
            f"{fmt(row['growth_mb']):>8} {fmt(row['growth_mb_per_min']):>8} "
            f"{fmt(row['trend_mb_per_min']):>8} {fmt(row['peak_mb']):>8}"
        )
    mem = report["memory"]
    lines += [
        f"server threads {mem['server_threads'][0]} -> {mem['server_threads'][1]}, open files "
        f"{mem['server_fds'][0]} -> {mem['server_fds'][1]}",
        "",
        "CPU, % of one core (window): " + ", ".join(f"{k} {v}" for k, v in cpu.items()),
        "",
        f"ledger: recorded {lg['recorded']}, synced {lg['synced']}, in Convex {lg['in_convex']} "
        f"({lg['streams']} streams; missing {lg['missing_in_convex']}, unexpected "
        f"{lg['unexpected_in_convex']}, duplicated {lg['duplicated_in_convex']}, failed "
        f"{lg['failed']}, late arrivals {lg['late_arrivals']}); drained in {lg['drain_s']} s; "
        f"{lg['recorded_per_s_in_window']} recorded/s and {lg['synced_per_s_in_window']} "
        f"synced/s in the window, backlog at its end {lg['backlog_at_window_end']}",
        "",
        f"recorded = synced = in Convex: {yes(v['ledger_consistent'])}; no errors: "
        f"{yes(v['no_errors'])}; no socket drops: {yes(v['no_socket_drops'])}; every capture "
        f"stored: {yes(v['every_capture_stored'])} (commands all done: "
        f"{yes(v['every_capture_command_done'])}); server RSS "
        f"{fmt(v['server_rss_growth_mb_per_min'])} MB/min (trend "
        f"{fmt(v['server_rss_trend_mb_per_min'])})",
    ]
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"
