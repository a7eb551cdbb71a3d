"""The parts benchmarks/ledger_sync.py is built from: a database of its own for Django, a Convex
client that times its calls, the paced recorder, the flusher that stands in for the embedded
`ledger_sync --loop` child, and reading a session back from Convex."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.db import close_old_connections, connection, transaction

import ledger
from benchmarks.common import seconds_summary
from ledger.convex import ConvexLedger

if TYPE_CHECKING:
    from pathlib import Path

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MONITOR_INTERVAL_S = 0.25
TICKER_POLL_S = 0.05  # director/ticker.py looks at FLUSH_WANTED this often, then wakes the child
MAX_FLUSHES = 5_000_000
MAX_ERROR_SAMPLES = 5


# --- Django, the database ----------------------------------------------------------------------


def prepare_environment(workdir: Path) -> Callable[[], None] | None:
    """Point Django at a database of its own; answers how to drop it (PostgreSQL) or None."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "motionmix.settings"
    os.environ["MOTIONMIX_VAR_DIR"] = str(workdir / "var")
    os.environ["MOTIONMIX_SQLITE_PATH"] = str(workdir / "ledger-bench.sqlite3")
    os.environ.setdefault("MOTIONMIX_LOG_LEVEL", "WARNING")
    # The embedded flush, in this process, to a bridge of this run only; the outage backoff
    # lives in this process's local-memory cache, as it does in the `ledger_sync` child.
    for name in ("REDIS_URL", "CONVEX_URL", "CONVEX_DEPLOY_KEY"):
        os.environ.pop(name, None)
    no_proxy = os.environ.get("NO_PROXY", "")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
        filter(None, [no_proxy, "127.0.0.1", "localhost"])
    )
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"DATABASE_URL must be postgres://... or unset, got {parts.scheme}://")
    if (parts.hostname or "") not in LOOPBACK | {""}:
        raise SystemExit(
            f"DATABASE_URL points at {parts.hostname}: this benchmark only talks to 127.0.0.1."
        )
    import psycopg
    from psycopg import sql

    name = f"mmbench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return drop


def setup_django() -> str:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    return "postgresql" if connection.vendor == "postgresql" else "embedded-sqlite"


def close_database() -> None:
    from django.db import connections

    for conn in connections.all():
        conn.close()
        close_pool = getattr(conn, "close_pool", None)
        if close_pool is not None:
            close_pool()


# --- Convex ------------------------------------------------------------------------------------


@dataclass
class AppendCall:
    started: float  # time.monotonic()
    seconds: float
    events: int
    store_before: int
    ok: bool


class TimedLedger(ConvexLedger):
    """The real client; it keeps the time of each appendEvents call, and counts the events it
    inserted, which is the store's size while it is the store's only writer."""

    def __init__(self, url: str, deploy_key: str) -> None:
        # The bridge's admin key: its functions, like a deployment's, are internal.
        super().__init__(url, deploy_key=deploy_key)
        self.calls: list[AppendCall] = []
        self.stored = 0
        self._lock = threading.Lock()

    def append_events(self, events: list[dict[str, Any]]) -> dict[str, int]:
        started = time.monotonic()
        answer: dict[str, int] | None = None
        try:
            answer = super().append_events(events)
            return answer
        finally:
            with self._lock:
                call = AppendCall(
                    started,
                    time.monotonic() - started,
                    len(events),
                    self.stored,
                    answer is not None,
                )
                self.calls.append(call)
                if answer is not None:
                    self.stored += answer["inserted"]

    def calls_between(self, since: float, until: float = float("inf")) -> list[AppendCall]:
        with self._lock:
            return [c for c in self.calls if since <= c.started < until]


def calls_summary(calls: list[AppendCall]) -> dict[str, Any]:
    ok = [c for c in calls if c.ok]
    busy = sum(c.seconds for c in ok)
    events = sum(c.events for c in ok)
    return {
        "calls": len(calls),
        "failed_calls": len(calls) - len(ok),
        "events_per_call": round(events / len(ok), 1) if ok else None,
        "bridge_busy_s": round(busy, 3),
        # What the bridge managed per second of its own time in these calls.
        "bridge_events_per_busy_s": round(events / busy, 1) if busy else None,
        "call_s": seconds_summary([c.seconds for c in ok]),
        "store_size_range": [ok[0].store_before, ok[-1].store_before] if ok else None,
    }


