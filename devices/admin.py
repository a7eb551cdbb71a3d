from __future__ import annotations

from django.contrib import admin

from devices.models import ClockSample, Device, DeviceCommand, PairingCode, PairingFailure
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
        "azimuth_deg",
        "distance_m",
        "height_m",
        "placement_source",
        "placed_at",
        "tally",
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


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the services write: the admin shows them and changes nothing."""

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(DeviceCommand)
class DeviceCommandAdmin(ReadOnlyAdmin):
    list_display = ["issued_at", "device", "type", "state", "delivered_via", "expires_at"]
    list_filter = ["state", "type", "delivered_via"]
    search_fields = ["id", "device__name", "batch"]
    list_select_related = ["device"]


@admin.register(ClockSample)
class ClockSampleAdmin(ReadOnlyAdmin):
    list_display = ["at", "device", "offset_s", "delay_s"]
    list_select_related = ["device"]
