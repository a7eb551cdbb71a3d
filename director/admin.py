from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from devices.admin import ReadOnlyAdmin
from director.models import ServiceToken, Still
from director.service_tokens import service_token_create, service_token_revoke


@admin.register(Still)
class StillAdmin(ReadOnlyAdmin):
    list_display = ["captured_at", "device", "session", "seq", "lens", "zoom", "size_bytes"]
    list_filter = ["lens", "content_type"]
    search_fields = ["id", "sha256", "device__name", "file"]
    list_select_related = ["device", "session"]


class ServiceTokenAddForm(forms.ModelForm):
    class Meta:
        model = ServiceToken
        fields = ["name"]


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    """Adding a token names the service; the plain token is shown once, in a message. A token
    is revoked, not deleted: proposals keep naming it."""

    list_display = ["name", "prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    list_select_related = ["created_by"]
    actions = ["revoke"]
    shown = ["name", "prefix", "token_hash", "created_at", "created_by", "last_used_at"]

    def get_fields(self, request: HttpRequest, obj: ServiceToken | None = None) -> list[str]:
        return ["name"] if obj is None else [*self.shown, "revoked_at"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: ServiceToken | None = None
    ) -> list[str]:
        return [] if obj is None else [*self.shown, "revoked_at"]

    def get_form(
        self,
        request: HttpRequest,
        obj: ServiceToken | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        if obj is None:
            kwargs["form"] = ServiceTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: ServiceToken, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            return  # nothing about a token changes but its revocation, an action
        created, plain = service_token_create(
            name=form.cleaned_data["name"], created_by=request.user
        )
        # The admin goes on with `obj` (the log entry, the redirect): make it the stored row.
        for field in ServiceToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db
        messages.warning(
            request,
            f"The token for “{created.name}” is {plain} — copy it now; it is not shown again.",
        )

    def has_delete_permission(self, request: HttpRequest, obj: ServiceToken | None = None) -> bool:
        return False

    @admin.action(description="Revoke the selected service tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ServiceToken]) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            service_token_revoke(token_id=token.pk)
            self.log_change(request, token, "Revoked")
            revoked += 1
        self.message_user(
            request,
            f"Revoked {revoked} service token(s); their services now get 403.",
            messages.SUCCESS,
        )
