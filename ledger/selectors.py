from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, QuerySet

from ledger.models import ProductionEvent


@dataclass(frozen=True)
class LedgerStatus:
    """What the operator's chip shows: is the production ledger keeping up?"""

    configured: bool
    waiting: int
    failed: int
    last_error: str

    @property
    def state(self) -> str:
        if self.failed:
            return "failing"
        if not self.configured:
            return "offline"
        return "waiting" if self.waiting else "synced"


def ledger_status() -> LedgerStatus:
    from ledger.convex import configured

    counts = dict(
        ProductionEvent.objects.exclude(status=ProductionEvent.Status.SYNCED)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    failed = counts.get(ProductionEvent.Status.FAILED, 0)
    waiting = sum(counts.values()) - failed
    last_error = ""
    if failed or waiting:
        row = (
            ProductionEvent.objects.exclude(last_error="")
            .exclude(status=ProductionEvent.Status.SYNCED)
            .order_by("-pk")
            .values_list("last_error", flat=True)
            .first()
        )
        last_error = row or ""
    return LedgerStatus(
        configured=configured(), waiting=waiting, failed=failed, last_error=last_error
    )


def event_list_for_stream(*, stream: str) -> QuerySet[ProductionEvent]:
    return ProductionEvent.objects.filter(stream=stream).order_by("seq")


def event_latest(*, stream: str, type: str) -> ProductionEvent | None:
    """The newest event of one type in a stream."""
    return ProductionEvent.objects.filter(stream=stream, type=type).order_by("-seq").first()
