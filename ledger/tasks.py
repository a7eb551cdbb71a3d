from __future__ import annotations

from celery import shared_task

from ledger.sync import outbox_flush


@shared_task(name="ledger.tasks.outbox_flush_task")
def outbox_flush_task() -> dict[str, int]:
    """Send what is due to Convex. Retries are per row (backoff), not per task."""
    result = outbox_flush()
    return {
        "sent": result.sent,
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "retrying": result.retrying,
        "failed": result.failed,
    }
