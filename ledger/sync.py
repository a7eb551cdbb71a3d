"""Sending the outbox to Convex: claim, send in seq order, mark. Nothing is lost or doubled.

A flush claims due rows in a short transaction (status `sending`, `claimed_at`), sends them
outside any transaction, then marks them in another short one. So no database lock is held
across the network call (on SQLite that lock would stop every other writer). A flush that dies
after claiming leaves rows `sending`; once their lease runs out the next flush takes them back
and sends them again, and Convex skips event ids it already holds: at least once on the wire,
exactly once in the table.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from ledger import broadcast
from ledger.convex import ConvexLedger, SyncError, configured
from ledger.models import ProductionEvent

logger = logging.getLogger(__name__)

BATCH_SIZE = 100  # production:appendEvents takes at most 100
CLAIM_LEASE_S = 60.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
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


def backoff_s(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** max(0, attempts - 1)))
    return ceiling * (0.5 + 0.5 * rng())


def _due() -> Q:
    now = timezone.now()
    lease_over = now - timedelta(seconds=CLAIM_LEASE_S)
    pending_due = Q(status=ProductionEvent.Status.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    abandoned = Q(status=ProductionEvent.Status.SENDING, claimed_at__lt=lease_over)
    return pending_due | abandoned


def outbox_claim(*, limit: int = BATCH_SIZE) -> list[ProductionEvent]:
    """Claim up to `limit` due rows, oldest stream position first. Concurrent flushes on
    PostgreSQL skip each other's rows (SKIP LOCKED); SQLite runs one writer at a time."""
    with transaction.atomic():
        rows = ProductionEvent.objects.filter(_due()).order_by("occurred_at", "stream", "seq")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
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
        next_attempt_at=None,
    )
    return count


@transaction.atomic
def events_mark_retry(*, event_ids: Iterable[int], error: str) -> int:
    rows = list(
        ProductionEvent.objects.select_for_update().filter(
            pk__in=list(event_ids), status=ProductionEvent.Status.SENDING
        )
    )
    now = timezone.now()
    for row in rows:
        row.attempts += 1
        row.status = ProductionEvent.Status.PENDING
        row.last_error = error[:2000]
        row.claimed_at = None
        row.next_attempt_at = now + timedelta(seconds=backoff_s(row.attempts))
    ProductionEvent.objects.bulk_update(
        rows, ["attempts", "status", "last_error", "claimed_at", "next_attempt_at"]
    )
    return len(rows)


@transaction.atomic
def events_mark_failed(*, event_ids: Iterable[int], error: str) -> int:
    rows = list(
        ProductionEvent.objects.select_for_update().filter(
            pk__in=list(event_ids), status=ProductionEvent.Status.SENDING
        )
    )
    for row in rows:
        row.attempts += 1
        row.status = ProductionEvent.Status.FAILED
        row.last_error = error[:2000]
        row.claimed_at = None
    ProductionEvent.objects.bulk_update(rows, ["attempts", "status", "last_error", "claimed_at"])
    return len(rows)


@transaction.atomic
def events_retry_failed(*, event_ids: Iterable[int] | None = None) -> int:
    """Put failed events back in the queue (the admin's retry action)."""
    rows = ProductionEvent.objects.filter(status=ProductionEvent.Status.FAILED)
    if event_ids is not None:
        rows = rows.filter(pk__in=list(event_ids))
    count = rows.update(status=ProductionEvent.Status.PENDING, next_attempt_at=None)
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
            return
        if len(batch) > 1:
            # One bad event must not hold back its neighbours: find it by sending alone.
            for event in batch:
                _send_batch(client, [event], result)
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
    client = client or ConvexLedger()
    for _ in range(max_batches):
        batch = outbox_claim(limit=BATCH_SIZE)
        if not batch:
            break
        result.batches += 1
        _send_batch(client, batch, result)
        if result.retrying:
            break  # Convex is struggling: back off instead of claiming more
    if result.batches:
        broadcast.ledger_changed()
    return result


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
    if cache.add("ledger:flush-queued", 1, timeout=max(1, round(delay))):
        from ledger.tasks import outbox_flush_task

        outbox_flush_task.apply_async(countdown=delay)