def event_doc(session: str, seq: int) -> dict[str, Any]:
    """An event as ledger.sync sends it (device.online, no device)."""
    return {
        "eventId": str(uuid.uuid4()),
        "sessionId": session,
        "seq": float(seq),
        "type": "device.online",
        "occurredAt": time.time(),
        "payload": {"offline_for_s": float(seq)},
    }


def session_in_convex(stream: str, expected: int) -> list[dict[str, Any]]:
    """The whole session from `sessionTimeline`, page by page (500 each) after the last seq."""
    client = ConvexLedger()
    timeline: list[dict[str, Any]] = []
    after: int | None = None
    for _ in range(expected // 500 + 3):
        page = client.session_timeline(stream, after_seq=after)
        if not page:
            break
        timeline += page
        after = int(page[-1]["seq"])
    return timeline


def arrival_order(timeline: list[dict[str, Any]], rows: dict[str, Row]) -> dict[str, Any]:
    """Did the events reach Convex in seq order? The bridge stamps `_creationTime` at insert,
    strictly rising, and keeps the order when it reloads its data file; an event inserted after
    one of a higher seq is late: a reader paging with afterSeq past it would never see it."""
    late: list[dict[str, Any]] = []
    highest = 0
    for doc in sorted(timeline, key=lambda d: float(d["_creationTime"])):
        seq = int(doc["seq"])
        if seq < highest:
            row = rows.get(str(doc["eventId"]))
            late.append(
                {
                    "seq": seq,
                    "after_seq": highest,
                    "attempts": row.attempts if row else None,
                    "last_error": row.last_error[:120] if row else None,
                }
            )
        highest = max(highest, seq)
    return {"late": len(late), "in_seq_order": not late, "late_examples": late[:5]}


# --- Recording ---------------------------------------------------------------------------------


@dataclass
class Recording:
    ids: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    error: str | None = None

    def summary(self, rate: float) -> dict[str, Any]:
        elapsed = self.finished - self.started
        return {
            "offered_per_s": rate,
            "recorded": len(self.ids),
            "elapsed_s": round(elapsed, 2),
            "achieved_per_s": round(len(self.ids) / elapsed, 1) if elapsed > 0 else None,
            "record_s": seconds_summary(self.latencies_s),
            "error": self.error,
        }


def record_paced(
    out: Recording, *, session_id: uuid.UUID, rate: float, seconds: float, stop: threading.Event
) -> None:
    """Record at `rate` for `seconds`, slot i due at start + i / rate (a late slot runs at once,
    so a slow database shows as a lower achieved rate), on this thread's own connection."""
    out.started = time.monotonic()
    try:
        for i in range(round(rate * seconds)):
            delay = out.started + i / rate - time.monotonic()
            if (delay > 0 and stop.wait(delay)) or stop.is_set():
                break
            if time.monotonic() - out.started >= seconds:
                break
            began = time.monotonic()
            with transaction.atomic():
                event = ledger.record(
                    type="device.online", session_id=session_id, payload={"offline_for_s": float(i)}
                )
            out.latencies_s.append(time.monotonic() - began)
            out.ids.append(str(event.event_id))
    except Exception as exc:
        out.error = repr(exc)
    finally:
        out.finished = time.monotonic()
        connection.close()


def record_phase(*, session_id: uuid.UUID, rate: float, seconds: float) -> tuple[Recording, int]:
    """Record for `seconds` on a thread; answers the recording and the largest backlog seen."""
    out, stop = Recording(), threading.Event()
    kwargs = {"out": out, "session_id": session_id, "rate": rate, "seconds": seconds, "stop": stop}
    worker = threading.Thread(target=record_paced, kwargs=kwargs, name="ledger-recorder")
    worker.start()
    backlog = 0
    deadline = time.monotonic() + seconds + 60
    try:
        while worker.is_alive():
            worker.join(timeout=MONITOR_INTERVAL_S)
            backlog = max(backlog, unsynced_count(str(session_id)))
            if time.monotonic() > deadline:
                stop.set()  # one record hangs (a locked database): end the phase
    except BaseException:
        stop.set()  # Ctrl-C: stop recording before the database goes away
        worker.join(timeout=30)
        raise
    if out.error:
        raise RuntimeError(f"recording failed: {out.error}")
    return out, backlog


# --- Flushing ----------------------------------------------------------------------------------


@dataclass
class FlushRun:
    started: float  # time.monotonic()
    seconds: float
    batches: int = 0
    sent: int = 0
    duplicates: int = 0
    retrying: int = 0
    failed: int = 0
    backed_off: bool = False  # returned at once: the outage backoff had not run out
    error: str = ""


@dataclass
class OutageRecord:
    at: float  # time.monotonic() of the failing flush's end
    failures: int
    wait_s: float  # until - now: the backoff this failure set


class Flusher(threading.Thread):
    """The embedded sync: `serve` runs `ledger_sync --loop` as a child, and its ticker writes to
    the child's wake pipe when FLUSH_WANTED is set (it looks every 50 ms). Here a thread clears
    FLUSH_WANTED, runs outbox_flush between close_old_connections calls as the child does, then
    waits for FLUSH_WANTED or `interval_s` (the child's --interval, 5 s as serve starts it)."""

    def __init__(self, client: TimedLedger, interval_s: float, max_runtime_s: float) -> None:
        super().__init__(name="ledger-flusher", daemon=True)
        self.client = client
        self.interval_s = interval_s
        self.max_runtime_s = max_runtime_s
        self.halt = threading.Event()
        self.runs: list[FlushRun] = []
        self.outages: list[OutageRecord] = []
        self.in_flight = threading.Event()  # set while outbox_flush runs
        self.lock = threading.Lock()

    def run(self) -> None:
        from django.core.cache import cache

        from ledger.sync import FLUSH_WANTED, OUTAGE_KEY, outbox_flush

        deadline = time.monotonic() + self.max_runtime_s
        try:
            for _ in range(MAX_FLUSHES):
                if self.halt.is_set() or time.monotonic() > deadline:
                    break
                FLUSH_WANTED.clear()
                self.in_flight.set()
                close_old_connections()
                run = FlushRun(started=time.monotonic(), seconds=0.0)
                try:
                    result = outbox_flush(client=self.client)
                    run.batches, run.sent, run.duplicates = (
                        result.batches,
                        result.sent,
                        result.duplicates,
                    )
                    run.retrying, run.failed = result.retrying, result.failed
                    run.backed_off = not result.batches and result.outage_until > 0
                    run.error = result.errors[0] if result.errors else ""
                    if result.retrying:
                        outage = cache.get(OUTAGE_KEY) or {}
                        record = OutageRecord(
                            time.monotonic(),
                            int(outage.get("failures", 0)),
                            float(outage.get("until", 0)) - time.time(),
                        )
                        with self.lock:
                            self.outages.append(record)
                except Exception as exc:  # the child logs it and runs again
                    run.error = f"exception: {exc!r}"
                finally:
                    close_old_connections()
                    run.seconds = time.monotonic() - run.started
                    with self.lock:
                        self.runs.append(run)
                    self.in_flight.clear()
                wake_at = time.monotonic() + self.interval_s
                while not (FLUSH_WANTED.is_set() or self.halt.is_set()):
                    if time.monotonic() >= wake_at:
                        break
                    time.sleep(TICKER_POLL_S)
        finally:
            connection.close()

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Until no flush is running, so that the last one of a phase is counted: the rows can
        all be synced while its loop has yet to find nothing more to claim."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight.is_set() and time.monotonic() < deadline:
            time.sleep(TICKER_POLL_S)

    def runs_between(self, since: float, until: float = float("inf")) -> list[FlushRun]:
        with self.lock:
            return [r for r in self.runs if since <= r.started < until]

    def outages_between(self, since: float, until: float = float("inf")) -> list[OutageRecord]:
        with self.lock:
            return [o for o in self.outages if since <= o.at < until]


def flush_summary(runs: list[FlushRun]) -> dict[str, Any]:
    """What the flush calls of a phase did: which reached Convex, which the backoff skipped."""
    errors: list[str] = []
    for run in runs:
        # One sample per kind of error; the port and ids differ between otherwise equal ones.
        seen = any(e[:80] == run.error[:80] for e in errors)
        if run.error and not seen and len(errors) < MAX_ERROR_SAMPLES:
            errors.append(run.error[:300])
    return {
        "calls": len(runs),
        "reached_convex": sum(1 for r in runs if r.batches),
        "skipped_by_backoff": sum(1 for r in runs if r.backed_off),
        "nothing_due": sum(1 for r in runs if not r.batches and not r.backed_off),
        "batches": sum(r.batches for r in runs),
        "sent": sum(r.sent for r in runs),
        "duplicates": sum(r.duplicates for r in runs),
        "rows_put_back": sum(r.retrying for r in runs),
        "failed": sum(r.failed for r in runs),
        "exceptions": sum(1 for r in runs if r.error.startswith("exception:")),
        "run_s": seconds_summary([r.seconds for r in runs if r.batches]),
        "busy_s": round(sum(r.seconds for r in runs), 2),
        "error_samples": errors,
    }


# --- The outbox rows ---------------------------------------------------------------------------


@dataclass
class Row:
    seq: int
    event_id: str
    occurred_at: datetime
    synced_at: datetime | None
    attempts: int
    last_error: str


def stream_rows(stream: str) -> dict[str, Row]:
    from ledger.models import ProductionEvent

    rows = ProductionEvent.objects.filter(stream=stream).values_list(
        "seq", "event_id", "occurred_at", "synced_at", "attempts", "last_error"
    )
    return {str(r[1]): Row(r[0], str(r[1]), *r[2:]) for r in rows}


def stream_statuses(stream: str) -> dict[str, int]:
    from django.db.models import Count

    from ledger.models import ProductionEvent

    rows = ProductionEvent.objects.filter(stream=stream).values_list("status")
    return dict(rows.annotate(n=Count("pk")).values_list("status", "n"))


def unsynced_count(stream: str) -> int:
    from ledger.models import ProductionEvent

    rows = ProductionEvent.objects.filter(stream=stream)
    return rows.exclude(status=ProductionEvent.Status.SYNCED).count()


def wait_synced(stream: str, timeout_s: float) -> float | None:
    """Seconds until no event of the stream is left unsynced, or None at the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if unsynced_count(stream) == 0:
            return time.monotonic() - started
        time.sleep(MONITOR_INTERVAL_S)
    return None


def verify_convex(stream: str, expected_ids: list[str]) -> dict[str, Any]:
    """Every recorded id in Convex exactly once, seqs 1..n with no gap, every row synced; and
    whether they arrived in seq order."""
    from ledger.models import ProductionEvent

    timeline = session_in_convex(stream, len(expected_ids))
    ids = [str(doc["eventId"]) for doc in timeline]
    seqs = [int(doc["seq"]) for doc in timeline]
    expected = set(expected_ids)
    statuses = stream_statuses(stream)
    result: dict[str, Any] = {
        "recorded": len(expected_ids),
        "in_convex": len(ids),
        "missing": len(expected - set(ids)),
        "unexpected": len(set(ids) - expected),
        "duplicated": len(ids) - len(set(ids)),
        "exact_ids_in_seq_order": ids == expected_ids and seqs == list(range(1, len(ids) + 1)),
        "db_statuses": statuses,
        "arrival": arrival_order(timeline, stream_rows(stream)),
    }
    result["ok"] = (
        result["exact_ids_in_seq_order"]
        and statuses.get(ProductionEvent.Status.SYNCED, 0) == len(expected_ids)
        and len(statuses) == 1
    )
    return result
