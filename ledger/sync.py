"""Sending the outbox to Convex: claim, send in seq order, mark. Nothing is lost or doubled.

A flush claims due rows in a short transaction (status `sending`, `claimed_at`), sends them
outside any transaction, then marks them in another short one. So no database lock is held
across the network call (on SQLite that lock would stop every other writer). A flush that dies
after claiming leaves rows `sending`; once their lease runs out the next flush takes them back
and sends them again, and Convex skips event ids it already holds: at least once on the wire,
exactly once in the table.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from ledger import broadcast
from ledger.convex import ConvexLedger, SyncError, configured
from ledger.models import ProductionEvent

logger = logging.getLogger(__name__)

BATCH_SIZE = 100  # production:appendEvents takes at most 100
CLAIM_LEASE_S = 60.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
SESSION_EVENT_TYPES = ("session.started", "session.stopped")

# Set on commit of any recorded event; the embedded ticker waits on it to flush at once.
FLUSH_WANTED = threading.Event()


@dataclass
class FlushResult:
    sent: int = 0
    inserted: int = 0
    duplicates: int = 0
    retrying: int = 0
    failed: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    # Set when Convex is backed off: no call is made before this unix time.
    outage_until: float = 0.0
    # Another flush holds the lock; this one did nothing.
    busy: bool = False


def backoff_s(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter (between half and all of the step), capped."""
    step = BACKOFF_BASE_S * (2 ** min(max(0, failures - 1), 16))
    return min(BACKOFF_CAP_S, step) * (0.5 + 0.5 * rng())


OUTAGE_KEY = "ledger:convex-outage"


def _outage_until() -> float:
    """Unix time before which no flush should call Convex (0 when it is answering).

    The backoff is for Convex as a whole, not per row: rows stay in seq order, and while it is
    down each flush costs one read of the cache, not a claim and a release of a hundred rows.
    """
    try:
        outage = cache.get(OUTAGE_KEY)
    except Exception:
        return 0.0  # no shared cache (Redis away): try Convex, the worst is one failed call
    return float(outage["until"]) if outage else 0.0


def _outage_record(error: str) -> float:
    try:
        outage = cache.get(OUTAGE_KEY) or {"failures": 0}
        failures = int(outage["failures"]) + 1
        until = time.time() + backoff_s(failures)
        cache.set(OUTAGE_KEY, {"failures": failures, "until": until, "error": error}, 3600)
    except Exception:
        logger.warning("could not record the Convex outage in the cache", exc_info=True)
        return 0.0
    return until


def _outage_clear() -> None:
    try:
        cache.delete(OUTAGE_KEY)
    except Exception:
        logger.warning("could not clear the Convex outage in the cache", exc_info=True)


def _due() -> Q:
    lease_over = timezone.now() - timedelta(seconds=CLAIM_LEASE_S)
    abandoned = Q(status=ProductionEvent.Status.SENDING, claimed_at__lt=lease_over)
    return Q(status=ProductionEvent.Status.PENDING) | abandoned


def outbox_claim(*, limit: int = BATCH_SIZE) -> list[ProductionEvent]:
    """Claim up to `limit` due rows, oldest stream position first. Concurrent flushes on
    PostgreSQL skip each other's rows (SKIP LOCKED); SQLite runs one writer at a time."""
    with transaction.atomic():
        # pk rises with seq within a stream (both are assigned under the stream's lock), and
        # across streams it is the order of recording.
        rows = ProductionEvent.objects.filter(_due()).order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True, no_key=True)
        claimed = list(rows[:limit])
        if claimed:
            now = timezone.now()
            ProductionEvent.objects.filter(pk__in=[row.pk for row in claimed]).update(
                status=ProductionEvent.Status.SENDING, claimed_at=now
            )
    claimed.sort(key=lambda row: (row.stream, row.seq))
    return claimed


def _document(event: ProductionEvent) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "eventId": str(event.event_id),
        # A session's id, or "fleet" for device events outside any session.
        "sessionId": event.stream,
        "seq": float(event.seq),
        "type": event.type,
        "occurredAt": event.occurred_at.timestamp(),
        "payload": event.payload,
    }
    if event.device_id:
        doc["deviceId"] = str(event.device_id)
    return doc


def _session_document(event: ProductionEvent) -> dict[str, Any]:
    session = dict(event.payload.get("session") or {})
    session["sessionId"] = str(event.session_id)
    return session


@transaction.atomic
def events_mark_synced(*, event_ids: Iterable[int]) -> int:
    count = ProductionEvent.objects.filter(
        pk__in=list(event_ids), status=ProductionEvent.Status.SENDING
    ).update(
        status=ProductionEvent.Status.SYNCED,
        synced_at=timezone.now(),
        last_error="",
        claimed_at=None,
    )
    return count


def _release(event_ids: Iterable[int], *, status: str, error: str) -> int:
    return ProductionEvent.objects.filter(
        pk__in=list(event_ids), status=ProductionEvent.Status.SENDING
    ).update(
        status=status,
        attempts=F("attempts") + 1,
        last_error=error[:2000],
        claimed_at=None,
    )


