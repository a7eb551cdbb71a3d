"""Reads for the export panel and the download."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.shortcuts import get_object_or_404

from director.models import PhotoshootSession, SessionExport


def export_latest(*, session_id: UUID) -> SessionExport | None:
    return SessionExport.objects.filter(session_id=session_id).order_by("-requested_at").first()


def export_get_done(*, export_id: UUID) -> SessionExport:
    """A finished export, or 404."""
    return get_object_or_404(
        SessionExport.objects.select_related("session"),
        pk=export_id,
        state=SessionExport.State.DONE,
    )


def export_panel_context(*, session: PhotoshootSession) -> dict[str, Any]:
    return {"session": session, "export": export_latest(session_id=session.pk)}
