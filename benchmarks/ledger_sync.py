"""Ledger sync benchmark: how far behind the production ledger in Convex runs, and how it recovers.

Against the real local Convex bridge (convex/bridge, the functions of convex/ in convex-test,
started as a subprocess on a loopback port with a --data file), in three phases:

1. Ceiling: the bridge's own mutation throughput, `ConvexLedger().append_events` with batches
   of 100 fresh events for a bounded time on a fresh store (its own bridge and data file), and
   how the time of one batch grows with the store: in that run ("grown"), and on bridges started
   from data files of N documents ("restored", the state the outage's restart leaves).
2. Steady load: one thread records `device.online` events of one session through
   `ledger.record(...)` inside `transaction.atomic()`, paced by the clock at --rate for
   --duration, on its own connection. A flusher thread runs the embedded sync loop: the ticker
   looks at `FLUSH_WANTED` every 50 ms, and `outbox_flush()` runs when it is set and at least
   every --flush-interval, between close_old_connections calls. (`serve` now runs that loop in
   a `ledger_sync --loop` child woken through a pipe; a thread here shares the recorder's GIL,
   which the child does not, while on SQLite both share the one write lock.) Lag per event is
   synced_at - occurred_at, read back from the database once everything is synced; then
   `sessionTimeline` must hold exactly the recorded event ids in seq order.
3. Outage: the bridge is stopped, the same load runs for --outage seconds, the bridge restarts
   on the same port with the same data file, and the benchmark times the catch-up until the
   backlog is synced. Recording stops at the restart, so the catch-up is the backlog alone. Rows
   whose send failed wait out their backoff (`ledger.sync.backoff_s`), which the report shows.

The flusher passes `outbox_flush` a `ConvexLedger` subclass that times each appendEvents call,
so the report can split the sync's time between the bridge and the rest. With no environment
this runs the embedded mode (SQLite in a temporary folder, never var/). With DATABASE_URL set
to a PostgreSQL server on this machine it creates a throwaway database `mmbench_<random>` and
drops it at the end. REDIS_URL is ignored: the flush is the embedded ticker's, woken in-process.

    .venv/bin/python benchmarks/ledger_sync.py [--rate 200] [--duration 30] [--outage 30]
        [--ceiling-duration 10] [--json result.json] [--keep]

The JSON report goes to stdout (and to --json PATH); progress and the table go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from django.db import close_old_connections, connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402

import ledger  # noqa: E402
from ledger.convex import ConvexLedger  # noqa: E402

if TYPE_CHECKING:
    from ledger.sync import FlushResult

CONVEX = ROOT / "convex"
READY = "convex-bridge listening on "
SNAPSHOT_FORMAT = {"format": "motionmix-convex-bridge", "version": 1}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

AIM_LAG_P95_S = 1.0
APPEND_MAX = 100  # production:appendEvents takes at most 100 events
BRIDGE_START_TIMEOUT_S = 120.0  # a restart reloads every stored document first
MONITOR_INTERVAL_S = 0.25
TICKER_POLL_S = 0.05  # director/ticker.py looks at FLUSH_WANTED this often
MAX_CEILING_BATCHES = 10_000
PROBE_BATCHES = 3
MAX_FLUSHES = 5_000_000
MAX_ERROR_SAMPLES = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[rank]


def seconds_summary(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "p50": r(percentile(ordered, 50)),
        "p95": r(percentile(ordered, 95)),
        "max": r(ordered[-1] if ordered else None),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


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


# --- The bridge --------------------------------------------------------------------------------


def require_bridge() -> str:
    node = shutil.which("node")
    if not node:
        raise SystemExit("Node.js is not installed: the Convex bridge needs it (Node >= 20.19).")
    if not (CONVEX / "node_modules" / "convex-test").exists():
        raise SystemExit(
            "convex/node_modules is missing: run `npm ci` in convex/ first (make test does)."
        )
    return node


@dataclass
class BridgeProcess:
    """`node convex/bridge/main.mjs --port N --data FILE`, as tests/support/bridge.py starts it;
    stderr goes to a log file so a failed start can say why."""

    node: str
    data: Path
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = BRIDGE_START_TIMEOUT_S) -> float:
        """Start (on the same port after a stop); answers the seconds until it was ready."""
        started = time.monotonic()
        with self.log_path.open("a") as stderr:
            self.proc = subprocess.Popen(
                [
                    self.node,
                    str(CONVEX / "bridge" / "main.mjs"),
                    "--port",
                    str(self.port),
                    "--data",
                    str(self.data),
                ],
                cwd=CONVEX,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self.proc.stdout is not None
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY):
                    self.port = int(line.strip().rsplit(":", 1)[1])
                    return time.monotonic() - started
            if self.proc.poll() is not None:
                break
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the Convex bridge did not start in {timeout_s:.0f} s: {tail}")

    def stop(self) -> None:
        # SIGTERM lets the bridge answer the call in flight (and write its snapshot) first.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def cpu_s(self) -> float | None:
        """CPU seconds the running bridge process has used (Linux /proc), None elsewhere."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_bridge(node: str, workdir: Path, name: str) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(
        node=node, data=workdir / f"{name}.json", log_path=workdir / f"{name}.log"
    )
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


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

    def __init__(self, url: str) -> None:
        super().__init__(url, deploy_key="")
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
                self.calls.append(
                    AppendCall(
                        started=started,
                        seconds=time.monotonic() - started,
                        events=len(events),
                        store_before=self.stored,
                        ok=answer is not None,
                    )
                )
                if answer is not None:
                    self.stored += answer["inserted"]

    def calls_since(self, since: float) -> list[AppendCall]:
        with self._lock:
            return [c for c in self.calls if c.started >= since]


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


