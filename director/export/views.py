"""The session page's export panel and the zip download. Thin: parse, select, one service,
render; a refusal is a toast."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods

from director import selectors
from director.export.jobs import zip_name
from director.export.selectors import export_get_done, export_panel_context
from director.export.services import ExportRequestRefused, session_export_request
from director.views import _refused


def _panel(request: HttpRequest, session_id: UUID) -> HttpResponse:
    session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
    html = render_to_string(
        "director/partials/export_panel.html", export_panel_context(session=session), request
    )
    return HttpResponse(html)


@require_http_methods(["GET", "POST"])
def session_export(request: HttpRequest, session_id: UUID) -> HttpResponse:
    """GET: the panel (polled while an export runs). POST: export the session as a zip."""
    if request.method == "POST":
        session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
        try:
            session_export_request(
                session_id=session.pk,
                requested_by=request.user.get_username(),
                copy_stills=request.POST.get("copy_stills") == "1",
            )
        except ExportRequestRefused as exc:
            return _refused(exc)
    return _panel(request, session_id)


@require_GET
def export_download(request: HttpRequest, export_id: UUID) -> HttpResponse:
    export = export_get_done(export_id=export_id)
    # An export is its session's: whoever may not see the session gets the same 404.
    selectors.session_get_for_operator(user=request.user, session_id=export.session_id)
    path = Path(settings.MEDIA_ROOT) / export.file
    if not path.is_file():
        return HttpResponse(
            "This export's file is gone from the server; export the session again.",
            status=410,
            content_type="text/plain; charset=utf-8",
        )
    response = FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=zip_name(export),
        content_type="application/zip",
    )
    response["X-Content-SHA256"] = export.sha256
    return response
