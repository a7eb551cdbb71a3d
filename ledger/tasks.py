from __future__ import annotations

from celery import shared_task

from ledger.sync import outbox_flush


@shared_task(name="ledger.tasks.outbox_flush_task")
def outbox_flush_task() -> dict[str, int]:
    """Send what is due to Convex. After a transient error the whole sync backs off (see
    ledger.sync.OUTAGE_KEY); the next wake or sweep after that tries again."""
    result = outbox_flush()
    return {
        "sent": result.sent,
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "retrying": result.retrying,
        "failed": result.failed,
    }
