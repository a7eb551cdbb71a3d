from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ledger import selectors
from ledger.models import ProductionEvent
from ledger.sync import events_retry_failed


@admin.register(ProductionEvent)
class ProductionEventAdmin(admin.ModelAdmin):
    list_display = [
        "occurred_at",
        "type",
        "stream",
        "seq",
        "device_id",
        "status",
        "attempts",
        "last_error",
    ]
    list_filter = ["status", "type", "occurred_at"]
    search_fields = ["event_id", "session_id", "device_id", "type", "stream"]
    date_hierarchy = "occurred_at"
    ordering = ["-occurred_at"]
    readonly_fields = [f.name for f in ProductionEvent._meta.get_fields()]
    actions = ["retry_failed"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The ledger is append-only through services; nobody types events in by hand.
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):  # type: ignore[no-untyped-def]
        status = selectors.ledger_status()
        if status.state != "synced":
            messages.info(
                request,
                f"Ledger: {status.waiting} waiting, {status.failed} failed"
                + ("" if status.configured else " (CONVEX_URL is not set)")
                + (f". Last error: {status.last_error}" if status.last_error else "."),
            )
        return super().changelist_view(request, extra_context)

    @admin.action(description="Retry the selected failed events")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[ProductionEvent]) -> None:
        count = events_retry_failed(event_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} failed event(s) queued again.", messages.SUCCESS)
