"""What the soak reads besides /proc: the server's database from this process (Django pointed at
it, the run's counts, what the run left, the ledger read back from Convex, and `Database`, the one
thread every ORM call runs on) and the logs of the server, the simulator and the Celery worker
(problems by kind, the embedded ledger sync's rounds in trouble, the simulator's summary).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.ledger_harness import close_database, verify_convex
from ledger.convex import SyncError
from tests.support.server import RunningServer

T = TypeVar("T")

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>WARNING|ERROR|CRITICAL) "
    r"(?P<logger>[\w.]+): (?P<message>.*)$"
)
# Celery's own format: "[2026-12-06 03:06:01,947: ERROR/MainProcess] message".
CELERY_LOG_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+: (?P<level>WARNING|ERROR|CRITICAL)/"
    r"(?P<logger>[\w-]+)\] (?P<message>.*)$"
)
SIMULATOR_SUMMARY = re.compile(
    r"Stopped: (?P<heartbeats>\d+) heartbeats, (?P<commands_done>\d+) commands done, "
    r"(?P<stills_uploaded>\d+) stills uploaded, (?P<pose_frames_sent>\d+) pose frames sent, "
    r"(?P<errors>\d+) errors\."
)
STAND_IN_SUMMARY = re.compile(
    r"Stand-in: (?P<accepted>\d+) accepted, (?P<vetoed>\d+) vetoed, (?P<waited>\d+) left to run "
    r"out, (?P<late>\d+) too late, (?P<sessions_started>\d+) session\(s\) started\."
)
LEDGER_SYNC_ROUND = re.compile(
    r"^sent \d+ \(new \d+, already there \d+\), retrying (?P<retrying>\d+), "
    r"failed (?P<failed>\d+);"
)


# --- The server's database, read from this process ---------------------------------------------


def django_for(server: RunningServer) -> None:
    """Point this process's Django at the server's database, for reads (and the stand-in's
    login). Pushes never leave from here: no Redis."""
    for key in (
        "DATABASE_URL",
        "MOTIONMIX_SQLITE_PATH",
        "MOTIONMIX_VAR_DIR",
        "CONVEX_URL",
        "CONVEX_DEPLOY_KEY",  # the bridge's functions answer its admin key only
    ):
        if key in server.env:
            os.environ[key] = server.env[key]
    os.environ.pop("REDIS_URL", None)
    os.environ["MOTIONMIX_LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_SETTINGS_MODULE"] = "motionmix.settings"
    import django

    django.setup()


def stand_in_login() -> Path:
    """The stand-in's login file, as `serve --stand-in` makes it."""
    from director.demo import demo_stand_in_ensure, stand_in_login_file

    demo_stand_in_ensure()
    return stand_in_login_file()


def live_session_id() -> str | None:
    from director.models import PhotoshootSession

    live = PhotoshootSession.objects.filter(status=PhotoshootSession.Status.LIVE)
    session_id = live.order_by("-started_at").values_list("pk", flat=True).first()
    return None if session_id is None else str(session_id)


def db_sample() -> dict[str, int]:
    """The counts that move during the run (cheap: counts on indexed or small tables)."""
    from django.db.models import Sum

    from devices.models import ClockSample, Device, DeviceCommand, PoseBatch
    from director.models import GhostProposal, Still
    from ledger.models import ProductionEvent

    events = ProductionEvent.objects
    return {
        "events_recorded": events.count(),
        "events_synced": events.filter(status=ProductionEvent.Status.SYNCED).count(),
        "events_failed": events.filter(status=ProductionEvent.Status.FAILED).count(),
        "stills": Still.objects.count(),
        "pose_batches": PoseBatch.objects.count(),
        "pose_frames": PoseBatch.objects.aggregate(n=Sum("frame_count"))["n"] or 0,
        "clock_samples": ClockSample.objects.count(),
        "proposals": GhostProposal.objects.count(),
        "devices_online": Device.objects.filter(status=Device.Status.ONLINE).count(),
        "open_commands": DeviceCommand.objects.filter(state__in=DeviceCommand.OPEN_STATES).count(),
        "open_captures": DeviceCommand.objects.filter(
            type=DeviceCommand.Type.CAPTURE_STILL, state__in=DeviceCommand.OPEN_STATES
        ).count(),
    }


def db_final(session_id: str) -> dict[str, Any]:
    """What the run left in the server's database."""
    from django.db.models import Count

    from devices.models import Device, DeviceCommand
    from director.models import GhostProposal, Still
    from ledger.models import ProductionEvent

    commands: dict[str, dict[str, int]] = {}
    for row in DeviceCommand.objects.values("type", "state").annotate(n=Count("pk")):
        commands.setdefault(row["type"], {})[row["state"]] = row["n"]
    proposals = GhostProposal.objects.filter(session_id=session_id)
    by_state = dict(proposals.values_list("state").annotate(n=Count("pk")).order_by())
    by_policy = dict(proposals.values_list("policy").annotate(n=Count("pk")).order_by())
    by_kind = dict(proposals.values_list("kind").annotate(n=Count("pk")).order_by())
    events = ProductionEvent.objects
    return {
        "devices_registered": Device.objects.count(),
        "commands": commands,
        "stills_in_session": Still.objects.filter(session_id=session_id).count(),
        "proposals": {
            "created": proposals.count(),
            "decided": proposals.exclude(decided_by="").count(),
            "by_state": by_state,
            "by_policy": by_policy,
            "by_kind": by_kind,
        },
        "events_by_status": dict(events.values_list("status").annotate(n=Count("pk")).order_by()),
        "events_by_type": dict(
            events.values_list("type").annotate(n=Count("pk")).order_by("-n", "type")
        ),
        "failed_examples": list(
            events.filter(status=ProductionEvent.Status.FAILED)
            .values_list("type", "last_error")
            .order_by("pk")[:5]
        ),
    }


