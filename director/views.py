"""Operator pages and htmx actions. Thin: parse, select, call one service, render."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from devices import services as device_services
from director import selectors
from director.pairing import pairing_view


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    return render(request, "director/session_list.html", {"sessions": selectors.session_list()})


@require_GET
def registry(request: HttpRequest) -> HttpResponse:
    devices = selectors.registry_devices()
    context = {
        "devices": devices,
        "summary": selectors.registry_summary(devices),
        "pairing": pairing_view(base_url=_base_url(request)),
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
    response["HX-Trigger"] = json.dumps(
        {"toast": {"level": "info", "message": "New pairing code issued. Old code is void."}}
    )
    return response
