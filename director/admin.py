from __future__ import annotations

from django.contrib import admin

from devices.admin import ReadOnlyAdmin
from director.models import Still


@admin.register(Still)
class StillAdmin(ReadOnlyAdmin):
    list_display = ["captured_at", "device", "session", "seq", "lens", "zoom", "size_bytes"]
    list_filter = ["lens", "content_type"]
    search_fields = ["id", "sha256", "device__name", "file"]
    list_select_related = ["device", "session"]