# --- 1. Ceiling --------------------------------------------------------------------------------


def growth_points(calls: list[AppendCall], points: int = 12) -> list[dict[str, Any]]:
    step = max(1, len(calls) // points)
    return [
        {"store_size": c.store_before, "batch_ms": round(c.seconds * 1000, 1)}
        for c in calls[::step]
    ]


def growth_slope(calls: list[AppendCall]) -> float | None:
    if len(calls) < 3:
        return None
    xs = [c.store_before / 1000 for c in calls]
    slope, _ = statistics.linear_regression(xs, [c.seconds * 1000 for c in calls])
    return round(slope, 1)


def probe_restored(node: str, workdir: Path, size: int) -> dict[str, Any]:
    """A bridge started from a data file of `size` events: batch time on a restored store."""
    session = str(uuid.uuid4())
    created_ms = time.time() * 1000
    docs = []
    for i in range(size):
        doc = event_doc(session, i + 1)
        docs.append({"_id": str(i), "_creationTime": created_ms + i * 0.001, **doc})
    name = f"restored-{size}"
    (workdir / f"{name}.json").write_text(
        json.dumps({**SNAPSHOT_FORMAT, "tables": {"productionEvents": docs}})
    )
    bridge = BridgeProcess(
        node=node, data=workdir / f"{name}.json", log_path=workdir / f"{name}.log"
    )
    start_s = bridge.start()
    try:
        client = TimedLedger(bridge.url)
        for b in range(PROBE_BATCHES):
            client.append_events(
                [event_doc(session, size + b * APPEND_MAX + i + 1) for i in range(APPEND_MAX)]
            )
    finally:
        bridge.stop()
        (workdir / f"{name}.json").unlink(missing_ok=True)
    return {
        "store_size": size,
        "start_s": round(start_s, 2),
        "batch_ms": round(statistics.median(c.seconds for c in client.calls) * 1000, 1),
    }


def measure_ceiling(
    node: str, workdir: Path, seconds: float, restored_sizes: list[int]
) -> dict[str, Any]:
    log(f"ceiling: appendEvents x{APPEND_MAX} on a fresh bridge store for {seconds:g} s")
    with running_bridge(node, workdir, "bridge-ceiling") as bridge:
        client = TimedLedger(bridge.url)
        session = str(uuid.uuid4())
        cpu_before = bridge.cpu_s()
        started = time.monotonic()
        for batch in range(MAX_CEILING_BATCHES):
            if time.monotonic() - started >= seconds:
                break
            client.append_events(
                [event_doc(session, batch * APPEND_MAX + i + 1) for i in range(APPEND_MAX)]
            )
        elapsed = time.monotonic() - started
        cpu_after = bridge.cpu_s()
    events = client.stored
    first = [c.seconds for c in client.calls[:3]]
    restored = []
    for size in restored_sizes:
        log(f"ceiling: batch time on a bridge restored from {size} documents")
        restored.append(probe_restored(node, workdir, size))
    return {
        "events_per_s": round(events / elapsed, 1),
        "events": events,
        "elapsed_s": round(elapsed, 2),
        "batches": len(client.calls),
        "fresh_store_batch_ms": round(statistics.median(first) * 1000, 1),
        "fresh_store_events_per_s": round(APPEND_MAX / statistics.median(first), 1),
        "last_batch_ms": round(client.calls[-1].seconds * 1000, 1),
        # Least squares over every batch of the run: what 1000 more stored events add.
        "growth_ms_per_1000_events": growth_slope(client.calls),
        "bridge_cpu_s": (
            round(cpu_after - cpu_before, 2)
            if cpu_after is not None and cpu_before is not None
            else None
        ),
        "growth_grown": growth_points(client.calls),
        "growth_restored": restored,
    }


# --- Django, the database ----------------------------------------------------------------------


def prepare_environment(workdir: Path) -> Callable[[], None] | None:
    """Point Django at a database of its own; answers how to drop it (PostgreSQL) or None."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "motionmix.settings"
    os.environ["MOTIONMIX_VAR_DIR"] = str(workdir / "var")
    os.environ["MOTIONMIX_SQLITE_PATH"] = str(workdir / "ledger-bench.sqlite3")
    os.environ.setdefault("MOTIONMIX_LOG_LEVEL", "WARNING")
    # The embedded ticker's flush, in this process, to a bridge of this run only.
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


# --- Recording and flushing ----------------------------------------------------------------------


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


@dataclass
class FlushTotals:
    flushes: int = 0
    batches: int = 0
    sent: int = 0
    inserted: int = 0
    duplicates: int = 0
    retrying: int = 0
    failed: int = 0
    exceptions: int = 0
    error_samples: list[str] = field(default_factory=list)

    def minus(self, before: FlushTotals) -> dict[str, Any]:
        now, then = asdict(self), asdict(before)
        diff: dict[str, Any] = {k: now[k] - then[k] for k in now if k != "error_samples"}
        diff["error_samples"] = [e for e in self.error_samples if e not in before.error_samples]
        return diff


class Flusher(threading.Thread):
    """The embedded ticker's flush job (director/ticker.py): clear FLUSH_WANTED, run
    outbox_flush between close_old_connections calls (as database_sync_to_async does), then
    wait up to interval_s, looking at FLUSH_WANTED every 50 ms as the ticker does."""

    def __init__(self, client: TimedLedger, interval_s: float, max_runtime_s: float) -> None:
        super().__init__(name="ledger-flusher", daemon=True)
        self.client = client
        self.interval_s = interval_s
        self.max_runtime_s = max_runtime_s
        self.halt = threading.Event()
        self.totals = FlushTotals()
        self.runs: list[tuple[float, float]] = []  # (monotonic start, seconds) of each flush
        self.lock = threading.Lock()

    def snapshot(self) -> FlushTotals:
        with self.lock:
            return FlushTotals(
                **{**asdict(self.totals), "error_samples": [*self.totals.error_samples]}
            )

    def run(self) -> None:
        from ledger.sync import FLUSH_WANTED, outbox_flush

        deadline = time.monotonic() + self.max_runtime_s
        try:
            for _ in range(MAX_FLUSHES):
                if self.halt.is_set() or time.monotonic() > deadline:
                    break
                FLUSH_WANTED.clear()
                close_old_connections()
                began = time.monotonic()
                try:
                    self._add(outbox_flush(client=self.client))
                except Exception as exc:  # the ticker logs it and runs again
                    with self.lock:
                        self.totals.exceptions += 1
                        self._sample(repr(exc))
                finally:
                    close_old_connections()
                    with self.lock:
                        self.runs.append((began, time.monotonic() - began))
                wake_at = time.monotonic() + self.interval_s
                while not (FLUSH_WANTED.is_set() or self.halt.is_set()):
                    if time.monotonic() >= wake_at:
                        break
                    time.sleep(TICKER_POLL_S)
        finally:
            connection.close()

    def runs_since(self, since: float) -> dict[str, float | None]:
        with self.lock:
            return seconds_summary([s for start, s in self.runs if start >= since])

    def _add(self, result: FlushResult) -> None:
        with self.lock:
            t = self.totals
            t.flushes += 1
            t.batches += result.batches
            t.sent += result.sent
            t.inserted += result.inserted
            t.duplicates += result.duplicates
            t.retrying += result.retrying
            t.failed += result.failed
            for error in result.errors:
                self._sample(error)

    def _sample(self, error: str) -> None:
        # One sample per kind of error; the port and ids differ between otherwise equal ones.
        head = error[:80]
        samples = self.totals.error_samples
        if len(samples) < MAX_ERROR_SAMPLES and not any(s[:80] == head for s in samples):
            samples.append(error[:300])


def unsynced_count(stream: str) -> int:
    from ledger.models import ProductionEvent

    return (
        ProductionEvent.objects.filter(stream=stream)
        .exclude(status=ProductionEvent.Status.SYNCED)
        .count()
    )


@dataclass
class Row:
    seq: int
    event_id: str
    occurred_at: datetime
    synced_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None


def stream_rows(stream: str) -> dict[str, Row]:
    from ledger.models import ProductionEvent

    rows = ProductionEvent.objects.filter(stream=stream).values_list(
        "seq", "event_id", "occurred_at", "synced_at", "attempts", "next_attempt_at"
    )
    return {str(r[1]): Row(r[0], str(r[1]), *r[2:]) for r in rows}


def late_arrivals(rows: list[Row]) -> int:
    """Events that reached Convex after an event of a higher seq in their stream: a reader that
    pages sessionTimeline with afterSeq while they are missing skips them for good."""
    late = highest = 0
    synced = [r for r in rows if r.synced_at is not None]
    for row in sorted(synced, key=lambda r: (r.synced_at, r.seq)):
        if row.seq < highest:
            late += 1
        highest = max(highest, row.seq)
    return late


def record_phase(
    *, session_id: uuid.UUID, rate: float, seconds: float, stop: threading.Event
) -> tuple[Recording, int]:
    """Record for `seconds` on a thread; answers the recording and the largest backlog seen."""
    out = Recording()
    worker = threading.Thread(
        target=record_paced,
        kwargs={
            "out": out,
            "session_id": session_id,
            "rate": rate,
            "seconds": seconds,
            "stop": stop,
        },
        name="ledger-recorder",
    )
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


def wait_synced(stream: str, timeout_s: float) -> float | None:
    """Seconds until no event of the stream is left unsynced, or None at the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if unsynced_count(stream) == 0:
            return time.monotonic() - started
        time.sleep(MONITOR_INTERVAL_S)
    return None


def verify_convex(stream: str, expected_ids: list[str]) -> dict[str, Any]:
    """Read the whole session back from Convex (pages of the default 500, after the last seq)."""
    from ledger.models import ProductionEvent

    client = ConvexLedger()
    timeline: list[Any] = []
    after: int | None = None
    for _ in range(len(expected_ids) + 2):
        page = client.session_timeline(stream, after_seq=after)
        if not page:
            break
        timeline += page
        after = int(page[-1]["seq"])
    ids = [str(row["eventId"]) for row in timeline]
    seqs = [int(row["seq"]) for row in timeline]
    expected = set(expected_ids)
    statuses = dict(
        ProductionEvent.objects.filter(stream=stream)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    result = {
        "recorded": len(expected_ids),
        "in_convex": len(ids),
        "missing": len(expected - set(ids)),
        "unexpected": len(set(ids) - expected),
        "duplicated": len(ids) - len(set(ids)),
        "exact_ids_in_seq_order": ids == expected_ids and seqs == list(range(1, len(ids) + 1)),
        "db_statuses": statuses,
    }
    result["ok"] = (
        result["exact_ids_in_seq_order"]
        and statuses.get(ProductionEvent.Status.SYNCED, 0) == len(expected_ids)
        and len(statuses) == 1
    )
    return result


# --- 2. Steady load, 3. outage -----------------------------------------------------------------


def steady_phase(
    args: argparse.Namespace, session_id: uuid.UUID, client: TimedLedger, flusher: Flusher
) -> tuple[dict[str, Any], list[str]]:
    stream = str(session_id)
    log(f"steady: {args.rate:g} events/s for {args.duration:g} s, flushing as the ticker does")
    totals_before, started = flusher.snapshot(), time.monotonic()
    recording, backlog = record_phase(
        session_id=session_id, rate=args.rate, seconds=args.duration, stop=threading.Event()
    )
    log(f"steady: recorded {len(recording.ids)}; waiting for the sync to drain")
    drained = wait_synced(stream, args.drain_timeout)
    rows = stream_rows(stream)
    mine = [rows[i] for i in recording.ids]
    lags = [(r.synced_at - r.occurred_at).total_seconds() for r in mine if r.synced_at]
    synced_at = [r.synced_at for r in mine if r.synced_at]
    span = (max(synced_at) - min(r.occurred_at for r in mine)).total_seconds() if synced_at else 0
    sync_per_s = round(len(synced_at) / span, 1) if span > 0 else None
    report = {
        "recording": recording.summary(args.rate),
        "drained_after_recording_s": None if drained is None else round(drained, 2),
        "unsynced_left": len(mine) - len(lags),
        "max_backlog": backlog,
        "lag_s": seconds_summary(lags),
        "sync_events_per_s": sync_per_s,
        "late_arrivals": late_arrivals(mine),
        "bridge": calls_summary(client.calls_since(started)),
        "flush": flusher.snapshot().minus(totals_before),
        "flush_run_s": flusher.runs_since(started),
    }
    log("steady: checking the session in Convex")
    report["verify"] = verify_convex(stream, recording.ids)
    return report, recording.ids


def pending_at(rows: list[Row], moment: datetime) -> dict[str, Any]:
    """How long each row still had to wait out its backoff at `moment` (0: due)."""
    waits = [
        max(0.0, (r.next_attempt_at - moment).total_seconds()) if r.next_attempt_at else 0.0
        for r in rows
    ]
    attempts = sorted(float(r.attempts) for r in rows)
    return {
        "unsynced": len(rows),
        "due_at_once": sum(1 for w in waits if w == 0),
        "backoff_left_s": seconds_summary(waits),
        "attempts_p50": percentile(attempts, 50),
        "attempts_max": attempts[-1] if attempts else None,
    }


def outage_phase(
    args: argparse.Namespace,
    session_id: uuid.UUID,
    client: TimedLedger,
    flusher: Flusher,
    bridge: BridgeProcess,
    earlier_ids: list[str],
) -> dict[str, Any]:
    from django.utils import timezone

    stream = str(session_id)
    log(f"outage: bridge stopped; recording {args.rate:g} events/s for {args.outage:g} s")
    bridge.stop()
    totals_before, down_at = flusher.snapshot(), time.monotonic()
    recording, backlog = record_phase(
        session_id=session_id, rate=args.rate, seconds=args.outage, stop=threading.Event()
    )
    during = flusher.snapshot().minus(totals_before)
    during["flush_run_s"] = flusher.runs_since(down_at)
    restart_s = bridge.start()
    ready_wall, ready = timezone.now(), time.monotonic()
    log(f"outage: bridge back after {time.monotonic() - down_at:.1f} s; catching up")
    rows = stream_rows(stream)
    at_ready = pending_at([rows[i] for i in recording.ids], ready_wall)
    totals_ready = flusher.snapshot()
    caught_up = wait_synced(stream, args.catchup_timeout)
    rows = stream_rows(stream)
    mine = [rows[i] for i in recording.ids]
    offsets = sorted((r.synced_at - ready_wall).total_seconds() for r in mine if r.synced_at)
    catchup_s = offsets[-1] if offsets and caught_up is not None else None
    calls = client.calls_since(ready)
    busy = sum(c.seconds for c in calls if c.ok)
    report = {
        "recording": recording.summary(args.rate),
        "bridge_down_s": round(ready - down_at, 2),
        "bridge_restart_s": round(restart_s, 2),
        "max_backlog": backlog,
        "flush_during_outage": during,
        "at_restart": at_ready,
        "backlog": at_ready["unsynced"],
        "caught_up": caught_up is not None,
        "first_synced_after_s": round(offsets[0], 2) if offsets else None,
        "half_synced_after_s": round(percentile(offsets, 50) or 0, 2) if offsets else None,
        "catchup_s": None if catchup_s is None else round(catchup_s, 2),
        "catchup_events_per_s": (round(at_ready["unsynced"] / catchup_s, 1) if catchup_s else None),
        # The part of the catch-up the bridge spent on calls; the rest was the flusher waiting
        # for rows to come out of their backoff (or the database).
        "catchup_bridge_busy_s": round(busy, 2),
        "catchup_not_bridge_s": None if catchup_s is None else round(catchup_s - busy, 2),
        "lag_s": seconds_summary(
            [(r.synced_at - r.occurred_at).total_seconds() for r in mine if r.synced_at]
        ),
        "late_arrivals": late_arrivals(mine),
        "attempts_max_final": max((r.attempts for r in mine), default=0),
        "bridge": calls_summary(calls),
        "flush_catchup": flusher.snapshot().minus(totals_ready),
        "flush_catchup_run_s": flusher.runs_since(ready),
    }
    log("outage: checking the whole session in Convex")
    report["verify"] = verify_convex(stream, earlier_ids + recording.ids)
    return report


# --- Report --------------------------------------------------------------------------------------


def verdict(steady: dict[str, Any], outage: dict[str, Any] | None) -> dict[str, Any]:
    p95 = steady["lag_s"]["p95"]
    lag_met = p95 is not None and p95 <= AIM_LAG_P95_S and steady["unsynced_left"] == 0
    lost_none = steady["verify"]["ok"] and (outage is None or outage["verify"]["ok"])
    return {
        "lag_p95_s": AIM_LAG_P95_S,
        "lag_met": lag_met,
        "nothing_lost": lost_none,
        "met": lag_met and lost_none,
    }


def render_table(report: dict[str, Any]) -> str:
    c, s, o, aim = report["ceiling"], report["steady"], report["outage"], report["aim"]

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    def trio(stats: dict[str, Any]) -> str:
        return " / ".join(cell(stats[k]) for k in ("p50", "p95", "max")) + " s"

    rec = s["recording"]
    rows = [
        ("mode", report["mode"]),
        ("steady: offered / achieved", f"{report['rate']} / {rec['achieved_per_s']} ev/s"),
        ("steady: duration", f"{report['duration_s']} s, {rec['recorded']} events"),
        ("steady: lag p50 / p95 / max", trio(s["lag_s"])),
        ("steady: max backlog", cell(s["max_backlog"])),
        ("steady: drained after recording", f"{cell(s['drained_after_recording_s'])} s"),
        ("steady: sync throughput", f"{cell(s['sync_events_per_s'])} ev/s"),
        ("ceiling: fresh store", f"{c['events_per_s']} ev/s over {c['elapsed_s']} s"),
        (
            "ceiling: batch at store 0 / end",
            f"{c['fresh_store_batch_ms']} / {c['last_batch_ms']} ms",
        ),
        ("ceiling: ms per 1000 more stored", cell(c["growth_ms_per_1000_events"])),
        ("steady sync / ceiling", cell(report["ratios"]["steady_sync_to_ceiling"])),
    ]
    if o is not None:
        at = o["at_restart"]
        rows += [
            ("outage: duration", f"{report['outage_s']} s, {o['recording']['recorded']} events"),
            ("outage: achieved rate", f"{o['recording']['achieved_per_s']} ev/s"),
            ("outage: failing flushes", cell(o["flush_during_outage"]["flushes"])),
            ("outage: row retries", cell(o["flush_during_outage"]["retrying"])),
            ("outage: backlog at restart", f"{o['backlog']} ({at['due_at_once']} due at once)"),
            ("outage: backoff left p50/p95/max", trio(at["backoff_left_s"])),
            ("outage: attempts max at restart", cell(at["attempts_max"])),
            ("catch-up: time", f"{cell(o['catchup_s'])} s"),
            (
                "catch-up: first / half synced",
                f"{o['first_synced_after_s']} / {o['half_synced_after_s']} s",
            ),
            ("catch-up: rate", f"{cell(o['catchup_events_per_s'])} ev/s"),
            ("catch-up: events per call", cell(o["bridge"]["events_per_call"])),
            (
                "catch-up: bridge busy / other",
                f"{o['catchup_bridge_busy_s']} / {o['catchup_not_bridge_s']} s",
            ),
            ("catch-up / ceiling", cell(report["ratios"]["catchup_to_ceiling"])),
            ("late arrivals steady / outage", f"{s['late_arrivals']} / {o['late_arrivals']}"),
            ("duplicates sent", cell(s["flush"]["duplicates"] + o["flush_catchup"]["duplicates"])),
            ("flush exceptions", cell(s["flush"]["exceptions"] + o["flush_catchup"]["exceptions"])),
        ]
    verified = f"{s['verify']['ok']} / {'-' if o is None else o['verify']['ok']}"
    rows.append(("verified steady / whole session", verified))
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
        f"nothing lost {'yes' if aim['nothing_lost'] else 'NO'})",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    node = require_bridge()
    loadavg = [round(x, 2) for x in os.getloadavg()]
    drop_database = prepare_environment(workdir)
    try:
        mode = setup_django()
        log(f"mode: {mode}; work directory {workdir}")
        target = round(args.rate * (args.duration + args.outage))
        sizes = sorted({max(APPEND_MAX, round(target * f / 100) * 100) for f in (0.25, 0.5, 1.0)})
        ceiling = measure_ceiling(
            node, workdir, args.ceiling_duration, sizes if args.restored_probes else []
        )
        from django.conf import settings

        session_id = uuid.uuid4()
        with running_bridge(node, workdir, "bridge-sync") as bridge:
            settings.CONVEX_URL = bridge.url
            client = TimedLedger(bridge.url)
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
        with contextlib.suppress(Exception):  # never keep the throwaway database over this
            close_database()
        if drop_database is not None:
            drop_database()
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
        "--no-restored-probes",
        dest="restored_probes",
        action="store_false",
        help="Skip the batch timings on bridges restored from data files of N documents.",
    )
    parser.add_argument(
        "--flush-interval", type=float, default=0.5, help="The flusher runs at least this often."
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="Longest wait for the steady backlog."
    )
    parser.add_argument(
        "--catchup-timeout", type=float, default=900.0, help="Longest wait for the catch-up."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
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
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="mm-ledger-bench-"))
        else:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="mm-ledger-bench-"))
            )
        report = run(args, workdir)
        if args.keep:
            log(f"Logs kept in {workdir}")
    text = json.dumps(report, indent=2, default=str)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text, flush=True)
    log("")
    log(render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