@transaction.atomic
def events_mark_retry(*, event_ids: Iterable[int], error: str) -> int:
    """Back in the queue, in place: the next flush after the outage sends them first."""
    return _release(event_ids, status=ProductionEvent.Status.PENDING, error=error)


@transaction.atomic
def events_mark_failed(*, event_ids: Iterable[int], error: str) -> int:
    return _release(event_ids, status=ProductionEvent.Status.FAILED, error=error)


@transaction.atomic
def events_retry_failed(*, event_ids: Iterable[int] | None = None) -> int:
    """Put failed events back in the queue (the admin's retry action)."""
    rows = ProductionEvent.objects.filter(status=ProductionEvent.Status.FAILED)
    if event_ids is not None:
        rows = rows.filter(pk__in=list(event_ids))
    count = rows.update(status=ProductionEvent.Status.PENDING)
    transaction.on_commit(broadcast.ledger_changed, robust=True)
    return count


def _send_batch(client: ConvexLedger, batch: list[ProductionEvent], result: FlushResult) -> None:
    try:
        for event in batch:
            if event.type in SESSION_EVENT_TYPES and event.session_id:
                client.upsert_session(_session_document(event))
        answer = client.append_events([_document(event) for event in batch])
    except SyncError as exc:
        if not exc.permanent:
            result.retrying += events_mark_retry(event_ids=[e.pk for e in batch], error=str(exc))
            result.errors.append(str(exc))
            result.outage_until = _outage_record(str(exc))
            return
        if len(batch) > 1:
            # One bad event must not hold back its neighbours: find it by sending alone. If
            # Convex goes away meanwhile, the rest goes back in place, still in order.
            for i, event in enumerate(batch):
                _send_batch(client, [event], result)
                if result.retrying:
                    rest = [e.pk for e in batch[i + 1 :]]
                    result.retrying += events_mark_retry(event_ids=rest, error=result.errors[-1])
                    return
            return
        result.failed += events_mark_failed(event_ids=[batch[0].pk], error=str(exc))
        result.errors.append(str(exc))
        logger.error("ledger event %s refused by Convex: %s", batch[0].event_id, exc)
        return
    result.sent += events_mark_synced(event_ids=[e.pk for e in batch])
    result.inserted += answer["inserted"]
    result.duplicates += answer["duplicates"]


def outbox_flush(*, max_batches: int = 50, client: ConvexLedger | None = None) -> FlushResult:
    """Send due events in batches until none are left (or `max_batches`)."""
    result = FlushResult()
    if client is None and not configured():
        return result
    until = _outage_until()
    if until > time.time():
        result.outage_until = until
        return result
    lock = _flush_lock()
    if lock is None:
        result.busy = True
        return result
    try:
        client = client or ConvexLedger()
        for _ in range(max_batches):
            batch = outbox_claim(limit=BATCH_SIZE)
            if not batch:
                break
            result.batches += 1
            _send_batch(client, batch, result)
            if result.retrying:
                break  # Convex is away: the outage backoff decides when to try again
            lock.renew()
        if result.batches and not result.retrying:
            _outage_clear()
    finally:
        lock.release()
    if result.batches:
        broadcast.ledger_changed()
    return result


FLUSH_LOCK_KEY = "ledger:flush-lock"


@dataclass
class _FlushLock:
    token: str
    shared: bool

    def renew(self) -> None:
        if self.shared:
            with contextlib.suppress(Exception):
                cache.touch(FLUSH_LOCK_KEY, int(CLAIM_LEASE_S))

    def release(self) -> None:
        if self.shared:
            with contextlib.suppress(Exception):
                if cache.get(FLUSH_LOCK_KEY) == self.token:
                    cache.delete(FLUSH_LOCK_KEY)


def _flush_lock() -> _FlushLock | None:
    """One flush at a time across workers: two flushes would hand out consecutive batches of
    one stream, and the second could land first. The lock has a lease, renewed per batch, so
    a worker that dies holding it blocks the others for a minute at most."""
    token = uuid.uuid4().hex
    try:
        taken = cache.add(FLUSH_LOCK_KEY, token, int(CLAIM_LEASE_S))
    except Exception:
        # No shared cache (Redis away): send anyway; Convex drops duplicates, and order
        # within a stream is restored by seq in its timeline.
        return _FlushLock(token=token, shared=False)
    return _FlushLock(token=token, shared=True) if taken else None


def wake() -> None:
    """Ask for a flush soon. Registered on commit by `ledger.record`."""
    if not configured():
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # Embedded default: the server's ticker flushes; never on the request's thread.
        FLUSH_WANTED.set()
        return
    delay = settings.LEDGER_FLUSH_DELAY_S
    # One queued flush covers every event committed before it runs; the periodic sweep
    # catches any that slip between two.
    try:
        if cache.add("ledger:flush-queued", 1, timeout=max(1, round(delay))):
            from ledger.tasks import outbox_flush_task

            outbox_flush_task.apply_async(countdown=delay)
    except Exception as exc:
        # Redis (the cache and the broker) away: the events are committed and wait in the
        # outbox; the periodic sweep sends them once it is back. Nothing to raise to a page.
        logger.warning("could not queue a ledger flush (%s); the sweep will send the events", exc)
