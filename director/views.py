"""Operator pages and htmx actions. Thin: parse, select, call one service, render."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from devices import services as device_services
from devices.models import Device
from director import dom, selectors, services, session_fragments
from director.coverage_map import build_coverage_map
from director.forms import FlipForm, SessionForm, ZoomForm
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
        {"sessions": selectors.session_list(user=request.user), "form": SessionForm()},
    )


@require_POST
def session_create(request: HttpRequest) -> HttpResponse:
    form = SessionForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "director/session_list.html",
            {"sessions": selectors.session_list(user=request.user), "form": form},
            status=400,
        )
    services.session_create(operator=request.user, **form.cleaned_data)  # type: ignore[arg-type]
    return redirect("director:session_list")


def _session_transition(request: HttpRequest, session_id: str, action: str) -> HttpResponse:
    session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
    try:
        if action == "start":
            session = services.session_start(session_id=session.pk)
        else:
            session = services.session_stop(session_id=session.pk)
    except services.SessionRefused as exc:
        response = HttpResponse(status=409)
        return _toast(response, str(exc), "error")
    if request.htmx and request.htmx.target == dom.SESSION_HEAD:
        # The session's own page: its head changes; the socket pushes the rest.
        response = HttpResponse(session_fragments.part(session=session, name="head"))
    else:
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
        "coverage": build_coverage_map(devices),
        "summary": selectors.registry_summary(devices),
        "pairing": pairing_view(base_url=_base_url(request)),
        "ledger": ledger_status(),
    }
    if request.htmx:
        return render(request, "director/partials/device_cards.html", context)
    return render(request, "director/registry.html", context)


@require_POST
def pairing_rotate(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        # Rotating voids the code every camera pairs with: a studio admin's call.
        return _toast(
            HttpResponse(status=403),
            "Only an admin (staff) can issue a new pairing code; ask one to rotate it.",
            "error",
        )
    device_services.pairing_code_rotate(reason="operator")
    response = render(
        request,
        "director/partials/pairing_panel.html",
        {"pairing": pairing_view(base_url=_base_url(request))},
    )
    return _toast(response, "New pairing code issued. Old code is void.")


# --- Device control: each posts one command; the card updates when the device reports back.


def _card(request: HttpRequest, device_id: str) -> HttpResponse:
    device = selectors.card_devices([device_id])[0]
    return render(request, "director/partials/device_card.html", {"device": device})


def _refused(message: object) -> HttpResponse:
    return _toast(HttpResponse(status=409), str(message), "error")


def _command(
    request: HttpRequest, device: Device, type: str, args: dict[str, object]
) -> HttpResponse:
    """Send one command; answer the card (showing it pending), or the refusal as a toast."""
    try:
        device_services.command_issue(
            device_id=device.pk, type=type, args=args, issued_by=request.user.get_username()
        )
    except device_services.CommandRefused as exc:
        return _refused(exc)
    return _card(request, str(device.pk))


@require_POST
def device_lens(request: HttpRequest, device_id: str) -> HttpResponse:
    device = get_object_or_404(Device, pk=device_id)
    form = ZoomForm(request.POST)
    if not form.is_valid():
        return _toast(HttpResponse(status=400), form.error_text(), "error")
    return _command(request, device, "set_lens", {"zoom": form.cleaned_data["zoom"]})


@require_POST
def device_flip(request: HttpRequest, device_id: str) -> HttpResponse:
    device = get_object_or_404(Device, pk=device_id)
    form = FlipForm(request.POST)
    if not form.is_valid():
        return _toast(HttpResponse(status=400), form.error_text(), "error")
    return _command(request, device, "set_flip", form.flip_for(device))


@require_POST
def device_capture(request: HttpRequest, device_id: str) -> HttpResponse:
    device = get_object_or_404(Device, pk=device_id)
    session = selectors.live_session_for_device(device.pk)
    try:
        device_services.commands_issue_capture(
            device_ids=[device.pk],
            issued_by=request.user.get_username(),
            session_id=session.pk if session else None,
            synchronized=False,
        )
    except device_services.CommandRefused as exc:
        return _refused(exc)
    return _toast(_card(request, device_id), f"Capturing on {device.name}…")


@require_POST
def device_hero(request: HttpRequest, device_id: str) -> HttpResponse:
    device = get_object_or_404(Device, pk=device_id)
    session = selectors.live_session_for_device(device.pk)
    if session is None:
        return _refused(f"{device.name} is not in a live session; start one to put it on air.")
    try:
        services.session_hero_switch(
            session_id=session.pk, device_id=device.pk, switched_by=request.user.get_username()
        )
    except services.SessionRefused as exc:
        return _refused(exc)
    return _toast(_card(request, device_id), f"{device.name} is on air.")


@require_POST
def capture_all(request: HttpRequest) -> HttpResponse:
    device_ids, session = selectors.capture_targets()
    try:
        commands = device_services.commands_issue_capture(
            device_ids=device_ids,
            issued_by=request.user.get_username(),
            session_id=session.pk if session else None,
        )
    except device_services.CommandRefused as exc:
        return _refused(exc)
    lead_ms = (commands[0].fire_at - commands[0].issued_at).total_seconds() * 1000  # type: ignore[operator]
    return _toast(
        HttpResponse(),
        f"Capture all: {len(commands)} cameras fire together in {lead_ms:.0f} ms.",
    )
