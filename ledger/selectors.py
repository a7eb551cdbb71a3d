from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from ledger.models import ProductionEvent


def event_list_for_device(*, device_id: UUID) -> QuerySet[ProductionEvent]:
    return ProductionEvent.objects.filter(device_id=device_id).order_by("occurred_at", "seq")


def event_unsynced_count() -> int:
    return ProductionEvent.objects.exclude(status=ProductionEvent.Status.SYNCED).count()