def ledger_read_back() -> dict[str, Any]:
    """Every stream of the outbox against Convex's `sessionTimeline`: the same ids, once each,
    seqs 1..n, every row synced."""
    from ledger.models import ProductionEvent

    # order_by() first: the model's ordering (stream, seq) would make every row distinct.
    rows = ProductionEvent.objects.order_by().values_list("stream", flat=True)
    streams = list(rows.distinct())
    totals: Counter[str] = Counter()
    per_stream: dict[str, Any] = {}
    ok = True
    read_error = None
    for stream in sorted(streams):
        ids = [
            str(event_id)
            for event_id in ProductionEvent.objects.filter(stream=stream)
            .order_by("seq")
            .values_list("event_id", flat=True)
        ]
        try:
            result = verify_convex(stream, ids)
        except SyncError as exc:
            # The report still says what the outbox holds; Convex's side is unknown.
            read_error, ok = str(exc)[:300], False
            break
        ok = ok and result["ok"]
        for key in ("recorded", "in_convex", "missing", "unexpected", "duplicated"):
            totals[key] += result[key]
        totals["late_arrivals"] += result["arrival"]["late"]
        per_stream[stream] = {
            key: result[key]
            for key in ("recorded", "in_convex", "missing", "unexpected", "duplicated", "ok")
        } | {"late_arrivals": result["arrival"]["late"]}
    return {
        "streams": len(streams),
        "recorded": 0,
        "in_convex": 0,
        "missing": 0,
        "unexpected": 0,
        "duplicated": 0,
        "late_arrivals": 0,
        **totals,
        "every_stream_ok": ok,
        "read_error": read_error,
        "per_stream": per_stream,
    }


class Database:
    """One thread for every ORM call: Django's connections belong to a thread, and none may be
    used on the event loop's own."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="soak-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.pool.submit(close_database).result(timeout=30)
        self.pool.shutdown(wait=True)


# --- Logs --------------------------------------------------------------------------------------


def normalise(message: str) -> str:
    """One line per kind of problem: ids and camera numbers out, status codes kept."""
    message = UUID.sub("<id>", message)
    message = re.sub(r"\bCam \d+( \[\w+\])?", "Cam N", message)  # and its tally
    message = re.sub(r"\d+(\.\d+)? (ms|s)\b", r"N \2", message)
    message = re.sub(r"\d+\.\d+", "N.N", message)
    return message[:160]


def log_problems(text: str) -> dict[str, Any]:
    """ERROR and WARNING lines by logger and message, and the tracebacks. Requests Django
    answered with 4xx or 5xx are logged by `django.request` as "<reason>: <path>"."""
    levels: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    http: Counter[str] = Counter()
    for line in text.splitlines():
        match = LOG_LINE.match(line) or CELERY_LOG_LINE.match(line)
        if match is None:
            continue
        if match["logger"] == "django.request":
            http[normalise(match["message"])] += 1
            continue
        level = "warnings" if match["level"] == "WARNING" else "errors"
        levels[level] += 1
        kinds[f"{match['level']} {match['logger']}: {normalise(match['message'])}"] += 1
    return {
        "errors": levels["errors"],
        "warnings": levels["warnings"],
        "http_4xx_5xx": sum(http.values()),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "http_by_reason_and_path": dict(http.most_common(20)),
        "by_kind": dict(kinds.most_common(20)),
    }


def ledger_sync_problems(text: str) -> dict[str, Any]:
    """The embedded `ledger_sync --loop --quiet` child prints a round only when a batch went
    back to retry or was refused, then the errors indented below it."""
    rounds = retrying = failed = 0
    errors: Counter[str] = Counter()
    in_round = False
    for line in text.splitlines():
        match = LEDGER_SYNC_ROUND.match(line)
        if match is not None:
            rounds += 1
            retrying += int(match["retrying"])
            failed += int(match["failed"])
            in_round = True
        elif in_round and line.startswith("  "):
            errors[normalise(line.strip())] += 1
        else:
            in_round = False
    return {
        "rounds_with_trouble": rounds,
        "events_put_back": retrying,
        "events_refused": failed,
        "errors": dict(errors.most_common(10)),
    }


def simulator_summary(text: str) -> dict[str, Any]:
    phones = SIMULATOR_SUMMARY.search(text)
    stand_in = STAND_IN_SUMMARY.search(text)
    return {
        "phones": {k: int(v) for k, v in phones.groupdict().items()} if phones else None,
        "stand_in": {k: int(v) for k, v in stand_in.groupdict().items()} if stand_in else None,
    }
