from __future__ import annotations

from django.contrib import admin

from ledger.models import ProductionEvent


@admin.register(ProductionEvent)
class ProductionEventAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "type", "stream", "seq", "device_id", "status", "attempts"]
    list_filter = ["status", "type", "occurred_at"]
    search_fields = ["event_id", "session_id", "device_id", "type"]
    date_hierarchy = "occurred_at"
    ordering = ["-occurred_at"]
    readonly_fields = [f.name for f in ProductionEvent._meta.get_fields()]

    def has_add_permission(self, request: object) -> bool:
        # The ledger is append-only through services; nobody types events in by hand.
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
