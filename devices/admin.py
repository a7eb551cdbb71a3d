from __future__ import annotations

from django.contrib import admin

from devices.models import Device, PairingCode, PairingFailure
from devices.services import PRESENCE_FIELDS, STATE_FIELDS


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "model",
        "status",
        "battery_percent",
        "thermal",
        "lens",
        "zoom",
        "last_seen_at",
    ]
    list_filter = ["status", "kind", "thermal", "charging"]
    search_fields = ["name", "install_id", "model", "id"]
    # State comes from the device and the services; the admin reads it.
    readonly_fields = [
        "id",
        "install_id",
        "registered_at",
        "lenses",
        *PRESENCE_FIELDS,
        *STATE_FIELDS,
    ]
    fields = ["name", "kind", "model", "os_version", "app_version", *readonly_fields]

    def has_add_permission(self, request: object) -> bool:
        return False  # devices join by pairing, through the API


@admin.register(PairingCode)
class PairingCodeAdmin(admin.ModelAdmin):
    list_display = ["created_at", "expires_at", "retired_at"]
    exclude = ["code"]
    readonly_fields = ["created_at", "expires_at", "retired_at"]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(PairingFailure)
class PairingFailureAdmin(admin.ModelAdmin):
    list_display = ["address", "at"]
    list_filter = ["at"]
    search_fields = ["address"]
