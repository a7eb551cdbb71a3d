"""The Live Director's Preflight page (staff only): start a run, watch its results arrive
section by section (the panel polls every second while the run is open), read the verdict.
Thin: check staff, call one service, render."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from director.preflight.selectors import (
    preflight_latest,
    preflight_panel_context,
    preflight_staff_check,
)
from director.preflight.services import preflight_request

PANEL = "director/partials/preflight_panel.html"
# Where the run's job reaches this deployment; by default the address the page was asked on.
URL_ENV = "MOTIONMIX_PREFLIGHT_URL"


@require_GET
def preflight_page(request: HttpRequest) -> HttpResponse:
    preflight_staff_check(request)
    return render(request, "director/preflight.html", preflight_panel_context(preflight_latest()))


@require_GET
def preflight_panel(request: HttpRequest) -> HttpResponse:
    preflight_staff_check(request)
    return render(request, PANEL, preflight_panel_context(preflight_latest()))


@require_POST
def preflight_start(request: HttpRequest) -> HttpResponse:
    preflight_staff_check(request)
    url = os.environ.get(URL_ENV) or request.build_absolute_uri("/")
    run = preflight_request(url=url, requested_by=request.user.get_username())
    return render(request, PANEL, preflight_panel_context(run))
