"""Operator pages and htmx actions. Thin: parse, select, call one service, render."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from devices import services as device_services
from director import selectors, services
from director.forms import SessionForm
from director.models import PhotoshootSession
from director.pairing import pairing_view
from ledger.selectors import ledger_status


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def _toast(response: HttpResponse, message: str, level: str = "info") -> HttpResponse:
    response["HX-Trigger"] = json.dumps({"toast": {"level": level, "message": message}})
    return response


@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "director/session_list.html",
        {"sessions": selectors.session_list(), "form": SessionForm()},
    )


@require_POST
def session_create(request: HttpRequest) -> HttpResponse:
    form = SessionForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "director/session_list.html",
            {"sessions": selectors.session_list(), "form": form},
            status=400,
        )
    services.session_create(operator=request.user, **form.cleaned_data)  # type: ignore[arg-type]
    return redirect("director:session_list")


def _session_transition(request: HttpRequest, session_id: str, action: str) -> HttpResponse:
    session = get_object_or_404(PhotoshootSession, pk=session_id)
    try:
        if action == "start":
            session = services.session_start(session_id=session.pk)
        else:
            session = services.session_stop(session_id=session.pk)
    except services.SessionRefused as exc:
        response = HttpResponse(status=409)
        return _toast(response, str(exc), "error")
    response = render(request, "director/partials/session_row.html", {"s": session})
    verb = "is live" if action == "start" else "has ended"
    return _toast(response, f"“{session.name}” {verb}.")


@require_POST
def session_start(request: HttpRequest, session_id: str) -> HttpResponse:
    return _session_transition(request, session_id, "start")


@require_POST
def session_stop(request: HttpRequest, session_id: str) -> HttpResponse:
    return _session_transition(request, session_id, "stop")


@require_GET
def registry(request: HttpRequest) -> HttpResponse:
    devices = selectors.registry_devices()
    context = {
        "devices": devices,
        "summary": selectors.registry_summary(devices),
        "pairing": pairing_view(base_url=_base_url(request)),
        "ledger": ledger_status(),
    }
    if request.htmx:
        return render(request, "director/partials/device_cards.html", context)
    return render(request, "director/registry.html", context)


@require_POST
def pairing_rotate(request: HttpRequest) -> HttpResponse:
    device_services.pairing_code_rotate(reason="operator")
    response = render(
        request,
        "director/partials/pairing_panel.html",
        {"pairing": pairing_view(base_url=_base_url(request))},
    )
    return _toast(response, "New pairing code issued. Old code is void.")
